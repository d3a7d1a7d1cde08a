"""MU presets, training on text files with the shared loop, evaluation, and model directories."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from sharedcore.describe import PresetNotes
from sharedcore.settings import setting
from trainloop import LoopConfig, TrainResult, train
from trainloop.about import __version__, newer_version_note
from trainloop.errors import SettingError, UserError
from trainloop.overrides import apply_overrides

from .data import TokenWindows, collate, encode_corpus, read_lines
from .generate import generate
from .model import LanguageModel, MUConfig, build_model, describe
from .tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

log = logging.getLogger(__name__)
PROMPTS = ("The quick brown", "Once upon a time", "In the beginning")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class MUPreset:
    """Model and training fields together, so `--set` reaches any of them."""

    n_layers: int = setting(6, "depth: 6 for quick runs")
    max_seq_len: int = setting(128, "context and window length")
    vocab_size: int = setting(50_000, "BPE target; capped by what the corpus supports")
    dropout: float = setting(0.1, "dropout rate of the layers: the common value for a model this small")
    arch: str = setting("mu", '"transformer": the baseline, same data, loop, optimizer and schedule')
    block_attention: str = setting("fused", '"literal" only to compare; "off": ablation (cross-block attention only)')
    gate: str = setting("on", '"off": ablation, the plain residual update x_new = z')
    width: int = setting(64, "transformer only (MU is 64 wide); 0 = MU's total parameter count")
    n_heads: int = setting(8, "transformer only: 8 heads as MU's cross-block attention")
    loop: LoopConfig = setting(
        LoopConfig(batch_size=8, grad_accum=4, epochs=3, lr=3e-4, warmup=0.1, warmup_max_steps=500),
        "the training loop's settings: --set loop.FIELD=VALUE",
        grad_accum="effective batch 32 windows",
        warmup="linear warmup over 10% of the run's optimizer steps",
        warmup_max_steps="at most 500 of them: a long run needs no longer warmup",
    )
    seed: int = setting(0, "seeds the weights, shuffling and dropout")
    sample_tokens: int = setting(30, "tokens sampled per prompt after each epoch; 0 = no samples")


PRESETS = {
    "test": MUPreset(),
    "full": MUPreset(n_layers=24, max_seq_len=256,
                     loop=LoopConfig(batch_size=4, grad_accum=4, epochs=5, lr=1e-4, warmup=0.1, warmup_max_steps=1000)),
}
# What `mu presets` prints of each preset besides its values: purpose and rough cost.
PRESET_NOTES = {
    "test": PresetNotes("quick runs and tests", "CPU-sized; bench/mu.py prints its tokens/s and a budgeted run"),
    "full": PresetNotes("the full-size model", "GPU; not benchmarked in bench/"),
}


def resolve(name: str, overrides: dict[str, Any] | None = None) -> MUPreset:
    """Preset `name` with `--set` overrides applied and the model they describe checked."""
    if name not in PRESETS:
        raise SettingError(f"unknown MU preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = apply_overrides(PRESETS[name], overrides, f"MU preset {name!r}")
    model_config(preset, preset.vocab_size)  # an impossible model (e.g. gate=off with arch=transformer) fails now
    return preset


def model_config(preset: MUPreset, vocab_size: int) -> MUConfig:
    """The model fields of a preset, at the vocabulary the tokenizer reached."""
    names = {f.name for f in dataclasses.fields(MUConfig)} - {"vocab_size"}
    return MUConfig(vocab_size=vocab_size, **{n: getattr(preset, n) for n in names})


def lm_loss(model: LanguageModel, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over a (B, seq+1) batch."""
    logits = model(batch[:, :-1])  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))
    return loss, batch[:, 1:].numel()


@torch.no_grad()
def evaluate(model: LanguageModel, windows: TokenWindows, batch_size: int = 16) -> dict[str, float]:
    """Loss (mean over all tokens), token accuracy and perplexity = exp(loss)."""
    model.eval()
    device = next(model.parameters()).device
    total_loss, correct, count = 0.0, 0, 0
    for batch in DataLoader(windows, batch_size=batch_size, collate_fn=collate):
        batch = batch.to(device)
        logits = model(batch[:, :-1]).float()
        target = batch[:, 1:]
        total_loss += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
        correct += int((logits.argmax(-1) == target).sum())
        count += target.numel()
    loss = total_loss / count
    return {"loss": loss, "accuracy": correct / count, "perplexity": math.exp(min(loss, 50.0))}


