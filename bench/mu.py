"""MU benchmark (CPU), all in one run; last line is one JSON object.

Speed (vocabulary 50,000 unless said; batch 8, seq 128, 6 layers: the test preset's shapes):
1. parameters of the test preset;
2. training tokens/s (forward, backward, AdamW) of the fused and literal block attentions at
   vocabulary 256 and 50,000, and of the output layer alone (Linear(64, V) + cross-entropy + its
   AdamW step): a bound every model pays. Steps are timed in interleaved rounds (model, bound,
   model, ...) and the medians compared, so that a change in the machine's load hits both alike.
   AdamW is built as the training loop builds it (torch defaults); the same figures with
   AdamW(fused=True) are printed beside them;
3. generation tokens/s with and without the KV cache (120 new tokens at seq 128), alternating.

Comparison (does MU's design help?): MU, MU gate=off, MU block_attention=off, MU without both (a
post-LN transformer), a pre-LN transformer of MU's width and depth and one of MU's total parameter
count, each trained by `train_mu` (same
tokenizer, windows, loop, optimizer, schedule, seed) on 95% of wikitext2_valid:
- equal time: each model gets the optimizer steps it runs in --budget-s seconds, from a throughput
  calibration of all models in interleaved rounds at the start (so the schedule is sized to the run
  and the machine's load during the runs does not change what is trained; the seconds each run
  actually trained are printed);
- equal tokens: each model trained for the steps the slowest model gets (same schedule length);
then perplexity on wikitext2_test (same tokenizer, non-overlapping windows) in one table with an
interpolated bigram baseline, and a PNG of validation perplexity (the held-out 5%) against tokens seen.

Budget: 90 s of training per model. MU, the slowest, then sees ~190k tokens (0.8 epoch of the
~245k training tokens; the validation curves are still falling, so this compares early training,
not converged models); 6 equal-time runs (540 s), 5 equal-token runs at MU's token count (~300 s),
11 test evaluations, per-run overhead and the speed section make ~22-25 minutes on this 2-core
machine alone (31 minutes measured while other jobs shared its cores), about the limit we set for
a benchmark that is rerun after changes.

    python bench/mu.py [--budget-s 90] [--vocab 8192] [--png bench/mu_perplexity.png] [--quick]

--quick checks that everything runs (tiny budgets, a slice of the test text) in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# This script shares its name with the package it measures: take its own folder off the import
# path so that `import mu` finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mu import MU, MUConfig  # noqa: E402
from mu.data import TokenWindows, encode_corpus, read_lines  # noqa: E402
from mu.generate import generate  # noqa: E402
from mu.model import build_model, parameter_counts, resolve_width, training_flops_per_token  # noqa: E402
from mu.tokenizer import train_tokenizer  # noqa: E402
from mu.train import eval_windows, evaluate, load_model, resolve, train_mu  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
BATCH, SEQ, LAYERS = 8, 128, 6
# The models compared: name -> `--set` overrides of the test preset.
MODELS = {
    "MU": {},
    "MU gate=off": {"gate": "off"},
    "MU block_attention=off": {"block_attention": "off"},
    # Without both parts MU *is* a post-LN transformer of width 64 (x_new = LN(z + FFN(z)), z = LN(x + attn)):
    # it separates what the parts do from what post-LN does against the pre-LN baselines below.
    "MU gate=off block_attention=off (post-LN transformer)": {"gate": "off", "block_attention": "off"},
    "transformer (MU's width, depth)": {"arch": "transformer"},
    "transformer (MU's parameters)": {"arch": "transformer", "width": 0},
}
# Training settings shared by every model of the comparison (the test preset's otherwise).
SHARED = {"lr": 2e-3,              # small models, short runs: 2e-3 reached lower loss than 3e-4 in 2 min
          "grad_accum": 1,          # a step per batch of 8 windows: more steps in a short budget
          "warmup_steps": 50,       # cap; the loop warms up for at most 10% of the run
          "sample_tokens": 0, "progress": False, "seed": 0}


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


def train_step(model: torch.nn.Module, vocab: int, fused_adamw: bool = False) -> Callable[[], None]:
    """One training step (forward, cross-entropy, backward, AdamW) on fixed random tokens."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=fused_adamw or None)
    batch = torch.randint(0, vocab, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0))
    model.train()

    def step() -> None:
        logits = model(batch[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.reshape(-1, vocab), batch[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def output_layer_step(vocab: int, fused_adamw: bool = False) -> Callable[[], None]:
    """The bound: hidden (B, T, 64) -> Linear(64, V) -> cross-entropy, backward and AdamW; every model pays this."""
    head = torch.nn.Linear(64, vocab)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4, weight_decay=0.01, fused=fused_adamw or None)
    hidden = torch.randn(BATCH, SEQ, 64, requires_grad=True)
    target = torch.randint(0, vocab, (BATCH * SEQ,))

    def step() -> None:
        F.cross_entropy(head(hidden).reshape(-1, vocab), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def mu_model(vocab: int, **config) -> MU:
    torch.manual_seed(0)
    return MU(MUConfig(vocab_size=vocab, n_layers=LAYERS, max_seq_len=SEQ, **config))


def speed(rounds: int, new_tokens: int) -> dict:
    """Sections 1-3 of the module docstring."""
    out: dict = {}
    tokens = BATCH * SEQ
    small = median_seconds({kind: train_step(mu_model(256, block_attention=kind), 256)
                            for kind in ("fused", "literal")}, 2 * rounds)
    out["vocab256_tokens_per_s"] = {k: tokens / s for k, s in small.items()}
    print(f"vocab 256:    fused {tokens / small['fused']:8.0f} tok/s  literal {tokens / small['literal']:8.0f} tok/s  "
          f"fused/literal x{small['literal'] / small['fused']:.2f}", flush=True)
    large = median_seconds({"fused": train_step(mu_model(50_000), 50_000),
                            "literal": train_step(mu_model(50_000, block_attention="literal"), 50_000),
                            "bound": output_layer_step(50_000),
                            "fused, AdamW(fused=True)": train_step(mu_model(50_000), 50_000, fused_adamw=True),
                            "bound, AdamW(fused=True)": output_layer_step(50_000, fused_adamw=True)}, rounds)
    out["vocab50k_tokens_per_s"] = {k: tokens / s for k, s in large.items()}
    out["fused_vs_bound"] = large["bound"] / large["fused"]
    out["fused_vs_bound_fused_adamw"] = large["bound, AdamW(fused=True)"] / large["fused, AdamW(fused=True)"]
    print(f"vocab 50000:  fused {tokens / large['fused']:8.0f} tok/s  literal {tokens / large['literal']:8.0f} tok/s  "
          f"output-layer bound {tokens / large['bound']:8.0f} tok/s  fused/bound {out['fused_vs_bound']:.0%} "
          f"(target >= 80%); with AdamW(fused=True): {out['fused_vs_bound_fused_adamw']:.0%}", flush=True)

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


def run(name: str, steps: int, chunks: int, vocab: int, fit: Path, held: Path, test_lines: list[str],
        out: Path) -> dict:
    """Train one model for `steps` optimizer steps, evaluated on the held-out text `chunks` times; test perplexity."""
    per_chunk = max(1, steps // chunks)
    preset = resolve("test", {**SHARED, **MODELS[name], "vocab_size": vocab, "epochs": chunks,
                              "max_steps_per_epoch": per_chunk})
    started = time.perf_counter()
    result = train_mu([str(fit)], [str(held)], out, preset)
    wall_s = time.perf_counter() - started
    model, tokenizer = load_model(out)
    test = evaluate(model, eval_windows(encode_corpus(tokenizer, test_lines), SEQ))
    tokens_per_chunk = per_chunk * BATCH * SEQ
    best = min(result.history, key=lambda h: h["valid_loss"])
    return {"steps": per_chunk * chunks, "tokens": tokens_per_chunk * chunks,
            "train_s": per_chunk * chunks * BATCH / result.samples_per_s, "wall_s": wall_s,
            "curve": [(h["epoch"] * tokens_per_chunk, h["valid_perplexity"]) for h in result.history],
            "best_chunk": best["epoch"], "test_perplexity": test["perplexity"], "test_accuracy": test["accuracy"]}


def plot(results: dict, equal_tokens: int, png: Path) -> None:
    """Validation perplexity against training tokens seen: equal-time runs solid, equal-token runs dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in results.items():
        tokens, ppl = zip(*r["equal_time"]["curve"])
        line, = ax.plot([t / 1e6 for t in tokens], ppl, marker="o", markersize=3, label=name)
        if r["equal_tokens"] is not r["equal_time"]:
            tokens, ppl = zip(*r["equal_tokens"]["curve"])
            ax.plot([t / 1e6 for t in tokens], ppl, linestyle="--", linewidth=1, color=line.get_color())
    ax.axvline(equal_tokens / 1e6, color="grey", linestyle=":", label="equal-token point")
    ax.set_yscale("log")
    ax.set_xlabel("training tokens seen (millions)")
    ax.set_ylabel("validation perplexity (held-out 5%)")
    ax.set_title("wikitext2_valid: equal wall-clock budget (solid), equal tokens (dashed)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def compare(args: argparse.Namespace) -> dict:
    """The comparison of the module docstring; prints the table and returns everything measured."""
    lines = read_lines([CORPUS / "wikitext2_valid.txt"])
    test_lines = read_lines([CORPUS / "wikitext2_test.txt"])
    if args.quick:
        test_lines = test_lines[:200]
    cut = int(len(lines) * 0.95)  # the last 5% is held out for the validation curve (and the best chunk)
    tokenizer = train_tokenizer(lines[:cut], args.vocab)  # what train_mu trains on the same text (deterministic)
    vocab = tokenizer.get_vocab_size()
    sizes = {}
    for name, overrides in MODELS.items():
        config = resolve_width(MUConfig(vocab_size=vocab, n_layers=LAYERS, max_seq_len=SEQ, **overrides))
        counts = parameter_counts(build_model(config))
        sizes[name] = counts | {"train_flops_per_token": training_flops_per_token(config), "width": config.width}
    mu_total = sizes["MU"]["total"]
    speeds = calibrate(vocab, 1 if args.quick else 3)
    steps = {name: max(1, int(args.budget_s * s / (BATCH * SEQ))) for name, s in speeds.items()}
    equal_steps = min(steps.values())
    print(f"comparison:   vocab {vocab}, budget {args.budget_s:.0f} s/model; calibrated tok/s "
          + ", ".join(f"{n} {s:.0f}" for n, s in speeds.items()), flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        fit, held = Path(tmp) / "fit.txt", Path(tmp) / "held.txt"
        fit.write_text("\n".join(lines[:cut]))
        held.write_text("\n".join(lines[cut:]))
        for i, name in enumerate(MODELS):
            results[name] = {"equal_time": run(name, steps[name], args.chunks, args.vocab, fit, held, test_lines,
                                               Path(tmp) / f"time{i}")}
            if steps[name] // args.chunks == equal_steps // args.chunks:  # the slowest: the same run
                results[name]["equal_tokens"] = results[name]["equal_time"]
            else:
                results[name]["equal_tokens"] = run(name, equal_steps, args.chunks, args.vocab, fit, held, test_lines,
                                                    Path(tmp) / f"tokens{i}")
            r = results[name]
            print(f"  {name}: equal time {r['equal_time']['test_perplexity']:.1f} "
                  f"({r['equal_time']['tokens'] / 1e6:.2f}M tokens, {r['equal_time']['train_s']:.0f} s trained), "
                  f"equal tokens {r['equal_tokens']['test_perplexity']:.1f}", flush=True)
        train_ids = encode_corpus(tokenizer, lines)
        test_windows = eval_windows(encode_corpus(tokenizer, test_lines), SEQ)
        bigram, lam = bigram_perplexity(train_ids, test_windows, vocab)
    equal_tokens = results[min(steps, key=steps.get)]["equal_tokens"]["tokens"]
    plot(results, equal_tokens, Path(args.png))

    print(f"\n| model | parameters (non-embedding) | vs MU | train MFLOPs/token | tok/s | "
          f"test ppl, equal time ({args.budget_s:.0f} s) | test ppl, equal tokens ({equal_tokens / 1e6:.2f}M) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        s = sizes[name]
        print(f"| {name} | {s['total']:,} ({s['non_embedding']:,}) | {s['total'] / mu_total - 1:+.1%} | "
              f"{s['train_flops_per_token'] / 1e6:.2f} | {speeds[name]:.0f} | "
              f"{r['equal_time']['test_perplexity']:.1f} ({r['equal_time']['tokens'] / 1e6:.2f}M tokens) | "
              f"{r['equal_tokens']['test_perplexity']:.1f} |")
    print(f"| bigram (interpolated, λ={lam:.2f}) | | | | | {bigram:.1f} | {bigram:.1f} |")
    print(f"\nvalidation perplexity vs tokens seen: {args.png}", flush=True)
    return {"vocab": vocab, "budget_s": args.budget_s, "chunks": args.chunks, "equal_tokens": equal_tokens,
            "sizes": sizes, "calibrated_tokens_per_s": speeds, "models": results,
            "bigram_perplexity": bigram, "bigram_lambda": lam, "png": str(args.png)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per speed figure")
    parser.add_argument("--budget-s", type=float, default=90.0,
                        help="training seconds per model in the comparison (90: the whole benchmark stays within "
                             "about 25 minutes on 2 cores; see the module docstring)")
    parser.add_argument("--chunks", type=int, default=8, help="validation points per training run")
    parser.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary of the comparison")
    parser.add_argument("--png", default=str(Path(__file__).resolve().parent / "mu_perplexity.png"))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="check that it all runs: tiny budgets, minutes")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-comparison", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.budget_s, args.chunks = 1, 6.0, 2
    results: dict = {"threads": torch.get_num_threads(), "quick": args.quick}
    params = MU(MUConfig(vocab_size=50_000, n_layers=LAYERS, max_seq_len=SEQ)).num_parameters()
    results["parameters_test_preset_vocab50k"] = params
    print(f"parameters:   {params:,} (test preset: {LAYERS} layers, seq {SEQ}, vocab 50,000)", flush=True)
    if not args.skip_speed:
        results["speed"] = speed(args.rounds, 20 if args.quick else 120)
    if not args.skip_comparison and (CORPUS / "wikitext2_valid.txt").exists():
        results["comparison"] = compare(args)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
