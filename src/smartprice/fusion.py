"""Transformer fusion models: pooled encoder output + scaled features -> MLP head -> log1p(price).

`FusionRegressor` has the same contract as the CPU model (fit(texts, y) / predict(texts) / save /
load) so `PricePredictor` serves both. Training runs on trainloop (Accelerate). Saved: the whole
network as safetensors, the encoder's config and tokenizer files, and JSON state: no pickles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .encoders import load_weights, open_encoder
from .errors import SettingsError
from .features import FeatureEncoder, parse_listings
from .losses import price_loss
from .metrics import smape
from .modelio import ModelDirError
from .presets import FusionPreset, preset_to_dict

log = logging.getLogger(__name__)
ENCODER_DIR = "encoder"  # encoder config + tokenizer files inside a model directory
WEIGHTS = "fusion.safetensors"


def head_layers(in_width: int, widths: Sequence[int], norm: str, activation: str, dropouts: Sequence[float]) -> nn.Sequential:
    """in -> [Linear, Norm, Act, Dropout] per width -> Linear(., 1): the four presets' heads."""
    if len(dropouts) != len(widths):
        raise SettingsError(f"head has {len(widths)} hidden layers but {len(dropouts)} dropouts")
    norms = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}
    acts = {"relu": nn.ReLU, "gelu": nn.GELU}
    if norm not in norms or activation not in acts:
        raise SettingsError(f"norm must be one of {sorted(norms)} and activation one of {sorted(acts)}")
    layers: list[nn.Module] = []
    for width, rate in zip(widths, dropouts):
        layers += [nn.Linear(in_width, width), norms[norm](width), acts[activation](), nn.Dropout(rate)]
        in_width = width
    layers.append(nn.Linear(in_width, 1))
    return nn.Sequential(*layers)


class FusionNet(nn.Module):
    """Encoder -> pooled (B, H); concat features (B, F) -> head -> (B,) predicted log1p(price)."""

    def __init__(self, encoder: nn.Module, n_features: int, preset: FusionPreset, pooling: str, y_mean: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        hidden = encoder.config.hidden_size
        self.head = head_layers(hidden + n_features, preset.head, preset.norm, preset.activation, preset.dropouts)
        nn.init.constant_(self.head[-1].bias, y_mean)  # start at the mean log price: early epochs stay sane

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)
        else:
            pooled = h[:, 0]  # (B, H): the CLS / <s> token
        x = torch.cat([pooled, features.to(pooled.dtype)], dim=-1)  # (B, H + F)
        return self.head(x).squeeze(-1)  # (B,)


class ListingSet(torch.utils.data.Dataset):
    """Token ids (tokenised once, unpadded), scaled features and prices of listings."""

    def __init__(self, ids: list[list[int]], features: np.ndarray, prices: np.ndarray | None) -> None:
        self.ids, self.features, self.prices = ids, features, prices

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[list[int], np.ndarray, float]:
        return self.ids[i], self.features[i], float(self.prices[i]) if self.prices is not None else 0.0