def eval_windows(ids: torch.Tensor, seq_len: int) -> TokenWindows:
    """Non-overlapping windows: every evaluated token counted once."""
    return TokenWindows(ids, seq_len, stride=seq_len)


def sample_texts(model: LanguageModel, tokenizer, seed: int = 0, max_new_tokens: int = 30) -> dict[str, str]:
    """Continuations of the three design prompts (temperature 0.8, top-k 50, top-p 0.9, penalty 1.2)."""
    return {p: tokenizer.decode(generate(model, tokenizer.encode(p).ids, max_new_tokens, seed=seed)) for p in PROMPTS}


def save_model(model: LanguageModel, preset: MUPreset, directory: Path) -> None:
    """config.json + model.safetensors (written to temporary names, then renamed)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.safetensors.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(weights))
    weights.replace(directory / "model.safetensors")
    config = {"format_version": FORMAT_VERSION, "smartprice_version": __version__, "model": dataclasses.asdict(model.config),
              "preset": dataclasses.asdict(preset)}
    (directory / "config.json.tmp").write_text(json.dumps(config, indent=2))
    (directory / "config.json.tmp").replace(directory / "config.json")


def load_model(directory: str | Path) -> tuple[LanguageModel, Any]:
    """(model, tokenizer) from a directory written by `train_mu`."""
    from safetensors.torch import load_file

    directory = Path(directory)
    path = directory / "config.json"
    if not path.exists():
        raise UserError(f"{directory}: not an MU model directory (no config.json)")
    config = json.loads(path.read_text())
    newer = newer_version_note(config.get("smartprice_version"), f"MU model {directory}")
    if newer:
        log.warning("%s", newer)
    if config.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{directory}: MU model format {config.get('format_version')!r}, expected {FORMAT_VERSION}")
    model = build_model(MUConfig(**config["model"]))  # a directory from before arch/gate gets their defaults: MU
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    model.eval()
    return model, load_tokenizer(directory)


def train_mu(train_files: list[str], valid_files: list[str], out: str | Path, preset: MUPreset,
             resume: bool = False) -> TrainResult:
    """Train (or resume) MU, an ablation or the transformer baseline (`preset.arch`, `gate`, `block_attention`).

    Writes tokenizer.json, checkpoints, config.json and model.safetensors; logs what it built with its
    parameter counts and training FLOPs per token.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_lines = read_lines(train_files)
    if resume and (out / "tokenizer.json").exists():
        tokenizer = load_tokenizer(out)
    else:
        tokenizer = train_tokenizer(train_lines, preset.vocab_size)
        save_tokenizer(tokenizer, out)
    vocab = tokenizer.get_vocab_size()
    if vocab < preset.vocab_size:
        log.info("vocabulary: %d tokens (the corpus supports fewer than the requested %d)", vocab, preset.vocab_size)
    torch.manual_seed(preset.seed)
    model = build_model(model_config(preset, vocab))
    log.info("%s", describe(model))
    train_set = TokenWindows(encode_corpus(tokenizer, train_lines), preset.max_seq_len)
    valid = eval_windows(encode_corpus(tokenizer, read_lines(valid_files)), preset.max_seq_len) if valid_files else None

    def evaluate_fn(m: LanguageModel) -> dict[str, float]:
        if valid is None:
            return {}
        metrics = evaluate(m, valid)
        return {"valid_loss": metrics["loss"], "valid_accuracy": metrics["accuracy"],
                "valid_perplexity": metrics["perplexity"], "score": metrics["loss"]}

    def on_epoch_end(m: LanguageModel, metrics: dict[str, Any]) -> None:
        if preset.sample_tokens <= 0:
            return
        for prompt, text in sample_texts(m, tokenizer, preset.seed, preset.sample_tokens).items():
            log.info("sample %r -> %r", prompt, text)

    result = train(model, train_set, collate, lm_loss, preset.loop, out, evaluate_fn, on_epoch_end,
                   resume=resume, project_name="mu", run_config=dataclasses.asdict(preset), seed=preset.seed)
    if result.best_path is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(result.best_path)))
    save_model(model, preset, out)
    return result
