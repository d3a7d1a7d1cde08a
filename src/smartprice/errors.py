"""Mistakes a user can fix, as one family of exceptions; anything else raised is a bug of ours.

The CLI prints a `UserError` (sharedcore.errors, shared with mu) as one line and exits 2, the HTTP API answers it with a 4xx JSON
message; every other exception is shown as a bug (a traceback, HTTP 500). Each subclass is also a
ValueError (and MissingExtraError a RuntimeError, as before), so older `except` clauses still match.
"""

from __future__ import annotations

from sharedcore.errors import SettingError as SettingsError  # a preset, --set or option that does not fit
from sharedcore.errors import UserError  # the base class, shared with mu

__all__ = ["CatalogError", "EncoderError", "MissingExtraError", "ModelDirError", "SettingsError", "UserError"]


class CatalogError(UserError):
    """A catalog file or frame the user must fix; the message names the file, row and column."""


class ModelDirError(UserError):
    """A model directory that cannot be loaded (missing, damaged, foreign, too old); the message says why."""


class EncoderError(UserError):
    """A transformer encoder that cannot be opened; the message lists the ways to fix it."""


class MissingExtraError(UserError, RuntimeError):
    """A feature whose optional dependencies are not installed; the message gives the pip command."""
