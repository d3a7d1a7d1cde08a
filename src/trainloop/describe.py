"""Moved to `sharedcore.describe`; these names stay importable from here for modules not yet updated."""

from sharedcore.describe import NEEDS_BASE, NEEDS_NN, render_preset, render_presets

__all__ = ["NEEDS_BASE", "NEEDS_NN", "render_preset", "render_presets"]
