"""The CPU default at every size, beside the default of an earlier commit measured in the same run.

"base" is smartprice installed from BASE (a commit, default the one before the CPU model's rebuild)
into a venv of its own (cached under ~/.cache/smartprice-bench); "head" is this checkout as installed
in the running Python. Both are driven as users drive them: `smartprice train` / `smartprice predict`
as subprocesses, `PricePredictor.predict` in process for one listing. Timed rounds alternate
base and head. Measures (each a row of the table, with head/base and the issue's target):
  1. fit on train.csv (6,947 rows); `smartprice predict` on test_unlabeled.csv (4,390) and on it x10;
  2. one listing in process: p50 / p99 over 300 listings;
  3. the 76k-row catalog (train.csv x11, text perturbed, ids unique, as bench/pricing.py --scale): fit
     time and peak RSS, and predict speed with that model (vs the train.csv model: the target is 0.7x);
  4. the 760k-row catalog (x110, head only): fit time and peak RSS; fit seconds against rows printed;
  5. 5-fold CV on train.csv (the folds of `smartprice cv`), per-row SMAPE paired base vs head, and head
     exact vs pruned search (what the approximate search of large catalogs costs); on the 76k model,
     the share of exact neighbours the pruned search finds and their mean similarity against exact;
  6. a per-stage profile of head (parse, each view, each level-1 model, neighbours, LightGBM, I/O) for
     1 listing, 1,000 listings and the x10 file.
Run it alone on the machine. Last line: one JSON object.

    python bench/cpu.py [--base COMMIT] [--skip 760k,base-76k,cv,profile] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import DATA, ROOT, SMARTPRICE, large_train, repeated_catalog, require_data, run_timed

BASE = "7aebb0931fb3661b930f9a6dc3f8ed20c832f568"  # the default before the rebuild (issue 16's "today's default")
CACHE = Path.home() / ".cache" / "smartprice-bench"
TARGETS = {"predict_rows_s": 2500, "predict10_rows_s": 6000, "one_p50_ms": 2.0, "one_p99_ms": 5.0, "fit_s": 15,
           "fit76_s": 120, "fit76_gib": 3.0, "fit760_s": 25 * 60, "fit760_gib": 16.0, "scale_ratio": 0.7,
           "cv_diff": 0.10}

ONE_LISTING = """
import sys, time
from smartprice import PricePredictor, read_catalog
m = PricePredictor.load(sys.argv[1]); t = read_catalog(sys.argv[2])
rows = [t.iloc[[i]] for i in range(320)]
for r in rows[:20]: m.predict(r)
lat = []
for r in rows[20:]:
    t0 = time.perf_counter(); m.predict(r); lat.append((time.perf_counter() - t0) * 1e3)
lat.sort(); print(lat[len(lat) // 2], lat[int(len(lat) * 0.99)])
"""

FIT = """
import sys, time
from smartprice import PricePredictor, read_catalog
frame = read_catalog(sys.argv[1], labelled=True)
t0 = time.perf_counter(); model = PricePredictor().fit(frame); seconds = time.perf_counter() - t0
model.save(sys.argv[2])
print(seconds)
"""  # its peak RSS is the process's own, from run_timed

CV = """
import sys, numpy as np
from smartprice import read_catalog
from smartprice.cv import cross_validate
overrides = dict(a.split("=", 1) for a in sys.argv[3:])
result = cross_validate(read_catalog(sys.argv[1], labelled=True), "cpu", overrides, 5, 0)
np.save(sys.argv[2], result.row_smape)
"""


def base_python(commit: str) -> str:
    """A venv with smartprice installed from `commit` (made once, then reused)."""
    venv = CACHE / f"venv-{commit[:12]}"
    python = venv / "bin" / "python"
    if not (venv / "ok").exists():
        src = Path(tempfile.mkdtemp(prefix="smartprice-base-"))
        subprocess.run(f"git -C {ROOT} archive {commit} | tar -x -C {src}", shell=True, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(src)], check=True)
        (venv / "ok").touch()
    return str(python)


def run(python: str, *args: str, script: str | None = None) -> dict:
    """`python -m smartprice ARGS` (or a script) timed: seconds, peak RSS and stdout; an error stops the bench."""
    command = [python, "-c", script, *args] if script else [python, *SMARTPRICE[1:], *args]
    return run_timed(command, stdout=subprocess.PIPE)


def predict_speed(python: str, model: Path, path: Path, rows: int, work: Path) -> float:
    return rows / run(python, "predict", str(model), str(path), "--out", str(work / "p.csv"))["seconds"]


def search_quality(model_dir: Path, path: Path, rows: int = 1000) -> dict[str, float]:
    """Per view of a model: share of exact top-k neighbours its search finds, its mean similarity / exact's."""
    from smartprice import PricePredictor, read_catalog
    model = PricePredictor.load(model_dir).model_
    listings = model.parse(read_catalog(path).catalog_content.tolist()[:rows])
    out = {}
    for view, index in model.level1_.indices_.items():
        exact = index.exact()
        k = model.preset.neighbours
        found, sims = index.search(listings.views[view], k)
        best, best_sims = exact.search(listings.views[view], k)
        out[f"{view} ({index.method_}) share found"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, best)]))
        out[f"{view} mean similarity / exact"] = float(sims.mean() / best_sims.mean())
    return out


