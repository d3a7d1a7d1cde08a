"""Moved to `sharedcore.overrides`; these names stay importable from here for modules not yet updated."""

from sharedcore.overrides import apply_overrides, parse_sets

__all__ = ["apply_overrides", "parse_sets"]
