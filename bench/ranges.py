"""Price ranges of the CPU default: calibration, width, and what they cost.

Fits on ../shared/data/train.csv only and measures once on holdout.csv (never fitted or tuned on)
and stress_extremes.csv (extreme and rare products: coverage expected lower there). Prints:
- coverage at 50/80/90/95% on holdout, by quintile of predicted price at 80%, on stress_extremes;
- width at 80%: the median range (price_high / price_low) of the adaptive ranges against constant-width
  conformal ranges calibrated on the same out-of-fold rows (one width for all; one per price band),
  and the constant width that would give the adaptive ranges' holdout coverage;
- whether width sorts listings by error: SMAPE of the narrowest third over that of the widest third;
- cost, alternating in one run: `smartprice train` with ranges against `--set range_method=none`,
  `smartprice predict` on test_unlabeled.csv with and without `--interval 0.8`, and one listing at a
  time in process (p50, p99) with and without a range.
`--cv` adds 5-fold CV coverage on train.csv (the folds `smartprice cv` uses). The last line is JSON.

    python bench/ranges.py [--rounds 2] [--cv]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DATA, require_data

LEVELS = (0.5, 0.8, 0.9, 0.95)
SINGLE_LISTINGS = 300


def smape(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(200 * np.abs(predicted - actual) / (np.abs(predicted) + np.abs(actual))))


def coverage(actual: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    return float(100 * np.mean((actual >= low) & (actual <= high)))


def quality(model, train_calibration, holdout, stress) -> dict:
    """Every coverage and width figure, on holdout (and stress_extremes) only."""
    from smartprice.ranges import PriceRanges

    actual = holdout["price"].to_numpy(float)
    prices, ranges = model.predict_ranges(holdout, list(LEVELS))
    out: dict = {"holdout_smape": smape(prices, actual), "levels": {}}
    for level, (low, high) in ranges.items():
        out["levels"][f"{level:g}"] = {"coverage": coverage(actual, low, high), "median_width": float(np.median(high / low))}
    low, high = ranges[0.8]
    edges = np.quantile(prices, [0.2, 0.4, 0.6, 0.8])
    quintile = np.searchsorted(edges, prices, side="right")
    out["quintiles_80"] = [coverage(actual[quintile == q], low[quintile == q], high[quintile == q]) for q in range(5)]
    width = high / low
    order = np.argsort(width, kind="stable")
    third = len(order) // 3
    out["narrow_third_smape"] = smape(prices[order[:third]], actual[order[:third]])
    out["wide_third_smape"] = smape(prices[order[-third:]], actual[order[-third:]])
    # constant-width conformal ranges, calibrated on the same out-of-fold rows as the adaptive ones
    held_out, y, _ = train_calibration
    log_price = np.log1p(prices)
    for name, bands in (("constant", 1), ("constant_by_band", 5)):
        constant = PriceRanges.calibrate(held_out, y, None, bands)
        lo, hi = (model._prices(b) for b in constant.interval(log_price, 0.8))
        out[name] = {"coverage": coverage(actual, lo, hi), "median_width": float(np.median(hi / lo))}
    # the one constant width that holds exactly the adaptive ranges' holdout coverage (an oracle, for comparison)
    error = np.abs(np.log1p(actual) - log_price)
    half = float(np.quantile(error, out["levels"]["0.8"]["coverage"] / 100))
    out["constant_at_equal_coverage"] = {"median_width": float(np.median(model._prices(log_price + half)
                                                                         / model._prices(log_price - half)))}
    s_actual = stress["price"].to_numpy(float)
    s_prices, s_ranges = model.predict_ranges(stress, [0.8, 0.9])
    out["stress"] = {f"{level:g}": coverage(s_actual, *s_ranges[level]) for level in (0.8, 0.9)}
    out["stress_smape"] = smape(s_prices, s_actual)
    return out


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


SINGLE = """
import sys, time, json
from smartprice import PricePredictor, read_catalog
model = PricePredictor.load(sys.argv[1]); frame = read_catalog(sys.argv[2])
rows = [frame.iloc[[i]] for i in range(int(sys.argv[3]) + 20)]
out = {}
for name, call in (("plain", model.predict), ("range", lambda r: model.predict_interval(r, 0.8))):
    for r in rows[:20]: call(r)
    lat = []
    for r in rows[20:]:
        t0 = time.perf_counter(); call(r); lat.append((time.perf_counter() - t0) * 1e3)
    lat.sort(); out[name] = (lat[len(lat) // 2], lat[int(len(lat) * 0.99)])
print(json.dumps(out))
"""


def cost(rounds: int, work: Path) -> dict:
    """Fit, predict and one-listing timings with and without ranges, alternating, medians of `rounds`."""
    from smartprice import read_catalog

    cli = [sys.executable, "-m", "smartprice", "-q"]
    fit = {"ranges": [], "none": []}
    predict = {"plain": [], "interval": []}
    single = {"plain": [], "range": []}
    test = DATA / "test_unlabeled.csv"
    for _ in range(rounds):
        for name, sets in (("none", ["--set", "range_method=none"]), ("ranges", [])):
            fit[name].append(timed([*cli, "train", str(DATA / "train.csv"), "--out", str(work / name), *sets]))
        for name, extra in (("plain", []), ("interval", ["--interval", "0.8"])):
            predict[name].append(timed([*cli, "predict", str(work / "ranges"), str(test), "--out", str(work / "p.csv"),
                                        *extra]))
        result = subprocess.run([sys.executable, "-c", SINGLE, str(work / "ranges"), str(test), str(SINGLE_LISTINGS)],
                                check=True, capture_output=True, text=True)
        for name, (p50, p99) in json.loads(result.stdout).items():
            single[name].append((p50, p99))
    rows = len(read_catalog(test))
    return {"fit_s": {k: statistics.median(v) for k, v in fit.items()},
            "predict_rows_per_s": {k: rows / statistics.median(v) for k, v in predict.items()},
            "single_p50_ms": {k: statistics.median(p for p, _ in v) for k, v in single.items()},
            "single_p99_ms": {k: statistics.median(p for _, p in v) for k, v in single.items()}}


def cv_coverage() -> dict:
    """5-fold CV on train.csv (smartprice cv's folds): coverage at 80% and 90% of ranges fitted on the other folds."""
    from smartprice import PricePredictor, read_catalog
    from smartprice.cv import fold_indices

    frame = read_catalog(DATA / "train.csv", labelled=True)
    inside = {0.8: [], 0.9: []}
    for train_rows, test_rows in fold_indices(len(frame), 5, 0):
        train, test = frame.iloc[train_rows], frame.iloc[test_rows]
        _, ranges = PricePredictor().fit(train).predict_ranges(test, [0.8, 0.9])
        for level, (low, high) in ranges.items():
            actual = test["price"].to_numpy(float)
            inside[level].append((actual >= low) & (actual <= high))
    return {f"{level:g}": float(100 * np.concatenate(v).mean()) for level, v in inside.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the timings (default 2)")
    parser.add_argument("--cv", action="store_true", help="also 5-fold CV coverage on train.csv")
    parser.add_argument("--skip-cost", action="store_true", help="coverage and width only, no timings")
    args = parser.parse_args()
    require_data("bench/ranges.py", "train.csv", "holdout.csv", "stress_extremes.csv", "test_unlabeled.csv",
                 part="the ranges' calibration and cost")
    from smartprice import PricePredictor, read_catalog

    model = PricePredictor().fit(read_catalog(DATA / "train.csv", labelled=True))
    calibration = model.model_.calibration()
    figures = quality(model, calibration, read_catalog(DATA / "holdout.csv", labelled=True),
                      read_catalog(DATA / "stress_extremes.csv", labelled=True))
    print(f"holdout SMAPE {figures['holdout_smape']:.2f} (the price model; ranges never move a price)")
    print("coverage on holdout (nominal -> observed, median width high/low):")
    for level, entry in figures["levels"].items():
        print(f"  {float(level):4.0%} -> {entry['coverage']:5.1f}%  x{entry['median_width']:.2f}")
    print("80% coverage by quintile of predicted price: " + ", ".join(f"{c:.1f}%" for c in figures["quintiles_80"]))
    print(f"stress_extremes.csv (extreme and rare products; expected lower): 80% -> {figures['stress']['0.8']:.1f}%, "
          f"90% -> {figures['stress']['0.9']:.1f}% (SMAPE {figures['stress_smape']:.2f})")
    adaptive = figures["levels"]["0.8"]
    print("width at 80% (median high/low):")
    print(f"  adaptive (default)           x{adaptive['median_width']:.2f} at {adaptive['coverage']:.1f}%")
    for name in ("constant", "constant_by_band"):
        entry = figures[name]
        print(f"  {name:28s} x{entry['median_width']:.2f} at {entry['coverage']:.1f}%  "
              f"(adaptive {100 * (1 - adaptive['median_width'] / entry['median_width']):.0f}% narrower)")
    equal = figures["constant_at_equal_coverage"]["median_width"]
    print(f"  constant at equal coverage   x{equal:.2f}  (adaptive {100 * (1 - adaptive['median_width'] / equal):.0f}% narrower)")
    ratio = figures["narrow_third_smape"] / figures["wide_third_smape"]
    print(f"SMAPE of the narrowest third {figures['narrow_third_smape']:.1f} vs widest third "
          f"{figures['wide_third_smape']:.1f}: ratio {ratio:.2f}")
    if args.cv:
        figures["cv_coverage"] = cv_coverage()
        print("5-fold CV coverage on train.csv: " + ", ".join(f"{float(k):.0%} -> {v:.1f}%"
                                                             for k, v in figures["cv_coverage"].items()))
    if not args.skip_cost:
        with tempfile.TemporaryDirectory() as work:
            figures["cost"] = cost(args.rounds, Path(work))
        c = figures["cost"]
        print(f"fit on train.csv: {c['fit_s']['ranges']:.2f} s with ranges, {c['fit_s']['none']:.2f} s without "
              f"(x{c['fit_s']['ranges'] / c['fit_s']['none']:.2f})")
        print(f"smartprice predict test_unlabeled.csv: {c['predict_rows_per_s']['plain']:.0f} rows/s, with --interval 0.8 "
              f"{c['predict_rows_per_s']['interval']:.0f} rows/s "
              f"(x{c['predict_rows_per_s']['plain'] / c['predict_rows_per_s']['interval']:.2f} the time)")
        print(f"one listing: p50 {c['single_p50_ms']['plain']:.2f} ms, with a range {c['single_p50_ms']['range']:.2f} ms "
              f"(+{c['single_p50_ms']['range'] - c['single_p50_ms']['plain']:.2f} ms); p99 {c['single_p99_ms']['plain']:.2f}"
              f" / {c['single_p99_ms']['range']:.2f} ms")
        print(f"(medians of {args.rounds} alternating rounds on this machine)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