def profile(model_dir: Path, path: Path, rows: int) -> dict[str, float]:
    """Seconds per stage of head's predict for the first `rows` listings of `path` (in process, one thread)."""
    from smartprice import PricePredictor, read_catalog
    from smartprice.catalog import split_catalog_content
    from smartprice.cpu.level1 import DENSE_FEATURES, brand_lookup
    from smartprice.cpu.runtime import BATCH_ROWS
    from smartprice.cpu.views import tfidf
    from smartprice.features import listing_row

    out: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        value = fn(*args, **kwargs)
        out[name] = out.get(name, 0.0) + time.perf_counter() - started
        return value

    model = PricePredictor.load(model_dir).model_
    frame = timed("read file (I/O)", lambda: read_catalog(path).iloc[:rows])
    texts = frame.catalog_content.tolist()
    fields = timed("parse: split fields", lambda: [split_catalog_content(t) for t in texts])
    parsed = timed("parse: features", lambda: [listing_row(t, f) for t, f in zip(texts, fields)])
    raw = np.array([[r[c] for c in DENSE_FEATURES] for r in parsed])
    names = [f.item_name for f in fields]
    rests = [" ".join((*f.bullets, f.description)) for f in fields]
    counts = timed("views: tokenise + hash (word, name, char)", model.views_.counts, names, rests)
    views = {v: timed(f"views: tf-idf {v}", tfidf, m, model.views_.idf_[v]) for v, m in counts.items()}
    level1 = model.level1_
    log_qty = np.array([r["log_quantity"] for r in parsed])
    cols = [timed("level 1: ridge word", level1.ridges_["word"].predict, views["word"]),
            timed("level 1: ridge char", level1.ridges_["char"].predict, views["char"])]
    if "unit" in level1.ridges_:
        cols.append(timed("level 1: ridge unit price", level1.ridges_["unit"].predict, views["word"]) + log_qty)
    for view in level1.knn_views:
        found = timed(f"neighbours: search {view} ({level1.indices_[view].method_})", level1.indices_[view].search,
                      views[view], model.preset.neighbours)
        cols.append(timed(f"neighbours: statistics {view}", level1.stats_.transform, *found, log_qty))
    cols.append(timed("level 1: brand", brand_lookup, [r["brand"] for r in parsed], level1.brands_, level1.y_mean_))
    dense = np.hstack([np.column_stack(cols[: 2 + ("unit" in level1.ridges_)]), *cols[2 + ("unit" in level1.ridges_):], raw])
    trees = timed("LightGBM trees: open (C library, else arrays)", model.trees)
    threads = model.preset.threads if rows >= BATCH_ROWS else 1  # as CpuStack.predict chooses
    log_price = timed(f"LightGBM trees: predict ({type(trees).__name__})", trees.predict, dense, threads)
    with tempfile.TemporaryDirectory() as work:
        timed("write file (I/O)", lambda: pd.DataFrame({"sample_id": frame.sample_id, "price": np.expm1(log_price)})
              .to_csv(Path(work) / "p.csv", index=False))
    return out


