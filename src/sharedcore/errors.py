"""The base class of mistakes a user can fix, shared by smartprice and mu (their CLIs show them in one line)."""

from __future__ import annotations


class UserError(ValueError):
    """A mistake the user can fix; the message says where (file, row, column, flag) and how."""


class SettingError(UserError):
    """A preset, `--set` override or option that does not exist or does not fit."""
