"""Blend: the CPU stack and a fusion preset averaged in log space, the weight fitted on held-out rows.

The fusion model holds out `valid_fraction` of train.csv to keep its best epoch; the CPU model is
fitted on the other rows and both are scored on those held-out rows (never on holdout.csv). The
weight minimising SMAPE there is kept, then the CPU model (seconds to fit) is refitted on all rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CatalogError
from .kinds import model_class, preset_from_dict
from .metrics import smape
from .presets import BlendPreset, inner_overrides, preset_to_dict, resolve_preset

log = logging.getLogger(__name__)
WEIGHTS = np.linspace(0.0, 1.0, 21)  # candidate weights of the fusion model, steps of 0.05


def _model(config: Any) -> Any:
    """An unfitted model of the kind `config` names."""
    return model_class(config)(config)


class Blend:
    """(1 - w) * cpu + w * fusion, on log1p(price)."""

    def __init__(self, preset: BlendPreset) -> None:
        self.preset = preset

    def fit(self, texts: Sequence[str], y: np.ndarray, work_dir: Path | None = None, resume: bool = False,
            progress: Any = None) -> Blend:
        """Fit the fusion model, the blend weight on its held-out rows, then the CPU model on all rows (`progress` unused)."""
        texts = list(texts)
        fusion_sets = {**inner_overrides(self.preset, "fusion"), "valid_fraction": self.preset.valid_fraction}
        fusion_config = resolve_preset(self.preset.fusion_preset, fusion_sets)
        self.fusion_ = _model(fusion_config).fit(texts, y, work_dir=work_dir, resume=resume)
        valid = self.fusion_.valid_rows_
        if len(valid) == 0:
            raise CatalogError("blend: too few training rows to hold any out for the blend weight")
        train = np.setdiff1d(np.arange(len(texts)), valid)
        cpu_config = resolve_preset(self.preset.cpu_preset, inner_overrides(self.preset, "cpu"))
        cpu_valid = _model(cpu_config).fit([texts[i] for i in train], y[train]).predict([texts[i] for i in valid])
        fusion_valid = self.fusion_.valid_pred_
        scores = [smape(np.expm1((1 - w) * cpu_valid + w * fusion_valid), np.expm1(y[valid])) for w in WEIGHTS]
        self.weight_ = float(WEIGHTS[int(np.argmin(scores))])
        self.valid_scores_ = {"cpu": scores[0], "fusion": scores[-1], "blend": min(scores), "rows": int(len(valid))}
        log.info("blend: fusion weight %.2f (held-out SMAPE cpu %.2f, fusion %.2f, blend %.2f)", self.weight_,
                 scores[0], scores[-1], min(scores))
        self.cpu_ = _model(cpu_config).fit(texts, y)
        blended = (1 - self.weight_) * cpu_valid + self.weight_ * fusion_valid
        self.calibration_ = (blended, y[valid], None)  # held-out rows of both parts: the price ranges' rows
        return self

    def calibration(self) -> tuple[np.ndarray, np.ndarray, None] | None:
        """The blend's held-out predicted and true log prices (just after fit), or None."""
        return getattr(self, "calibration_", None)

    def predict_difficulty(self, texts: Sequence[str]) -> tuple[np.ndarray, None]:
        """Predicted log1p(price) and no difficulty: a blend's ranges have one width per price band."""
        return self.predict(texts), None

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return (1 - self.weight_) * self.cpu_.predict(texts) + self.weight_ * self.fusion_.predict(texts)

    def explainer(self) -> Any:
        """The CPU part: its neighbours explain the blend (its contributions do not: the fusion part has none)."""
        return self.cpu_

    def expect_rows(self, rows: int) -> None:
        self.cpu_.expect_rows(rows)

    def validation(self) -> dict[str, Any]:
        """Held-out SMAPE of the CPU part, the fusion part and the blend, and the rows they were measured on."""
        return dict(self.valid_scores_)

    def save(self, directory: Path) -> dict[str, Any]:
        state: dict[str, Any] = {"weight": self.weight_, "valid_scores": self.valid_scores_}
        for name, model in (("cpu", self.cpu_), ("fusion", self.fusion_)):
            (directory / name).mkdir()
            state[name] = {"config": preset_to_dict(model.preset), "state": model.save(directory / name)}
        return state

    @classmethod
    def load(cls, preset: BlendPreset, directory: Path, state: dict[str, Any]) -> Blend:
        blend = cls(preset)
        blend.weight_, blend.valid_scores_ = state["weight"], state["valid_scores"]
        for name in ("cpu", "fusion"):
            config = preset_from_dict(state[name]["config"])
            setattr(blend, f"{name}_", model_class(config).load(config, directory / name, state[name]["state"]))
        return blend
