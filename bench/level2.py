"""Level 2 of the CPU default: variants on shared level-1 features, and what averaging costs.

Variants (default): on 5 folds of ../shared/data/train.csv (the split `smartprice cv --seed SEED`
uses), level 1 and its out-of-fold features are computed once per outer fold for `--splits` fold
splits (cpu/level1.py), then every level-2 variant is fitted on them and scored on the held-out
fold. Prints each variant's CV SMAPE and its paired difference with the previous default (one
900-tree fit on level 1 without this round's two signals, unit_ridge_dims and neighbour_spread).
`--speed`: the default and the previous default fitted on train.csv in one process, then, alternating
for `--rounds` rounds, one listing at a time (p50, p99) and the trees alone on one row.

    python bench/level2.py [--seed 0] [--splits 5] [--speed --rounds 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from common import DATA, require_data

from smartprice import PricePredictor
from smartprice.catalog import read_catalog
from smartprice.cpu.level1 import DENSE_FEATURES, Level1, parse, view_spec
from smartprice.cpu.views import TextViews
from smartprice.cv import fold_indices
from smartprice.metrics import row_smape
from smartprice.presets import CpuPreset

EXTRA_K = (5, 40)  # neighbour statistics at more k: mean, median, mean similarity, unit price at each


def lgb_params(preset: CpuPreset, rows: int, seed: int, rate: float, objective: str) -> dict:
    """The CPU model's level-2 settings (CpuStack._lgb_params) with one thread: steady under a shared machine."""
    return {"objective": objective, "alpha": preset.huber_delta, "learning_rate": rate, "num_leaves": preset.num_leaves,
            "min_child_samples": min(preset.min_child_samples, max(2, rows // 20)),
            "feature_fraction": preset.feature_fraction, "bagging_fraction": preset.bagging_fraction, "bagging_freq": 1,
            "seed": seed, "num_threads": 1, "verbose": -1, "deterministic": True, "force_row_wise": True}


def extra_knn(level1: Level1, listings, folds: np.ndarray | None) -> np.ndarray:
    """Neighbour statistics at EXTRA_K of each listing (out of fold where `folds` is given)."""
    columns = []
    for view in level1.knn_views:
        groups = {} if folds is None else {"groups": folds, "query_groups": folds}
        index, sims = level1.indices_[view].search(listings.views[view], max(EXTRA_K), **groups)
        for k in EXTRA_K:
            columns.append(level1.stats_.transform(index[:, :k], sims[:, :k], listings.log_qty)[:, [0, 1, 4, 5]])
    return np.hstack(columns)


NEW_SIGNALS = {"spread": ("_spread", "_iqr"), "unit ridges per dimension": ("ridge_unit_dimension",)}


def signal_columns(names: list[str], signals: tuple[str, ...]) -> np.ndarray:
    """Positions of the columns of the given NEW_SIGNALS among `names`."""
    endings = tuple(e for signal in signals for e in NEW_SIGNALS[signal])
    return np.array([i for i, name in enumerate(names) if name.endswith(endings)], dtype=int)


def variants(splits: int) -> dict[str, Callable]:
    """name -> fn(fit, denses, extras, valid, valid_extra, names): level-2 log prices of the held-out fold.

    The first (the base of the paired differences) is the previous default: one fit on level 1
    without the two signals of this round (`unit_ridge_dims`, `neighbour_spread`)."""
    def split_mean(count: int, rounds: int, rate: float, objectives: tuple, extra: bool = False,
                   drop: tuple[str, ...] = ()) -> Callable:
        def run(fit, denses, extras, valid, valid_extra, names):
            keep = np.setdiff1d(np.arange(valid.shape[1]), signal_columns(names, drop))
            return np.mean([fit(np.hstack([denses[s][:, keep], extras[s]]) if extra else denses[s][:, keep],
                                np.hstack([valid[:, keep], valid_extra]) if extra else valid[:, keep], s, rate,
                                objectives[s % len(objectives)], rounds) for s in range(count)], axis=0)
        return run

    both = tuple(NEW_SIGNALS)
    table = {"single fit, without this round's two signals": split_mean(1, 900, 0.03, ("huber",), drop=both),
             "single fit, + spread": split_mean(1, 900, 0.03, ("huber",), drop=("unit ridges per dimension",)),
             "single fit, + unit ridges per dimension": split_mean(1, 900, 0.03, ("huber",), drop=("spread",)),
             "single fit, + both": split_mean(1, 900, 0.03, ("huber",)),
             "single fit, + both, l1": split_mean(1, 900, 0.03, ("l1",)),
             "single fit, + both, neighbour stats also at k=5, 40": split_mean(1, 900, 0.03, ("huber",), extra=True)}
    for count in range(2, splits + 1):
        rounds, rate = round(900 / count), 0.03 * count
        table[f"{count} splits, + both, huber, {rounds} trees at {rate:.2f}"] = split_mean(count, rounds, rate, ("huber",))
        table[f"{count} splits, + both, huber/l1.., {rounds} at {rate:.2f}"] = \
            split_mean(count, rounds, rate, ("huber", "l1"))
    table["2 splits, huber/l1, without the two signals"] = split_mean(2, 450, 0.06, ("huber", "l1"), drop=both)
    return table


def run_variants(seed: int, splits: int) -> None:
    import lightgbm as lgb

    preset = CpuPreset()
    frame = read_catalog(DATA / "train.csv", labelled=True)
    texts, price = frame["catalog_content"].tolist(), frame["price"].to_numpy(float)
    table = variants(splits)
    predictions = {name: np.zeros(len(texts)) for name in table}
    for number, (train, valid) in enumerate(fold_indices(len(texts), 5, seed)):
        started = time.perf_counter()
        y = np.log1p(price[train])
        views = TextViews(view_spec(preset))
        listings = parse([texts[i] for i in train], views, fit=True)
        held = parse([texts[i] for i in valid], views)
        level1 = Level1(preset).fit(listings, y, threads=2)
        valid_dense, valid_extra = np.hstack([level1.transform(held, threads=2), held.raw]), extra_knn(level1, held, None)
        split_folds = [np.random.default_rng(preset.seed + s).permutation(len(y)) % preset.folds for s in range(splits)]
        denses = [np.hstack([stack, listings.raw]) for stack in level1.out_of_fold_splits(listings, y, split_folds, 2)]
        names = list(level1.features + DENSE_FEATURES)
        extras = [extra_knn(level1, listings, folds) for folds in split_folds]

        def fit(x, x_valid, s, rate, objective, rounds, y=y):
            params = lgb_params(preset, len(y), s, rate, objective)
            return lgb.train(params, lgb.Dataset(x, y), num_boost_round=rounds).predict(x_valid, num_threads=1)

        for name, variant in table.items():
            predictions[name][valid] = np.expm1(variant(fit, denses, extras, valid_dense, valid_extra, names))
        print(f"fold {number + 1}/5 done in {time.perf_counter() - started:.0f} s", flush=True)
    base = row_smape(next(iter(predictions.values())), price)
    print(f"{'variant':52} {'CV SMAPE':>9} {'paired difference':>20}")
    for name, predicted in predictions.items():
        terms = row_smape(predicted, price)
        difference = terms - base
        print(f"{name:52} {terms.mean():9.2f} {difference.mean():+10.3f} ± {difference.std(ddof=1) / np.sqrt(len(terms)):.3f}")


def run_speed(rounds: int) -> None:
    train = read_catalog(DATA / "train.csv", labelled=True)
    test = read_catalog(DATA / "test_unlabeled.csv")
    models = {}
    previous = {"level2_splits": 1, "level2_objectives": (), "unit_ridge_dims": False, "neighbour_spread": False}
    for name, overrides in (("previous default", previous), ("default", {})):
        started = time.perf_counter()
        models[name] = PricePredictor("cpu", **overrides).fit(train)
        print(f"{name}: fit {time.perf_counter() - started:.1f} s", flush=True)
    rows = [test.iloc[[i]] for i in range(320)]
    for model in models.values():
        for row in rows[:20]:
            model.predict(row)
    latency: dict[str, list[float]] = {name: [] for name in models}
    trees: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            for row in rows[20:]:
                started = time.perf_counter()
                model.predict(row)
                latency[name].append((time.perf_counter() - started) * 1e3)
            dense, scorer = model.model_.dense(test.catalog_content.tolist()[:1]), model.model_.trees()
            started = time.perf_counter()
            for _ in range(2000):
                scorer.predict(dense)
            trees[name].append((time.perf_counter() - started) / 2000 * 1e6)
    for name in models:
        print(f"{name}: one listing p50 {np.median(latency[name]):.2f} ms, p99 {np.quantile(latency[name], 0.99):.2f} ms; "
              f"trees on one row {np.median(trees[name]):.1f} us ({models[name].model_.booster_.num_trees()} trees)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the 5-fold split (smartprice cv --seed)")
    parser.add_argument("--splits", type=int, default=5, help="most stacking-fold splits among the variants")
    parser.add_argument("--speed", action="store_true", help="time the default against level2_splits=1 instead")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of --speed")
    args = parser.parse_args()
    require_data("bench/level2.py", "train.csv", *(("test_unlabeled.csv",) if args.speed else ()))
    run_speed(args.rounds) if args.speed else run_variants(args.seed, args.splits)


if __name__ == "__main__":
    main()
