"""Fine-tuning benchmark (CPU): the minilm preset and the blend on train.csv, measured on holdout.csv.

In one run: (1) training samples/s of the shared loop, of a bare PyTorch loop doing the same
steps on the same batches, and of the shared loop without length grouping; (2) the blend preset
(minilm fine-tuned + the CPU stack, weight fitted on held-out train rows), scored on holdout with
its minilm part alone. Last line: one JSON object.

    python bench/finetune.py [--epochs 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch
from common import DATA, require_data

from smartprice import PricePredictor, read_catalog, smape
from smartprice.fusion import Collate, FusionRegressor, ListingSet
from smartprice.losses import price_loss
from smartprice.presets import preset_to_dict, resolve_preset
from trainloop import train
from trainloop.sampling import EpochSampler


def build(preset, texts, y):
    """A fresh minilm FusionNet and its dataset, as FusionRegressor.fit builds them."""
    from transformers import AutoModel, AutoTokenizer

    from smartprice.encoders import encoder_location
    from smartprice.fusion import FusionNet

    regressor = FusionRegressor(preset)
    location = encoder_location(preset.encoder)
    regressor.tokenizer_ = AutoTokenizer.from_pretrained(location)
    features = regressor.features(texts, fit=True)
    ids = regressor.tokenise(texts)
    torch.manual_seed(0)
    net = FusionNet(AutoModel.from_pretrained(location), features.shape[1], preset, "mean", float(y.mean()))
    return net, ListingSet(ids, features, np.expm1(y)), Collate(regressor.tokenizer_.pad_token_id or 0), ids


def loop_speed(preset, texts, y, steps: int, grouping: bool) -> float:
    net, data, collate, ids = build(preset, texts, y)
    config = replace(preset.loop, epochs=1, warmup=0.2, warmup_max_steps=5, max_steps_per_epoch=steps,
                     progress=False, num_workers=0)

    def loss_fn(model, batch):
        z = model(batch["input_ids"], batch["attention_mask"], batch["features"])
        return price_loss(z, batch["price"], preset.loss), len(z)

    lengths = [len(i) for i in ids]
    with tempfile.TemporaryDirectory() as out:
        return train(net, data, collate, loss_fn, config, out,
                     length_of=lengths.__getitem__ if grouping else None, seed=preset.seed).samples_per_s


def bare_speed(preset, texts, y, steps: int) -> float:
    """Plain PyTorch: same batches (length-grouped sampler), AdamW, clipping, warmup+cosine; no Accelerate."""
    net, data, collate, ids = build(preset, texts, y)
    lengths = [len(i) for i in ids]
    loop = preset.loop
    sampler = EpochSampler(len(data), loop.batch_size, 0, lengths.__getitem__)
    optimizer = torch.optim.AdamW(net.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    total = math.ceil(steps / loop.grad_accum)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 5) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    net.train()
    started = time.perf_counter()
    for index, rows in enumerate(sampler):
        if index >= steps:
            break
        batch = collate([data[i] for i in rows])
        z = net(batch["input_ids"], batch["attention_mask"], batch["features"])
        (price_loss(z, batch["price"], preset.loss) / loop.grad_accum).backward()
        if (index + 1) % loop.grad_accum == 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    return steps * loop.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="minilm epochs in the blend run")
    parser.add_argument("--steps", type=int, default=24, help="micro-batches per throughput figure")
    parser.add_argument("--skip-blend", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    require_data("bench/finetune.py", "train.csv")
    train_frame = read_catalog(DATA / "train.csv", labelled=True)
    holdout = read_catalog(DATA / "holdout.csv", labelled=True)
    texts, y = train_frame.catalog_content.tolist(), np.log1p(train_frame.price.to_numpy())
    preset = resolve_preset("minilm", {"loop.progress": False})
    results: dict = {"threads": torch.get_num_threads(), "minilm": preset_to_dict(preset)}

    # Interleaved, best of two each: this machine's speed drifts more than the differences measured.
    loop = bare = ungrouped = 0.0
    for _ in range(0 if args.skip_throughput else 2):
        loop = max(loop, loop_speed(preset, texts, y, args.steps, grouping=True))
        bare = max(bare, bare_speed(preset, texts, y, args.steps))
        ungrouped = max(ungrouped, loop_speed(preset, texts, y, args.steps, grouping=False))
    if not args.skip_throughput:
        results["throughput"] = {"loop_samples_per_s": loop, "bare_samples_per_s": bare,
                                 "loop_overhead": 1 - loop / bare, "ungrouped_samples_per_s": ungrouped,
                                 "grouping_speedup": loop / ungrouped}
        print(f"samples/s: loop {loop:.1f}, bare PyTorch {bare:.1f} (overhead {1 - loop / bare:+.1%}), "
              f"loop without length grouping {ungrouped:.1f} (grouping x{loop / ungrouped:.2f})", flush=True)

    if not args.skip_blend:
        started = time.perf_counter()
        model = PricePredictor("blend", **{"fusion.loop.epochs": args.epochs,
                                           "fusion.loop.progress": False}).fit(train_frame)
        fit_s = time.perf_counter() - started
        blend = model.model_
        holdout_texts = holdout.catalog_content.tolist()
        truth = holdout.price.to_numpy()
        cpu_log, fusion_log = blend.cpu_.predict(holdout_texts), blend.fusion_.predict(holdout_texts)
        results["blend_run"] = {
            "fit_s": fit_s, "weight": blend.weight_, "held_out_train_rows": blend.valid_scores_,
            "minilm_history": blend.fusion_.history_, "minilm_train_samples_per_s": blend.fusion_.samples_per_s_,
            "holdout_smape_cpu": smape(np.expm1(cpu_log), truth),
            "holdout_smape_minilm": smape(np.expm1(fusion_log), truth),
            "holdout_smape_blend": model.score(holdout)["smape"]}
        r = results["blend_run"]
        print(f"holdout SMAPE: cpu {r['holdout_smape_cpu']:.2f}, minilm {r['holdout_smape_minilm']:.2f}, "
              f"blend {r['holdout_smape_blend']:.2f} (weight {r['weight']:.2f}); fit {fit_s:.0f} s, "
              f"minilm {r['minilm_train_samples_per_s']:.1f} samples/s", flush=True)
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