class Collate:
    """Pads a batch to its own longest listing (length grouping keeps that short)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[tuple[list[int], np.ndarray, float]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _, _ in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ids, _, _) in enumerate(items):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "features": torch.from_numpy(np.stack([f for _, f, _ in items])),
                "price": torch.tensor([p for _, _, p in items], dtype=torch.float32)}


def _pooling(preset: FusionPreset, location: str, config: Any) -> str:
    if preset.pooling in ("cls", "mean"):
        return preset.pooling
    sentence_model = Path(location, "modules.json").exists() or "sentence-transformers/" in location
    return "mean" if sentence_model else "cls"  # sentence-transformers were trained mean-pooled


ATTENTION = ("sdpa", "eager")  # attention kernels a preset may ask for (transformers' attn_implementation)


def load_encoder(source: str | Path | Any, attention: str) -> nn.Module:
    """AutoModel with `attention` kernels: pretrained from a directory or hub name, random from a config.

    transformers raises before reading any weights when an architecture lacks the kernel (DeBERTa-v2/v3
    has no SDPA path); the encoder is then built with eager attention and a log line says so.
    """
    from transformers import AutoModel

    if attention not in ATTENTION:
        raise SettingsError(f"attention must be one of {', '.join(ATTENTION)}, not {attention!r}")

    def build(implementation: str) -> nn.Module:
        if isinstance(source, (str, Path)):
            return AutoModel.from_pretrained(str(source), attn_implementation=implementation)
        return AutoModel.from_config(source, attn_implementation=implementation)

    try:
        return build(attention)
    except ValueError as error:
        if attention == "eager":
            raise
        log.info("%s attention is not available for this encoder (%s); using eager attention",
                 attention, str(error).split(".")[0])
        return build("eager")


def prepare_for_training(net: FusionNet, preset: FusionPreset) -> None:
    """Apply the preset's GPU training options to `net` in place, before the loop prepares it."""
    encoder = net.encoder
    if preset.gradient_checkpointing and torch.cuda.is_available() and encoder.supports_gradient_checkpointing:
        # Activations recomputed in backward: less memory, more compute. Non-reentrant, which
        # torch.compile traces; transformers 5 renamed the method (the old name warns).
        if hasattr(encoder, "activation_checkpointing_enable"):
            encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if preset.compile:
        net.compile()  # in place: parameter names, hence saved weights, stay those of the plain module


def loss_function(preset: FusionPreset) -> Any:
    """The loop's `loss_fn(model, batch) -> (loss, rows)` for a preset: its loss on log1p(price) predictions."""

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        z = model(batch["input_ids"], batch["attention_mask"], batch["features"])  # (B,)
        return price_loss(z, batch["price"], preset.loss, preset.focal_gamma, preset.huber_delta), len(z)

    return loss_fn


