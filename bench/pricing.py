"""Pricing benchmark: presets against two baselines, all fitted on the same train rows.

Fits on ../shared/data/train.csv and measures on ../shared/data/holdout.csv (never fitted on).
`--cv` adds 5-fold CV SMAPE (± standard error) on train.csv through `smartprice.cv`, the figure
presets are chosen by. `--scale` fits the first preset on train.csv repeated 11 times with
perturbed text (~76k rows) and reports fit seconds and peak RSS. Each approach runs in its own process so
its peak RSS is its own. Prints a table, then one JSON object as the last line. `smartprice
predict` is timed end to end (process start, model load, reading, writing) on test_unlabeled.csv.

    python bench/pricing.py [--presets cpu,cpu-fast] [--cv] [--scale] [--skip-baselines]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, SMARTPRICE, machine, optional_data, peak_rss_mib, perturbed_copies, require_data, run_timed


def run_cv(preset: str, sets: list[str]) -> dict:
    """5-fold CV on train.csv (the folds `smartprice cv` uses): pooled SMAPE, its standard error, fit seconds."""
    from sharedcore.overrides import parse_sets
    from smartprice import read_catalog
    from smartprice.cv import cross_validate

    summary = cross_validate(read_catalog(DATA / "train.csv", labelled=True), preset, parse_sets(sets)).summary()
    return {"cv_smape": summary["smape"], "cv_se": summary["se"], "cv_fit_s": summary["mean_fit_seconds"],
            "peak_rss_mib": peak_rss_mib()}


def run_scale(preset: str, sets: list[str]) -> dict:
    """Fit on train.csv repeated 11 times with perturbed text (~76k rows): fit seconds and peak RSS."""
    from sharedcore.overrides import parse_sets
    from smartprice import PricePredictor, read_catalog

    frame = perturbed_copies(read_catalog(DATA / "train.csv", labelled=True), 11)
    started = time.perf_counter()
    PricePredictor(preset=preset, **parse_sets(sets)).fit(frame)
    return {"scale_rows": len(frame), "scale_fit_s": time.perf_counter() - started, "scale_peak_rss_mib": peak_rss_mib()}


def run_preset(preset: str, sets: list[str]) -> dict:
    """Fit a smartprice preset, score holdout, then time `smartprice predict` as a user runs it."""
    import pandas as pd

    from sharedcore.overrides import parse_sets
    from smartprice import PricePredictor, read_catalog

    train = read_catalog(DATA / "train.csv", labelled=True)
    holdout = read_catalog(DATA / "holdout.csv", labelled=True)
    started = time.perf_counter()
    model = PricePredictor(preset=preset, **parse_sets(sets)).fit(train)
    fit_s = time.perf_counter() - started
    report = model.score(holdout)
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "model")
        test = DATA / "test_unlabeled.csv"
        rows = len(pd.read_csv(test, usecols=["sample_id"]))
        predict_s = run_timed([*SMARTPRICE, "predict", str(Path(tmp) / "model"), str(test),
                               "--out", str(Path(tmp) / "out.csv")])["seconds"]
        out = pd.read_csv(Path(tmp) / "out.csv")
        assert len(out) == rows and (out.price > 0).all()
        skipped = optional_data("bench/pricing.py", "the stress SMAPE", "stress_extremes.csv")
        stress = read_catalog(DATA / "stress_extremes.csv", labelled=True) if skipped is None else None
    return {"holdout_smape": report["smape"], "by_band": {k: round(v["smape"], 2) for k, v in report["by_band"].items()},
            "stress_smape": model.score(stress)["smape"] if stress is not None else None,
            "skipped": {"stress_smape": skipped} if skipped else {},
            "fit_s": fit_s, "predict_rows_per_s": rows / predict_s, "predict_rows": rows,
            "peak_rss_mib": peak_rss_mib()}


def run_baseline(name: str, trees: int) -> dict:
    """TF-IDF + Ridge (word 1-2 + char 2-5) or TF-IDF (20k words) + LightGBM (L1), on log1p(price)."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    from smartprice import read_catalog, smape

    train = read_catalog(DATA / "train.csv", labelled=True)
    holdout = read_catalog(DATA / "holdout.csv", labelled=True)
    test = read_catalog(DATA / "test_unlabeled.csv")
    y = np.log1p(train.price.to_numpy())
    started = time.perf_counter()
    if name == "tfidf_ridge":
        word = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True)
        x = sp.hstack([word.fit_transform(train.catalog_content), char.fit_transform(train.catalog_content)]).tocsr()
        model = Ridge(alpha=1.0).fit(x, y)

        def predict(frame):
            return model.predict(sp.hstack([word.transform(frame.catalog_content),
                                            char.transform(frame.catalog_content)]).tocsr())
    else:
        import lightgbm as lgb

        word = TfidfVectorizer(ngram_range=(1, 2), max_features=20000, sublinear_tf=True, dtype=np.float32)
        x = word.fit_transform(train.catalog_content)
        params = {"objective": "regression_l1", "learning_rate": 0.05, "num_leaves": 63, "num_threads": 2,
                  "verbose": -1, "seed": 0, "feature_fraction": 0.5}
        booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=trees)

        def predict(frame):
            return booster.predict(word.transform(frame.catalog_content))
    fit_s = time.perf_counter() - started
    holdout_pred = np.expm1(predict(holdout))
    started = time.perf_counter()
    predict(test)
    predict_s = time.perf_counter() - started
    return {"holdout_smape": smape(np.clip(holdout_pred, 0.01, None), holdout.price.to_numpy()), "fit_s": fit_s,
            "predict_rows_per_s": len(test) / predict_s, "predict_rows": len(test), "peak_rss_mib": peak_rss_mib(),
            "note": "predict timed in-process (transform + model), no load or file I/O"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="cpu", help="comma-separated presets to measure (default: cpu)")
    parser.add_argument("--preset", help=argparse.SUPPRESS)  # internal: the preset of one --one run
    parser.add_argument("--cv", action="store_true", help="also 5-fold CV SMAPE on train.csv per preset")
    parser.add_argument("--scale", action="store_true", help="also the ~76k-row fit (train.csv x11, perturbed)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--baseline-trees", type=int, default=600, help="LightGBM rounds of the TF-IDF+LightGBM baseline")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one approach in this process
    args = parser.parse_args()
    require_data("bench/pricing.py", "train.csv", "holdout.csv", "test_unlabeled.csv")
    runners = {"preset": run_preset, "cv": run_cv, "scale": run_scale}
    if args.one:
        result = runners[args.one](args.preset, args.sets) if args.one in runners else run_baseline(args.one, args.baseline_trees)
        print(json.dumps(result))
        return
    presets = [p for p in args.presets.split(",") if p]
    jobs = [(p, kind) for p in presets for kind in ["preset"] + ["cv"] * args.cv + ["scale"] * (args.scale and p == presets[0])]
    jobs += [] if args.skip_baselines else [(None, "tfidf_ridge"), (None, "tfidf_lightgbm")]
    results: dict[str, dict] = {}

    def one(preset: str | None, kind: str) -> dict:
        command = [sys.executable, __file__, "--one", kind, "--preset", preset or "cpu",
                   "--baseline-trees", str(args.baseline_trees)] + [f"--set={s}" for s in args.sets]
        return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])

    for preset, kind in jobs:
        name = f"smartprice_{preset}" if preset else kind
        r = one(preset, kind)
        results.setdefault(name, {}).update({k: v for k, v in r.items() if not (k == "peak_rss_mib" and kind != "preset")})
        if "holdout_smape" in r:
            print(f"{name:22s} holdout SMAPE {r['holdout_smape']:6.2f}  fit {r['fit_s']:7.1f} s  "
                  f"predict {r['predict_rows_per_s']:8.0f} rows/s  peak RSS {r['peak_rss_mib']:7.0f} MiB", flush=True)
        if "cv_smape" in r:
            print(f"{name:22s} 5-fold CV SMAPE on train.csv {r['cv_smape']:6.2f} ± {r['cv_se']:.2f}  "
                  f"(fit {r['cv_fit_s']:.1f} s per fold)", flush=True)
        if "scale_fit_s" in r:
            print(f"{name:22s} {r['scale_rows']:,}-row fit {r['scale_fit_s']:7.1f} s  "
                  f"peak RSS {r['scale_peak_rss_mib']:7.0f} MiB", flush=True)
    for preset in presets:
        ours = results[f"smartprice_{preset}"]
        for base in ("tfidf_ridge", "tfidf_lightgbm"):
            if base in results:
                print(f"  {preset} vs {base}: SMAPE {ours['holdout_smape'] - results[base]['holdout_smape']:+.2f} points, "
                      f"fit time x{ours['fit_s'] / results[base]['fit_s']:.2f}")
    print(json.dumps({"presets": presets, "sets": args.sets, "machine": machine(), "results": results}))


if __name__ == "__main__":
    main()
