"""Moved to `sharedcore.about`; these names stay importable from here for modules not yet updated."""

from sharedcore.about import NN_INSTALL, __version__, newer_version_note

__all__ = ["NN_INSTALL", "__version__", "newer_version_note"]
