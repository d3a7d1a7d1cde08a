"""Which loss trains the minilm preset best? A split of train.csv only (holdout is never used).

Fits the minilm preset once per loss on 75% of train.csv and reports SMAPE on the other 25%.
Last line: one JSON object.

    python bench/losses.py [--epochs 1] [--rows 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import DATA, require_data

from smartprice import PricePredictor, read_catalog
from smartprice.losses import LOSSES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rows", type=int, default=0, help="use only this many train.csv rows (0 = all)")
    args = parser.parse_args()
    require_data("bench/losses.py", "train.csv")
    frame = read_catalog(DATA / "train.csv", labelled=True)
    if args.rows:
        frame = frame.iloc[:args.rows]
    order = np.random.default_rng(0).permutation(len(frame))
    cut = int(len(frame) * 0.75)
    fit_rows, measure_rows = frame.iloc[order[:cut]], frame.iloc[order[cut:]]
    results = {}
    for loss in LOSSES:
        started = time.perf_counter()
        model = PricePredictor("minilm", loss=loss, loop={"epochs": args.epochs, "progress": False}).fit(fit_rows)
        results[loss] = {"smape": model.score(measure_rows)["smape"], "fit_s": time.perf_counter() - started}
        print(f"{loss:12s} SMAPE {results[loss]['smape']:6.2f} on {len(measure_rows)} held-out train rows "
              f"({results[loss]['fit_s']:.0f} s)", flush=True)
    best = min(results, key=lambda k: results[k]["smape"])
    print(f"best: {best}")
    print(json.dumps({"epochs": args.epochs, "fit_rows": len(fit_rows), "measure_rows": len(measure_rows),
                      "results": results, "best": best}))


if __name__ == "__main__":
    main()
