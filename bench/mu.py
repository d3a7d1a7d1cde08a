"""MU benchmark (CPU), all in one run; last line is one JSON object.

0. the parameter count at the test preset's shapes (6 layers, seq 128) and vocabulary 50,000;
1. training tokens/s (forward, backward, AdamW) of the fused and literal block attentions at the
   test preset's shapes (batch 8, seq 128, 6 layers), vocabulary 256 and 50,000;
2. tokens/s of the output projection + cross-entropy (+ its AdamW step) alone at 50,000: a bound;
3. generation tokens/s with and without the KV cache (120 new tokens at seq 128);
4. a fixed training budget on wikitext2_valid, then test perplexity next to a bigram baseline
   built with the same tokenizer in this run.

    python bench/mu.py [--budget-s 720] [--vocab 8192]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

# This script shares its name with the package it measures: take its own folder off the import
# path so that `import mu` finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mu import MU, MUConfig  # noqa: E402
from mu.data import encode_corpus, read_lines  # noqa: E402
from mu.generate import generate  # noqa: E402
from mu.train import eval_windows, evaluate, load_model, resolve, train_mu  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
BATCH, SEQ, LAYERS = 8, 128, 6


def step_tokens_per_s(model: torch.nn.Module, vocab: int, steps: int, warmup: int = 2) -> float:
    """Training tokens/s of full steps on random tokens."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    batch = torch.randint(0, vocab, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0))
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), batch[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * BATCH * SEQ / (time.perf_counter() - started)


def layer_throughput(vocab: int, steps: int) -> dict[str, float]:
    out = {}
    for kind in ("fused", "literal"):
        torch.manual_seed(0)
        out[kind] = step_tokens_per_s(MU(MUConfig(vocab_size=vocab, n_layers=LAYERS, max_seq_len=SEQ,
                                                  block_attention=kind)), vocab, steps)
    return out


def output_layer_bound(vocab: int, steps: int) -> float:
    """Tokens/s of LayerNorm'd hidden -> Linear(64, V) -> cross-entropy, backward and AdamW: every model pays this."""
    head = torch.nn.Linear(64, vocab)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4, weight_decay=0.01)
    hidden = torch.randn(BATCH, SEQ, 64, requires_grad=True)
    target = torch.randint(0, vocab, (BATCH, SEQ))
    for i in range(steps + 2):
        if i == 2:
            started = time.perf_counter()
        loss = F.cross_entropy(head(hidden).reshape(-1, vocab), target.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * BATCH * SEQ / (time.perf_counter() - started)


def generation_speed(vocab: int, new_tokens: int = 120) -> dict[str, float]:
    torch.manual_seed(0)
    model = MU(MUConfig(vocab_size=vocab, n_layers=LAYERS, max_seq_len=SEQ)).eval()
    prompt = list(range(4, 12))
    out = {}
    for cached in (True, False):
        started = time.perf_counter()
        tokens = generate(model, prompt, new_tokens, seed=0, use_cache=cached)
        out["cached" if cached else "uncached"] = len(tokens) / (time.perf_counter() - started)
    return out


def bigram_perplexity(train_ids: torch.Tensor, windows, vocab: int) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per throughput figure")
    parser.add_argument("--budget-s", type=float, default=720.0, help="training budget (<= 900 s)")
    parser.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary of the budget run")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict = {"threads": torch.get_num_threads()}
    params = MU(MUConfig(vocab_size=50_000, n_layers=LAYERS, max_seq_len=SEQ)).num_parameters()
    results["parameters_test_preset_vocab50k"] = params
    print(f"parameters:   {params:,} (test preset: {LAYERS} layers, seq {SEQ}, vocab 50,000)", flush=True)

    small = layer_throughput(256, args.steps * 3)
    results["layers_vocab256"] = small | {"fused_vs_literal": small["fused"] / small["literal"]}
    print(f"vocab 256:    fused {small['fused']:8.0f} tok/s  literal {small['literal']:8.0f} tok/s  "
          f"ratio x{small['fused'] / small['literal']:.2f}", flush=True)
    large = layer_throughput(50_000, args.steps)
    bound = output_layer_bound(50_000, args.steps)
    results["layers_vocab50k"] = large | {"fused_vs_literal": large["fused"] / large["literal"]}
    results["output_layer_bound_vocab50k"] = bound
    results["fused_vs_bound"] = large["fused"] / bound
    print(f"vocab 50000:  fused {large['fused']:8.0f} tok/s  literal {large['literal']:8.0f} tok/s  "
          f"output-layer bound {bound:8.0f} tok/s  fused/bound {large['fused'] / bound:.0%}", flush=True)
    gen = generation_speed(50_000)
    results["generation"] = gen | {"speedup": gen["cached"] / gen["uncached"]}
    print(f"generation:   cached {gen['cached']:6.1f} tok/s  uncached {gen['uncached']:6.1f} tok/s  "
          f"x{gen['cached'] / gen['uncached']:.2f}", flush=True)

    if not args.skip_training and (CORPUS / "wikitext2_valid.txt").exists():
        # The last 5% of the training text is held out so the loop keeps the best epoch: with ~250k
        # tokens the model overfits after a few epochs (a first run without it ended at 226 vs 157).
        lines = read_lines([CORPUS / "wikitext2_valid.txt"])
        cut = int(len(lines) * 0.95)
        preset = resolve("test", {"vocab_size": args.vocab, "epochs": 5, "lr": 2e-3, "warmup_steps": 50,
                                  "grad_accum": 1, "time_budget_s": min(args.budget_s, 900.0), "progress": False})
        with tempfile.TemporaryDirectory() as out:
            fit_file, held_file = Path(out) / "fit.txt", Path(out) / "held.txt"
            fit_file.write_text("\n".join(lines[:cut]))
            held_file.write_text("\n".join(lines[cut:]))
            started = time.perf_counter()
            history = train_mu([str(fit_file)], [str(held_file)], Path(out) / "model", preset).history
            train_s = time.perf_counter() - started
            model, tokenizer = load_model(Path(out) / "model")
            test = eval_windows(encode_corpus(tokenizer, read_lines([CORPUS / "wikitext2_test.txt"])), SEQ)
            metrics = evaluate(model, test)
            train_ids = encode_corpus(tokenizer, lines)
            bigram, lam = bigram_perplexity(train_ids, test, tokenizer.get_vocab_size())
        results["budget_run"] = {"train_s": train_s, "epochs": len(history), "vocab": tokenizer.get_vocab_size(),
                                 "history": history,
                                 "test_perplexity": metrics["perplexity"], "test_accuracy": metrics["accuracy"],
                                 "bigram_perplexity": bigram, "bigram_lambda": lam}
        print(f"budget run:   {train_s:.0f} s, {len(history)} epochs, vocab {tokenizer.get_vocab_size()}: "
              f"test perplexity {metrics['perplexity']:.1f} vs bigram {bigram:.1f}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
