"""Moved to `sharedcore.errors`; these names stay importable from here for modules not yet updated."""

from sharedcore.errors import SettingError, UserError

__all__ = ["SettingError", "UserError"]
