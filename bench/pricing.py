"""Pricing benchmark: the default preset against two baselines, all fitted on the same train rows.

Fits on ../shared/data/train.csv and measures on ../shared/data/holdout.csv (never fitted on).
Each approach runs in its own process so its peak RSS is its own. Prints a table, then one JSON
object as the last line. `smartprice predict` is timed end to end (process start, model load,
reading, writing) on test_unlabeled.csv.

    python bench/pricing.py [--preset cpu] [--baseline-trees 500]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_preset(preset: str, sets: list[str]) -> dict:
    """Fit a smartprice preset, score holdout, then time `smartprice predict` as a user runs it."""
    import pandas as pd

    from smartprice import PricePredictor, read_catalog
    from smartprice.cli import parse_sets

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
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "smartprice", "-q", "predict", str(Path(tmp) / "model"), str(test),
                        "--out", str(Path(tmp) / "out.csv")], check=True)
        predict_s = time.perf_counter() - started
        out = pd.read_csv(Path(tmp) / "out.csv")
        assert len(out) == rows and (out.price > 0).all()
        stress = read_catalog(DATA / "stress_extremes.csv", labelled=True) if (DATA / "stress_extremes.csv").exists() else None
    return {"holdout_smape": report["smape"], "by_band": {k: round(v["smape"], 2) for k, v in report["by_band"].items()},
            "stress_smape": model.score(stress)["smape"] if stress is not None else None,
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
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--baseline-trees", type=int, default=600, help="LightGBM rounds of the TF-IDF+LightGBM baseline")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one approach in this process
    args = parser.parse_args()
    if not (DATA / "train.csv").exists():
        sys.exit(f"bench/pricing.py needs the shared data: {DATA / 'train.csv'} is absent")
    if args.one:
        result = run_preset(args.preset, args.sets) if args.one == "preset" else run_baseline(args.one, args.baseline_trees)
        print(json.dumps(result))
        return
    approaches = ["preset"] + ([] if args.skip_baselines else ["tfidf_ridge", "tfidf_lightgbm"])
    results = {}
    for approach in approaches:
        command = [sys.executable, __file__, "--one", approach, "--preset", args.preset,
                   "--baseline-trees", str(args.baseline_trees)] + [f"--set={s}" for s in args.sets]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        name = f"smartprice_{args.preset}" if approach == "preset" else approach
        results[name] = json.loads(output.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:22s} holdout SMAPE {r['holdout_smape']:6.2f}  fit {r['fit_s']:7.1f} s  "
              f"predict {r['predict_rows_per_s']:8.0f} rows/s  peak RSS {r['peak_rss_mib']:7.0f} MiB", flush=True)
    ours = results[f"smartprice_{args.preset}"]
    for base in ("tfidf_ridge", "tfidf_lightgbm"):
        if base in results:
            print(f"  vs {base}: SMAPE {ours['holdout_smape'] - results[base]['holdout_smape']:+.2f} points, "
                  f"fit time x{ours['fit_s'] / results[base]['fit_s']:.2f}")
    print(json.dumps({"preset": args.preset, "sets": args.sets, "results": results}))


if __name__ == "__main__":
    main()