class FusionRegressor:
    """Fit/predict a FusionNet on listing texts; see the module docstring."""

    def __init__(self, preset: FusionPreset) -> None:
        self.preset = preset

    # --- data -----------------------------------------------------------------------------------
    def tokenise(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of every listing, truncated to max_length; done once per fit/predict call."""
        encoded = self.tokenizer_(list(texts), truncation=True, max_length=self.preset.max_length)
        return encoded["input_ids"]

    def features(self, texts: Sequence[str], fit: bool = False) -> np.ndarray:
        """Scaled engineered features of every listing; `fit` fits their encoder (the training rows') first."""
        _, raw = parse_listings(texts)
        if fit:
            self.features_ = FeatureEncoder(self.preset.feature_set).fit(raw)
        return self.features_.transform(raw)

    # --- fit ------------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], y: np.ndarray, work_dir: str | Path | None = None,
            resume: bool = False, progress: Any = None) -> FusionRegressor:
        """Fine-tune on texts and log1p(price); checkpoints go to `work_dir` (a temporary one if None).

        `progress` is unused: the training loop shows its own bar of steps."""
        import tempfile

        from trainloop import train

        p = self.preset
        location, self.tokenizer_, self.encoder_config_ = open_encoder(p.encoder)
        torch.manual_seed(p.seed)
        encoder = load_weights(p.encoder, location, lambda where: load_encoder(where, p.attention))
        features = self.features(texts, fit=True)
        ids = self.tokenise(texts)
        prices = np.expm1(y)
        order = np.random.default_rng(p.seed).permutation(len(ids))
        n_valid = int(round(len(ids) * p.valid_fraction)) if len(ids) >= 20 else 0
        valid_rows, train_rows = order[:n_valid], order[n_valid:]
        self.pooling_ = _pooling(p, location, self.encoder_config_)
        self.net_ = FusionNet(encoder, features.shape[1], p, self.pooling_, float(y[train_rows].mean()))
        train_set = ListingSet([ids[i] for i in train_rows], features[train_rows], prices[train_rows])
        valid_ids = [ids[i] for i in valid_rows]
        loss_fn = loss_function(p)

        def evaluate_fn(model: nn.Module) -> dict[str, float]:
            if not n_valid:
                return {}
            z = self.predict_ids(model, valid_ids, features[valid_rows])
            score = smape(np.expm1(z), prices[valid_rows])
            return {"valid_smape": score, "score": score}

        lengths = [len(ids[i]) for i in train_rows]
        prepare_for_training(self.net_, p)
        with tempfile.TemporaryDirectory() as scratch:
            result = train(self.net_, train_set, Collate(self.tokenizer_.pad_token_id or 0), loss_fn, p.loop,
                           work_dir or scratch, evaluate_fn, resume=resume,
                           length_of=(lengths.__getitem__ if p.length_grouping else None),
                           project_name="smartprice", run_config=preset_to_dict(p), seed=p.seed)
            if result.best_path is not None:
                from safetensors.torch import load_file

                self.net_.load_state_dict(load_file(str(result.best_path)))
        self.history_ = result.history
        self.samples_per_s_ = result.samples_per_s
        self.net_.eval()
        self.valid_rows_ = valid_rows  # held out for the best epoch; the blend weighs models on them
        self.valid_pred_ = self.predict_ids(self.net_, valid_ids, features[valid_rows]) if n_valid else np.zeros(0)
        self.calibration_ = (self.valid_pred_, y[valid_rows], None) if n_valid else None  # the price ranges' rows
        return self

    # --- predict --------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_ids(self, model: nn.Module, ids: list[list[int]], features: np.ndarray) -> np.ndarray:
        """log1p(price) predictions, batches of similar length (restored to input order)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        collate = Collate(self.tokenizer_.pad_token_id or 0)
        order = np.argsort([len(i) for i in ids], kind="stable")
        out = np.zeros(len(ids))
        size = self.preset.eval_batch_size
        for start in range(0, len(ids), size):
            rows = order[start:start + size]
            batch = collate([(ids[i], features[i], 0.0) for i in rows])
            z = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["features"].to(device))
            out[rows] = z.float().cpu().numpy()
        model.train(was_training)
        return out

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted log1p(price) for listing texts."""
        return self.predict_ids(self.net_, self.tokenise(texts), self.features(texts))

    def calibration(self) -> tuple[np.ndarray, np.ndarray, None] | None:
        """Predicted and true log prices of the held-out validation rows (just after fit), or None."""
        return getattr(self, "calibration_", None)

    def predict_difficulty(self, texts: Sequence[str]) -> tuple[np.ndarray, None]:
        """Predicted log1p(price) and no difficulty: the ranges of a fusion model have one width per price band."""
        return self.predict(texts), None

    def explainer(self) -> None:
        """None: a transformer keeps no training listings and its output has no per-feature split."""
        return None

    def expect_rows(self, rows: int) -> None:
        """Nothing to prepare: batches are formed as the rows come."""

    def validation(self) -> None:
        return None

    # --- persistence ------------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        encoder_dir = directory / ENCODER_DIR
        self.encoder_config_.save_pretrained(encoder_dir)
        self.tokenizer_.save_pretrained(encoder_dir)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        save_file(state, str(directory / WEIGHTS))
        return {"features": self.features_.to_dict(), "pooling": self.pooling_}

    @classmethod
    def load(cls, preset: FusionPreset, directory: Path, state: dict[str, Any]) -> FusionRegressor:
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoTokenizer

        model = cls(preset)
        encoder_dir = directory / ENCODER_DIR
        try:
            model.tokenizer_ = AutoTokenizer.from_pretrained(encoder_dir)
            model.encoder_config_ = AutoConfig.from_pretrained(encoder_dir)
        except Exception as error:  # tokenizers/transformers raise many types for a damaged file
            reason = (str(error).strip() or type(error).__name__).splitlines()[0][:300]
            raise ModelDirError(f"{directory}: damaged encoder files in {ENCODER_DIR}/ ({reason}); "
                                "retrain the model or restore the directory") from None
        model.features_ = FeatureEncoder.from_dict(state["features"])
        model.pooling_ = state["pooling"]
        encoder = load_encoder(model.encoder_config_, preset.attention)
        model.net_ = FusionNet(encoder, len(model.features_.names), preset, model.pooling_, 0.0)
        model.net_.load_state_dict(load_file(str(directory / WEIGHTS)))
        model.net_.eval()
        return model
