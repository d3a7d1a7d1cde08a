"""Model kinds: the one place that maps a kind to its preset class, its model class and what it needs.

    cpu     CpuPreset     smartprice.cpu.runtime.CpuStack   base install (nn extra for the "emb" view)
    fusion  FusionPreset  smartprice.fusion.FusionRegressor nn extra
    blend   BlendPreset   smartprice.blend.Blend            nn extra

Everything above this module (predictor, blend, cli, explain, report, serve, cv) asks the registry
instead of probing attributes: `kind_of`, `needs_nn`, `model_class`, `preset_from_dict`. Model
classes are imported on first use, so the base install never imports torch; whether a preset needs
the nn extra is one rule (`needs_nn`), and the message with the pip command is written once (`model_class`).
Adding a kind: a preset class in presets.py, a class that keeps `PriceModel`, one `Kind` line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sharedcore.about import NN_INSTALL

from .errors import MissingExtraError, ModelDirError
from .presets import BlendPreset, CpuPreset, FusionPreset, saved_preset


@runtime_checkable
class Explainer(Protocol):
    """A model that shows its work: the CPU stack (itself, or the CPU part of a blend)."""

    def training_listings(self) -> tuple[list[str], np.ndarray] | None:
        """Item names and prices of the training rows (None where the directory did not keep them)."""

    def neighbours(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows (n, k), cosine (n, k)) of the nearest training listings; -1 where fewer match."""

    def contributions(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """log1p(price) (n,), per-feature contributions (n, features + 1, bias last) and their names."""

    def feature_importance(self) -> dict[str, float]:
        """Total gain per feature, largest first."""


class PriceModel(Protocol):
    """What `PricePredictor` needs of every kind's model class (all on log1p(price))."""

    preset: Any

    def fit(self, texts: Sequence[str], y: np.ndarray, work_dir: Path | None = None, resume: bool = False,
            progress: Callable[[str, int, int], Any] | None = None) -> PriceModel:
        """Fit on listing texts and log1p(price); neural kinds checkpoint into work_dir; `progress(stage, done, total)`
        is called as stages finish by kinds that have stages (the CPU model)."""

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """log1p(price) of every text, in order."""

    def save(self, directory: Path) -> dict[str, Any]:
        """Write artefacts into `directory`; return the JSON-ready state for config.json."""

    @classmethod
    def load(cls, preset: Any, directory: Path, state: dict[str, Any]) -> PriceModel:
        """Read what `save` wrote; a damaged or foreign directory is a ModelDirError."""

    def calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Rows the model was not fitted on, for its price ranges: predicted and true log1p(price), difficulty or None."""

    def predict_difficulty(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """log1p(price) of every text (as `predict`) and each one's difficulty (None: one range width per price band)."""

    def explainer(self) -> Explainer | None:
        """The part that explains this model's prices (neighbours, contributions), or None."""

    def expect_rows(self, rows: int) -> None:
        """A hint before predicting about `rows` listings (start worker processes, ...); may do nothing."""

    def validation(self) -> dict[str, Any] | None:
        """Figures measured on held-out training rows while fitting (shown by `serve`'s /model), or None."""


NN_CHECK = ("torch", "transformers")  # imported (not just found) to check the nn extra: a broken install counts as missing


def _missing(modules: Sequence[str]) -> list[str]:
    """The modules that fail to import."""
    missing = []
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    return missing


@dataclass(frozen=True)
class Kind:
    """One model kind of the registry."""

    name: str
    preset_class: type
    model: str                      # "module:Class", imported by model_class() on first use
    needs_nn: bool                  # torch + transformers (the nn extra), whatever the preset's fields
    explains_prices: bool           # per-feature contributions of its own prices


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("cpu", CpuPreset, "smartprice.cpu.runtime:CpuStack", needs_nn=False, explains_prices=True),
    Kind("fusion", FusionPreset, "smartprice.fusion:FusionRegressor", needs_nn=True, explains_prices=False),
    Kind("blend", BlendPreset, "smartprice.blend:Blend", needs_nn=True, explains_prices=False),
)}


def kind_of(preset: Any) -> Kind:
    """The registry entry of a preset (by its `kind` field)."""
    name = getattr(preset, "kind", None)
    if name not in KINDS:
        raise ModelDirError(f"unknown model kind {name!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[name]


def needs_nn(preset: Any) -> bool:
    """Whether a preset needs the nn extra (torch): its kind does, or a CPU preset embeds listings ("emb" view)."""
    return kind_of(preset).needs_nn or "emb" in getattr(preset, "knn_views", ())


def model_class(preset: Any) -> type[PriceModel]:
    """The model class that fits `preset`, imported now; a missing nn extra is a one-line MissingExtraError."""
    kind = kind_of(preset)
    if needs_nn(preset):
        missing = _missing(NN_CHECK)
        if missing:
            what = f"{kind.name} models need" if kind.needs_nn else "the 'emb' neighbour view needs"
            raise MissingExtraError(f"{what} the nn extra ({', '.join(missing)} not installed): " + NN_INSTALL)
    module, _, name = kind.model.partition(":")
    return getattr(importlib.import_module(module), name)


def preset_from_dict(data: Mapping[str, Any]) -> Any:
    """Rebuild a preset saved with a model: its kind picks the class; a wrong kind or field is a ModelDirError."""
    name = data.get("kind")
    if name not in KINDS:
        raise ModelDirError(f"unknown model kind {name!r} (known: {', '.join(sorted(KINDS))})")
    return saved_preset(KINDS[name].preset_class, data)
