"""Training losses for the fusion models. The network predicts z = log1p(price).

SMAPE-type losses compare prices (expm1(z) vs price); L1 / Huber compare z with log1p(price),
which every top team of the challenge used (SMAPE as a loss was reported to train poorly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6  # keeps the SMAPE denominator away from zero
LOSSES = ("smape", "focal_smape", "l1", "huber")


def smape_terms(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row |p - t| / ((|t| + |p|) / 2 + eps): 0 .. 2."""
    return (pred - target).abs() / ((target.abs() + pred.abs()) / 2 + EPS)


def smape_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SMAPE in percent."""
    return smape_terms(pred, target).mean() * 100


def focal_smape_loss(pred: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """mean(smape_i * smape_i**gamma) * 100: large errors weigh more (focal SMAPE of the optimized preset)."""
    terms = smape_terms(pred, target)
    return (terms * terms.pow(gamma)).mean() * 100


def price_loss(z: torch.Tensor, price: torch.Tensor, name: str, gamma: float = 2.0, delta: float = 1.0) -> torch.Tensor:
    """The named loss of predictions z = log1p(price_hat) against prices; float32 whatever the autocast."""
    z, price = z.float(), price.float()
    if name == "smape":
        return smape_loss(torch.expm1(z.clamp(max=20)), price)
    if name == "focal_smape":
        return focal_smape_loss(torch.expm1(z.clamp(max=20)), price, gamma)
    if name == "l1":
        return F.l1_loss(z, torch.log1p(price))
    if name == "huber":
        return F.huber_loss(z, torch.log1p(price), delta=delta)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
