"""MU benchmark (CPU), all in one run: speed, then MU against baselines with tuned learning rates and
3 seeds; the last line is one JSON object.

Speed (vocabulary 50,000 unless said; batch 8, seq 128, 6 layers: the test preset's shapes):
1. parameters of the test preset;
2. a profile of one MU layer against one layer of its post-LN core (gate=off, block_attention=off):
   milliseconds of forward + backward per part, at the comparison's vocabulary (--vocab);
3. MU's training step (forward, backward, AdamW) against its post-LN core's at that vocabulary
   (target: <= 1.25x), interleaved rounds;
4. training tokens/s (forward, backward, AdamW) of the fused and literal block attentions at
   vocabulary 256 and 50,000, and of the output layer alone (Linear(64, V) + cross-entropy + its
   AdamW step): a bound every model pays. Steps are timed in interleaved rounds (model, bound,
   model, ...) and the medians compared, so that a change in the machine's load hits both alike.
   AdamW is built as the training loop builds it (`trainloop.loop.make_adamw`: fused kernel);
5. generation tokens/s with and without the KV cache (120 new tokens at seq 128), alternating.

Comparison (does MU's design help, once each model has its own learning rate and seeds are
repeated?): MU, MU without both parts (gate=off, block_attention=off: a post-LN transformer, its
core), a pre-LN transformer of MU's width and depth and one of MU's total parameter count. Every run
goes through `train_mu` (same tokenizer, windows, loop, fused AdamW, warmup + cosine schedule) on
95% of wikitext2_valid; the last 5% ("held-out") is the validation split. wikitext2_test is read
only to score the finished seed runs.
- steps: each model gets the optimizer steps it runs in --budget-s seconds, from a throughput
  calibration of all models in interleaved rounds at the start (so the machine's load during the
  runs does not change what is trained; the seconds each run actually trained are printed);
- learning rate: per model, a run of --trial-fraction of its steps at each of --lrs (seed 1000,
  none of the measured seeds); while the best is at the edge of the rates tried, one more a grid
  step beyond it (up to --extend more); the rate with the lowest held-out loss wins (`choose_lr`,
  given no test text); a best still at an edge is flagged in the output;
- equal time: --seeds runs (seeds 0, 1, ...) at the chosen rate and the model's steps;
- equal tokens: the same seeds for the steps of the slowest model (for it, the same runs);
then test perplexity (non-overlapping windows) as mean ± standard error over seeds, beside an
interpolated bigram with the same tokenizer, and a PNG of held-out perplexity against tokens seen:
the learning-rate trials, and one line per seed at equal time and at equal tokens.

Budget (2 cores, 1 thread; single training steps measured MU at ~3,300 tok/s, the others 1.3-1.8x
that): 4 models x (3-4 trials of 45 s, up to 6 while a best stays at an edge, + 3 seeds of 90 s)
~ 1,800-1,900 s, 9 equal-token runs of
the faster models at MU's tokens (55-77% of 90 s) ~ 500 s, the loop's own overhead (~10%) ~ 230 s:
~42 min of training. 21 test scores (~330k tokens at 9-15k tok/s: ~8 min), 8 held-out scores per run
(~4 min in all), set-up and checkpoints (~1 min), the speed section, profile and calibration (~2 min):
~56 minutes on an idle machine, leaving ~25% for others' jobs on the same cores within the
75-minute limit. The duration is printed at the end.

    python bench/mu.py [--budget-s 90] [--trial-fraction 0.5] [--lrs 2e-3,4e-3,8e-3] [--extend 3]
                       [--seeds 3] [--vocab 8192] [--png bench/mu_perplexity.png] [--corpus DIR] [--quick]
                       [--skip-speed | --skip-comparison]

--quick checks that everything runs (a slice of the texts, vocabulary 1,024, tiny budgets, 2 seeds)
in about a minute; its PNG goes to the temporary directory unless --png is given. Without the corpus
the comparison cannot run: the bench says so (which files, where, how to get them) and, with --quick
or --skip-speed (where the comparison was the point), exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# This script shares its name with the package it measures: take its own folder off the import
# path so that `import mu` finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mu import MU, MUConfig, kernels  # noqa: E402
from mu.data import TokenWindows, encode_corpus, read_lines  # noqa: E402
from mu.generate import generate  # noqa: E402
from mu.model import MULayer, build_model, parameter_counts, resolve_width, training_flops_per_token  # noqa: E402
from mu.tokenizer import train_tokenizer  # noqa: E402
from mu.train import eval_windows, evaluate, load_model, resolve, train_mu  # noqa: E402
from trainloop.loop import make_adamw  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
CORPUS_FILES = ("wikitext2_valid.txt", "wikitext2_test.txt")
BATCH, SEQ, LAYERS = 8, 128, 6
HELD_OUT = 0.05  # tail of wikitext2_valid for validation (~13.6k tokens at vocabulary 8,192)
# The models compared: name -> `--set` overrides of the test preset.
MODELS = {
    "MU": {},
    # Without both parts MU *is* a post-LN transformer of width 64 (x_new = LN(z + FFN(z)), z = LN(x + attn)):
    # it separates what the parts do from what post-LN does against the pre-LN baselines below.
    "MU without both parts (post-LN core)": {"gate": "off", "block_attention": "off"},
    "transformer, pre-LN (MU's width)": {"arch": "transformer"},
    "transformer, pre-LN (MU's parameters)": {"arch": "transformer", "width": 0},
}
# x2 apart. The last full run's best rates: MU 8e-3 (the edge of 1e-3..8e-3), its core 4e-3 (8e-3 diverged),
# the pre-LN transformers 4e-3 and 2e-3: the grid starts at 2e-3 and extends (--extend) while a best is at an edge.
LRS = (2e-3, 4e-3, 8e-3)
LR_SEED = 1000            # the learning-rate trials' seed: none of the measured seeds (0, 1, ...)
# Training settings shared by every model of the comparison (the test preset's otherwise).
SHARED = {"loop.grad_accum": 1,          # a step per batch of 8 windows: more steps in a short budget
          "loop.warmup": 0.1,           # warmup = 10% of each run's steps, whatever its length ...
          "loop.warmup_max_steps": 0,   # ... uncapped, so short trials and long runs warm up alike
          "sample_tokens": 0, "loop.progress": False}


def median_seconds(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, called once per round in turn after one warm-up call."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def train_step(model: torch.nn.Module, vocab: int) -> Callable[[], None]:
    """One training step (forward, cross-entropy, backward, the loop's AdamW) on fixed random tokens."""
    optimizer = make_adamw(model.parameters(), 1e-4, 0.01)
    batch = torch.randint(0, vocab, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0))
    model.train()

    def step() -> None:
        logits = model(batch[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.reshape(-1, vocab), batch[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def output_layer_step(vocab: int) -> Callable[[], None]:
    """The bound: hidden (B, T, 64) -> Linear(64, V) -> cross-entropy, backward and AdamW; every model pays this."""
    head = torch.nn.Linear(64, vocab)
    optimizer = make_adamw(head.parameters(), 1e-4, 0.01)
    hidden = torch.randn(BATCH, SEQ, 64, requires_grad=True)
    target = torch.randint(0, vocab, (BATCH * SEQ,))

    def step() -> None:
        F.cross_entropy(head(hidden).reshape(-1, vocab), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def layer_profile(vocab: int, rounds: int) -> dict[str, dict[str, float]]:
    """Milliseconds of forward + backward per part of one MU layer and one post-LN core layer (batch 8, seq 128).

    Each part runs on its own random inputs (requires_grad) and is timed as forward, then backward of
    a fixed random gradient, in interleaved rounds (medians); "whole layer" is the layer as trained.
    """
    torch.manual_seed(0)
    config = MUConfig(vocab_size=vocab, n_layers=LAYERS, max_seq_len=SEQ)
    layers = {"MU": MULayer(config).train(),
              "core": MULayer(dataclasses.replace(config, gate="off", block_attention="off")).train()}
    x, z = (torch.randn(BATCH, SEQ, 64, requires_grad=True) for _ in range(2))
    entropy = torch.rand(BATCH, SEQ, requires_grad=True)
    idx = torch.randint(0, vocab, (BATCH, SEQ))
    grad = torch.randn(BATCH, SEQ, 64)

    def timed(fn: Callable[[], tuple]) -> Callable[[], None]:
        def call() -> None:
            outs = fn()
            torch.autograd.backward(outs, [grad if o.dim() == 3 else torch.ones_like(o) for o in outs])
        return call

    def post(layer: MULayer) -> tuple:
        h = layer.ln1(x + z)
        return (layer.ln2(h + layer.ffn(h)),)

    mu, core = layers["MU"], layers["core"]
    built = kernels.available(x)
    parts = {
        ("MU", "block attentions (QKV 64->192, 32 causal heads of 2, out 64->64; "
               + ("mu.kernels)" if built else "SDPA)")): timed(lambda: (mu.blocks(x),)),
        ("MU", "cross-block attention with entropy ("
               + ("mu.kernels)" if built else "explicit softmax)")): timed(lambda: mu.cross(x)),
        ("core", "cross-block attention (SDPA, no entropy)"): timed(lambda: (core.cross(x, with_entropy=False)[0],)),
        ("MU", "residual, LN, FFN 64-256-64, residual, LN"): timed(lambda: post(mu)),
        ("core", "residual, LN, FFN 64-256-64, residual, LN"): timed(lambda: post(core)),
        ("MU", "gate (affinity lookup, MLP 17-32-16, sigmoid, lerp)"): timed(lambda: (mu.gate(x, z, idx, entropy),)),
        ("MU", "whole layer"): timed(lambda: (mu(x, idx),)),
        ("core", "whole layer"): timed(lambda: (core(x, idx),)),
    }
    seconds = median_seconds(parts, rounds)
    table: dict[str, dict[str, float]] = {}
    for (model, part), s in seconds.items():
        table.setdefault(part, {})[model] = s * 1e3
    return table


def print_layer_profile(table: dict[str, dict[str, float]]) -> None:
    """The profile as a markdown table: part, MU ms, core ms."""
    print("\none layer, forward + backward, batch 8 x seq 128 (ms, medians of interleaved rounds):")
    print("| part | MU | post-LN core |\n|---|---|---|")
    for part, ms in table.items():
        print(f"| {part} | " + " | ".join(f"{ms[m]:.2f}" if m in ms else "" for m in ("MU", "core")) + " |")
    whole = table["whole layer"]
    print(f"MU layer / core layer: x{whole['MU'] / whole['core']:.2f}\n", flush=True)


def mu_model(vocab: int, **config) -> MU:
    """MU at the test preset's depth and context, seeded."""
    torch.manual_seed(0)
    return MU(MUConfig(vocab_size=vocab, n_layers=LAYERS, max_seq_len=SEQ, **config))


def speed(rounds: int, new_tokens: int, vocab: int) -> dict:
    """Sections 2-5 of the module docstring."""
    out: dict = {}
    tokens = BATCH * SEQ
    profile = layer_profile(vocab, 2 * rounds)
    out["layer_profile_ms"] = profile
    print_layer_profile(profile)
    torch.manual_seed(0)
    core = MU(MUConfig(vocab_size=vocab, n_layers=LAYERS, max_seq_len=SEQ, gate="off", block_attention="off"))
    steps = median_seconds({"MU": train_step(mu_model(vocab), vocab), "core": train_step(core, vocab)}, 2 * rounds)
    out["step_ratio_vs_core"] = steps["MU"] / steps["core"]
    out[f"vocab{vocab}_step_ms"] = {k: s * 1e3 for k, s in steps.items()}
    print(f"vocab {vocab}:  MU step {steps['MU'] * 1e3:.0f} ms, its post-LN core's {steps['core'] * 1e3:.0f} ms: "
          f"x{out['step_ratio_vs_core']:.2f} (target <= 1.25)", flush=True)
    small = median_seconds({kind: train_step(mu_model(256, block_attention=kind), 256)
                            for kind in ("fused", "literal")}, 2 * rounds)
    out["vocab256_tokens_per_s"] = {k: tokens / s for k, s in small.items()}
    print(f"vocab 256:    fused {tokens / small['fused']:8.0f} tok/s  literal {tokens / small['literal']:8.0f} tok/s  "
          f"fused/literal x{small['literal'] / small['fused']:.2f}", flush=True)
    large = median_seconds({"fused": train_step(mu_model(50_000), 50_000),
                            "literal": train_step(mu_model(50_000, block_attention="literal"), 50_000),
                            "bound": output_layer_step(50_000)}, rounds)
    out["vocab50k_tokens_per_s"] = {k: tokens / s for k, s in large.items()}
    out["fused_vs_bound"] = large["bound"] / large["fused"]
    print(f"vocab 50000:  fused {tokens / large['fused']:8.0f} tok/s  literal {tokens / large['literal']:8.0f} tok/s  "
          f"output-layer bound {tokens / large['bound']:8.0f} tok/s  fused/bound {out['fused_vs_bound']:.0%} "
          f"(target >= 80%; AdamW fused as in the loop)", flush=True)

    model = mu_model(50_000).eval()
    prompt = list(range(4, 12))  # 8 prompt tokens + 120 new = seq 128
    runs: dict[str, list[float]] = {"cached": [], "uncached": []}
    for _ in range(rounds):
        for name in runs:
            started = time.perf_counter()
            made = generate(model, prompt, new_tokens, seed=0, use_cache=name == "cached")
            runs[name].append(len(made) / (time.perf_counter() - started))
    gen = {name: statistics.median(r) for name, r in runs.items()}
    out["generation_tokens_per_s"] = gen | {"speedup": gen["cached"] / gen["uncached"]}
    print(f"generation:   cached {gen['cached']:6.1f} tok/s  uncached {gen['uncached']:6.1f} tok/s  "
          f"x{gen['cached'] / gen['uncached']:.2f} (target >= 3)", flush=True)
    return out


def bigram_perplexity(train_ids: torch.Tensor, windows: TokenWindows, vocab: int) -> tuple[float, float]:
    """Interpolated bigram/unigram (weight fitted on the last 10% of train) over the same target tokens."""
    def counts(ids: torch.Tensor):
        pairs = torch.bincount(ids[:-1] * vocab + ids[1:], minlength=vocab * vocab).view(vocab, vocab).float()
        unigram = (torch.bincount(ids, minlength=vocab).float() + 1) / (ids.numel() + vocab)
        return pairs, pairs.sum(1, keepdim=True), unigram

    def nll(pairs, rows, unigram, prev, nxt, lam):
        ml = pairs[prev, nxt] / rows[prev, 0].clamp(min=1)
        seen = (rows[prev, 0] > 0).float()
        p = lam * seen * ml + (1 - lam * seen) * unigram[nxt]
        return float(-torch.log(p).mean())

    cut = int(train_ids.numel() * 0.9)
    fitted = counts(train_ids[:cut])
    lam = min((w / 20 for w in range(1, 20)),
              key=lambda w: nll(*fitted, train_ids[cut:-1], train_ids[cut + 1:], w))
    final = counts(train_ids)
    stacked = torch.stack([windows[i] for i in range(len(windows))])
    return math.exp(nll(*final, stacked[:, :-1].reshape(-1), stacked[:, 1:].reshape(-1), lam)), lam


def calibrate(vocab: int, rounds: int) -> dict[str, float]:
    """Training tokens/s of every compared model at the comparison's shapes, in interleaved rounds."""
    steps = {}
    for name, overrides in MODELS.items():
        torch.manual_seed(0)
        steps[name] = train_step(build_model(MUConfig(vocab_size=vocab, n_layers=LAYERS, max_seq_len=SEQ,
                                                      **overrides)), vocab)
    return {name: BATCH * SEQ / s for name, s in median_seconds(steps, rounds).items()}


def split_training_text(lines: Sequence[str], directory: Path) -> tuple[Path, Path]:
    """Write the fitting text (first 95%) and the held-out tail (last 5%) of the training lines; their paths."""
    cut = int(len(lines) * (1 - HELD_OUT))
    fit, held = directory / "fit.txt", directory / "held.txt"
    fit.write_text("\n".join(lines[:cut]))
    held.write_text("\n".join(lines[cut:]))
    return fit, held


def run(name: str, lr: float, seed: int, steps: int, chunks: int, vocab: int, fit: Path, held: Path, out: Path,
        test_lines: Sequence[str] | None = None) -> dict:
    """Train model `name` for `steps` optimizer steps, scored on the held-out text `chunks` times (and on test lines if given)."""
    per_chunk = max(1, steps // chunks)
    preset = resolve("test", {**SHARED, **MODELS[name], "loop.lr": lr, "seed": seed, "vocab_size": vocab,
                              "loop.epochs": chunks, "loop.max_steps_per_epoch": per_chunk})
    started = time.perf_counter()
    result = train_mu([str(fit)], [str(held)], out, preset)
    wall_s = time.perf_counter() - started
    tokens_per_chunk = per_chunk * BATCH * SEQ
    train_s = per_chunk * chunks * BATCH / result.samples_per_s
    record = {"lr": lr, "seed": seed, "steps": per_chunk * chunks, "tokens": tokens_per_chunk * chunks,
              "train_s": train_s, "wall_s": wall_s, "tokens_per_s": tokens_per_chunk * chunks / train_s,
              "valid_loss": min(h["valid_loss"] for h in result.history),
              "curve": [(h["epoch"] * tokens_per_chunk, h["valid_perplexity"]) for h in result.history]}
    if test_lines is not None:  # the best chunk's weights (by held-out loss), as train_mu saved them
        model, tokenizer = load_model(out)
        test = evaluate(model, eval_windows(encode_corpus(tokenizer, test_lines), SEQ))
        record |= {"test_perplexity": test["perplexity"], "test_accuracy": test["accuracy"]}
    return record


def choose_lr(name: str, lrs: Sequence[float], steps: int, chunks: int, vocab: int, fit: Path, held: Path,
              out: Path, extend: int = 1) -> tuple[float, dict[float, dict]]:
    """The rate with the lowest held-out loss after `steps` (seed LR_SEED), and every trial; given no test text.

    `lrs` are tried first; while the best is the smallest or largest tried, up to `extend` more
    trials go one grid step (the ratio of the two nearest rates) beyond it.
    """
    trials = {lr: run(name, lr, LR_SEED, steps, chunks, vocab, fit, held, out / f"lr{lr:g}") for lr in lrs}
    for _ in range(extend):
        tried = sorted(trials)
        best = min(trials, key=lambda lr: trials[lr]["valid_loss"])
        if len(tried) < 2 or best not in (tried[0], tried[-1]):
            break
        lr = best * tried[-1] / tried[-2] if best == tried[-1] else best * tried[0] / tried[1]
        trials[lr] = run(name, lr, LR_SEED, steps, chunks, vocab, fit, held, out / f"lr{lr:g}")
    return min(trials, key=lambda lr: trials[lr]["valid_loss"]), dict(sorted(trials.items()))


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def plot(results: dict, equal_tokens: int, png: Path) -> None:
    """Held-out perplexity against tokens seen: LR trials, then one line per seed at equal time and equal tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    styles = ("-", "--", ":", "-.")
    for color, (name, r) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], results.items()):
        for style, (lr, trial) in zip(styles, r["trials"].items()):
            tokens, ppl = zip(*trial["curve"])
            axes[0].plot([t / 1e6 for t in tokens], ppl, linestyle=style, color=color, linewidth=1,
                         label=f"{name}, lr {lr:g}")
        for ax, key in ((axes[1], "equal_time"), (axes[2], "equal_tokens")):
            for i, seed_run in enumerate(r[key]):
                tokens, ppl = zip(*seed_run["curve"])
                ax.plot([t / 1e6 for t in tokens], ppl, marker="o", markersize=2, linewidth=1, color=color,
                        alpha=0.8, label=f"{name} (lr {r['lr']:g})" if i == 0 else None)
    axes[1].axvline(equal_tokens / 1e6, color="grey", linestyle=":", label="equal-token point")
    titles = ("learning-rate trials (seed 1000)", "equal time, one line per seed", "equal tokens, one line per seed")
    for ax, title in zip(axes, titles):
        ax.set_yscale("log")
        ax.set_xlabel("training tokens seen (millions)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("validation perplexity (held-out 5% of wikitext2_valid)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def compare(args: argparse.Namespace) -> dict:
    """The comparison of the module docstring; prints the tables and returns everything measured."""
    lines = read_lines([Path(args.corpus) / "wikitext2_valid.txt"])
    test_lines = read_lines([Path(args.corpus) / "wikitext2_test.txt"])
    if args.quick:
        lines, test_lines = lines[:400], test_lines[:50]
    seeds = list(range(args.seeds))
    sizes = {}
    results: dict = {name: {} for name in MODELS}
    with tempfile.TemporaryDirectory() as tmp:
        fit, held = split_training_text(lines, Path(tmp))
        tokenizer = train_tokenizer(read_lines([fit]), args.vocab)  # what train_mu trains on the same text
        vocab = tokenizer.get_vocab_size()
        for name, overrides in MODELS.items():
            config = resolve_width(MUConfig(vocab_size=vocab, n_layers=LAYERS, max_seq_len=SEQ, **overrides))
            sizes[name] = parameter_counts(build_model(config)) | {
                "train_flops_per_token": training_flops_per_token(config), "width": config.width}
        speeds = calibrate(vocab, 1 if args.quick else 3)
        steps = {name: max(args.chunks, int(args.budget_s * s / (BATCH * SEQ))) for name, s in speeds.items()}
        slowest = min(steps, key=steps.get)
        print(f"comparison:   vocab {vocab}, {args.budget_s:.0f} s per seed run, learning rates "
              f"{', '.join(f'{lr:g}' for lr in args.lrs)} at {args.trial_fraction:.0%} of that, seeds {seeds}; "
              "calibrated tok/s " + ", ".join(f"{n} {s:.0f}" for n, s in speeds.items()), flush=True)
        for i, name in enumerate(MODELS):
            r = results[name]
            trial_steps = max(args.chunks, int(args.trial_fraction * steps[name]))
            r["lr"], r["trials"] = choose_lr(name, args.lrs, trial_steps, args.chunks, args.vocab, fit, held,
                                             Path(tmp) / f"m{i}", extend=args.extend)
            print(f"  {name}: lr {r['lr']:g} (held-out ppl "
                  + ", ".join(f"{lr:g}: {math.exp(t['valid_loss']):.1f}" for lr, t in r["trials"].items()) + ")",
                  flush=True)
            r["equal_time"] = [run(name, r["lr"], seed, steps[name], args.chunks, args.vocab, fit, held,
                                   Path(tmp) / f"m{i}time{seed}", test_lines) for seed in seeds]
            same = steps[name] // args.chunks == steps[slowest] // args.chunks  # the slowest: the same runs
            r["equal_tokens"] = r["equal_time"] if same else [
                run(name, r["lr"], seed, steps[slowest], args.chunks, args.vocab, fit, held,
                    Path(tmp) / f"m{i}tokens{seed}", test_lines) for seed in seeds]
            for key in ("equal_time", "equal_tokens"):
                r[key + "_test_perplexity"] = mean_se([x["test_perplexity"] for x in r[key]])
            print(f"  {name}: test ppl equal time {'{:.1f} ± {:.1f}'.format(*r['equal_time_test_perplexity'])} "
                  f"({r['equal_time'][0]['tokens'] / 1e6:.2f}M tokens, "
                  f"{statistics.fmean(x['train_s'] for x in r['equal_time']):.0f} s trained), equal tokens "
                  f"{'{:.1f} ± {:.1f}'.format(*r['equal_tokens_test_perplexity'])}", flush=True)
        train_ids = encode_corpus(tokenizer, read_lines([fit]))
        bigram, lam = bigram_perplexity(train_ids, eval_windows(encode_corpus(tokenizer, test_lines), SEQ), vocab)
    equal_tokens = results[slowest]["equal_tokens"][0]["tokens"]
    plot(results, equal_tokens, Path(args.png))

    mu_total = sizes["MU"]["total"]
    n = len(seeds)
    print(f"\n| model | parameters (non-embedding) | vs MU | train MFLOPs/token | lr (held-out ppl per trial) | "
          f"tok/s calibrated (in runs) | test ppl, equal time ({args.budget_s:.0f} s), mean ± s.e. of {n} seeds | "
          f"test ppl, equal tokens ({equal_tokens / 1e6:.2f}M) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        s = sizes[name]
        trials = " / ".join(f"{math.exp(t['valid_loss']):.0f}" for t in r["trials"].values())
        in_runs = statistics.fmean(x["tokens_per_s"] for x in r["equal_time"])
        print(f"| {name} | {s['total']:,} ({s['non_embedding']:,}) | {s['total'] / mu_total - 1:+.1%} | "
              f"{s['train_flops_per_token'] / 1e6:.2f} | {r['lr']:g} ({trials}) | {speeds[name]:,.0f} ({in_runs:,.0f}) | "
              "{:.1f} ± {:.1f}".format(*r["equal_time_test_perplexity"])
              + f" ({r['equal_time'][0]['tokens'] / 1e6:.2f}M tokens) | "
              "{:.1f} ± {:.1f} |".format(*r["equal_tokens_test_perplexity"]))
    print(f"| bigram (interpolated, λ={lam:.2f}, same tokenizer) | | | | | | {bigram:.1f} | {bigram:.1f} |")
    best = min(results, key=lambda k: results[k]["equal_time_test_perplexity"][0])
    best_ppl = results[best]["equal_time_test_perplexity"][0]
    print(f"\nbest at equal time: {best}, {best_ppl:.1f} against the bigram's {bigram:.1f}: "
          + ("beats it" if best_ppl < bigram else "does not beat it in this budget (see the curves)"))
    edges = [name for name, r in results.items() if r["lr"] in (min(r["trials"]), max(r["trials"]))]
    if edges:
        print(f"learning rate still at the edge of the rates tried for: {', '.join(edges)} (a wider --lrs may do better)")
    print(f"held-out perplexity vs tokens seen: {args.png}", flush=True)
    return {"vocab": vocab, "budget_s": args.budget_s, "trial_fraction": args.trial_fraction, "lrs": list(args.lrs),
            "seeds": seeds, "chunks": args.chunks, "steps": steps, "equal_tokens": equal_tokens, "sizes": sizes,
            "calibrated_tokens_per_s": speeds, "models": results, "bigram_perplexity": bigram,
            "bigram_lambda": lam, "png": str(args.png)}


def main() -> None:
    """Parse the options, run the speed section and the comparison, print the duration and the JSON line."""
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per speed figure")
    parser.add_argument("--budget-s", type=float, default=90.0,
                        help="training seconds per seed run (90: the whole benchmark ~56 min on 2 cores, under 75)")
    parser.add_argument("--trial-fraction", type=float, default=0.5,
                        help="length of a learning-rate trial, as a share of the seed run's steps")
    parser.add_argument("--lrs", type=lambda s: tuple(float(x) for x in s.split(",")), default=LRS,
                        help="learning rates tried per model, comma-separated (at least 3)")
    parser.add_argument("--extend", type=int, default=3,
                        help="learning rates tried beyond --lrs, one grid step at a time, while the best is at an edge")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model at its chosen learning rate")
    parser.add_argument("--chunks", type=int, default=8, help="held-out scores per training run")
    parser.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary of the comparison")
    parser.add_argument("--png", default=None, help="the curves' PNG (default bench/mu_perplexity.png; "
                                                    "with --quick, the temporary directory)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (0: torch's default); 1 because on the shared 2-core machine two "
                             "threads of these small ops wait on each other (--quick: 3.1 min with 2, 0.8 with 1)")
    parser.add_argument("--quick", action="store_true", help="check that it all runs: tiny budgets, about a minute")
    parser.add_argument("--skip-speed", action="store_true", help="only the comparison (exit 2 if it cannot run)")
    parser.add_argument("--skip-comparison", action="store_true", help="only the speed section and the layer profile")
    parser.add_argument("--corpus", default=str(CORPUS), help=f"folder with {' and '.join(CORPUS_FILES)} (default: "
                                                              "../shared/corpus beside the repository)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.budget_s, args.chunks, args.seeds, args.vocab = 1, 0.5, 2, 2, 1024
    if args.png is None:
        folder = Path(tempfile.gettempdir()) if args.quick else Path(__file__).resolve().parent
        args.png = str(folder / ("mu_perplexity_quick.png" if args.quick else "mu_perplexity.png"))
    results: dict = {"threads": torch.get_num_threads(), "quick": args.quick}
    params = MU(MUConfig(vocab_size=50_000, n_layers=LAYERS, max_seq_len=SEQ)).num_parameters()
    results["parameters_test_preset_vocab50k"] = params
    print(f"parameters:   {params:,} (test preset: {LAYERS} layers, seq {SEQ}, vocab 50,000)", flush=True)
    if not args.skip_speed:
        results["speed"] = speed(args.rounds, 20 if args.quick else 120, args.vocab)
    missing = [name for name in CORPUS_FILES if not (Path(args.corpus) / name).is_file()]
    not_run = None
    if args.skip_comparison:
        pass
    elif missing:
        not_run = (f"the comparison was not run: {', '.join(missing)} not found in {args.corpus} (it trains on "
                   "wikitext2_valid.txt and scores on wikitext2_test.txt, the validation and test splits of WikiText-2, "
                   "word-level with <unk>, one line of text per line; put them in ../shared/corpus beside the "
                   "repository, or pass --corpus DIR)")
        if not (args.quick or args.skip_speed):  # otherwise it ends the run as an error, below
            print(f"bench/mu.py: note: {not_run}", file=sys.stderr, flush=True)
        results["not_run"] = {"comparison": not_run}
    else:
        results["comparison"] = compare(args)
    results["duration_s"] = time.perf_counter() - started
    print(f"duration:     {results['duration_s'] / 60:.1f} min (limit for the full benchmark: 75 min)", flush=True)
    print(json.dumps(results))
    if not_run and (args.quick or args.skip_speed):  # the comparison was the point (or part of the check of everything)
        print(f"bench/mu.py: error: {not_run}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