def summarise(results: dict, cv: dict, base: str) -> dict:
    """Print the table of medians (base, head, ratio, target); return the medians."""
    medians = {side: {k: statistics.median(v) for k, v in r.items()} for side, r in results.items()}
    print(f"\nsummary (medians; base {base[:10]}, head = this checkout; {platform.node()}, {os.cpu_count()} cores)")
    print(f"  {'measure':28s} {'base':>10s} {'head':>10s} {'head/base':>10s} {'target':>8s}")
    for key in dict.fromkeys(k for r in medians.values() for k in r):
        b, h = medians["base"].get(key), medians["head"].get(key)
        ratio = f"{h / b:10.2f}" if b and h else f"{'':10s}"
        print(f"  {key:28s} {b if b is not None else float('nan'):10.2f} {h if h is not None else float('nan'):10.2f} "
              f"{ratio} {TARGETS.get(key, ''):>8}")
    head = medians["head"]
    if "predict_76k_model_rows_s" in head:
        print(f"  76k model / train.csv model predict speed: {head['predict_76k_model_rows_s'] / head['predict_rows_s']:.2f} "
              f"(x10 file {head['predict10_76k_model_rows_s'] / head['predict10_rows_s']:.2f}; target >= 0.7)")
    if "fit760_s" in head:
        print(f"  fit seconds against rows (head): 6,947 -> {head['fit_s']:.0f} s, 76,417 -> {head['fit76_s']:.0f} s, "
              f"764,170 -> {head['fit760_s']:.0f} s")
    for key, value in cv.items():
        print(f"  CV {key:36s} {value:8.3f}")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default=BASE)
    parser.add_argument("--skip", default="", help="comma list of: 760k, base-76k, cv, profile")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the quick measures")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    started = time.time()
    sides = {"base": base_python(args.base), "head": sys.executable}
    work = Path(tempfile.mkdtemp(prefix="smartprice-bench-"))
    require_data("bench/cpu.py", "train.csv", "test_unlabeled.csv")
    test = DATA / "test_unlabeled.csv"
    test_rows = len(pd.read_csv(test))
    test10 = work / "test10.csv"
    repeated_catalog(test, 10, test10)
    results: dict[str, dict[str, list[float]]] = {side: {} for side in sides}

    def record(side: str, key: str, value: float) -> None:
        results[side].setdefault(key, []).append(value)
        print(f"  {side:5s} {key:24s} {value:10.2f}", flush=True)

    print(f"1-2. train.csv model, {args.rounds} alternating rounds", flush=True)
    for _ in range(args.rounds):
        for side, python in sides.items():
            record(side, "fit_s", run(python, "train", str(DATA / "train.csv"), "--out", str(work / f"m-{side}"))["seconds"])
            record(side, "predict_rows_s", predict_speed(python, work / f"m-{side}", test, test_rows, work))
            record(side, "predict10_rows_s", predict_speed(python, work / f"m-{side}", test10, 10 * test_rows, work))
            p50, p99 = map(float, run(python, str(work / f"m-{side}"), str(test), script=ONE_LISTING)["stdout"].split())
            record(side, "one_p50_ms", p50)
            record(side, "one_p99_ms", p99)

    print("3. the 76k-row catalog", flush=True)
    cat76 = large_train(11, work / "train76k.csv")
    for side, python in sides.items():
        if side == "base" and "base-76k" in skip:
            continue
        fit = run(python, str(cat76), str(work / f"m76-{side}"), script=FIT)
        record(side, "fit76_s", float(fit["stdout"]))
        record(side, "fit76_gib", fit["peak_rss_mib"] / 1024)
        record(side, "predict_76k_model_rows_s", predict_speed(python, work / f"m76-{side}", test, test_rows, work))
        record(side, "predict10_76k_model_rows_s", predict_speed(python, work / f"m76-{side}", test10, 10 * test_rows, work))
    os.remove(cat76)
    recall = search_quality(work / "m76-head", test)
    print(f"  pruned search on the 76k model vs exact: {recall}", flush=True)

    cv: dict[str, float] = {}
    if "cv" not in skip:
        print("5. 5-fold CV on train.csv, per-row SMAPE paired", flush=True)
        smape = {}
        for name, python, sets in (("base", sides["base"], []), ("head", sys.executable, []),
                                   ("head_exact", sys.executable, ["neighbour_search=exact"]),
                                   ("head_pruned", sys.executable, ["neighbour_search=pruned"])):
            run(python, str(DATA / "train.csv"), str(work / f"cv-{name}.npy"), *sets, script=CV)
            smape[name] = np.load(work / f"cv-{name}.npy")
            print(f"  {name:10s} CV SMAPE {smape[name].mean():.3f}", flush=True)
        for a, b in (("base", "head"), ("head_exact", "head_pruned")):
            diff = smape[b] - smape[a]
            cv[f"{b} - {a}"] = float(diff.mean())
            cv[f"{b} - {a} se"] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
        cv.update({f"{k} smape": float(v.mean()) for k, v in smape.items()})

    stages: dict[str, dict[str, float]] = {}
    if "profile" not in skip:
        print("6. per-stage profile of head (seconds)", flush=True)
        model = work / "m-head"
        for label, path, rows in (("1 listing", test, 1), ("1,000 listings", test, 1000), ("x10 file", test10, 10 * test_rows)):
            profile(model, path, rows)  # warm
            stages[label] = profile(model, path, rows)
        names = list(dict.fromkeys(k for s in stages.values() for k in s))
        print(f"  {'stage':48s} " + " ".join(f"{label:>15s}" for label in stages))
        for name in names:
            print(f"  {name:48s} " + " ".join(f"{stages[label].get(name, 0.0):15.5f}" for label in stages))

    summarise(results, cv, args.base)
    if "760k" not in skip:
        print("4. the 760k-row catalog (head)", flush=True)
        cat760 = large_train(110, work / "train760k.csv")
        fit = run(sys.executable, str(cat760), str(work / "m760-head"), script=FIT)
        record("head", "fit760_s", float(fit["stdout"]))
        record("head", "fit760_gib", fit["peak_rss_mib"] / 1024)
        record("head", "predict_760k_model_rows_s", predict_speed(sys.executable, work / "m760-head", test, test_rows, work))
        os.remove(cat760)

    medians = summarise(results, cv, args.base)
    print(f"duration {(time.time() - started) / 60:.1f} min")
    print(json.dumps({"medians": medians, "cv": cv, "search_76k": recall, "profile": stages, "base": args.base,
                      "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
