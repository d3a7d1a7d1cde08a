"""The CPU model's parts: text views, the neighbour search, tree arrays, round trips, threads, old layouts."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import make_catalog
from smartprice import PricePredictor
from smartprice.cpu import parallel, trees
from smartprice.cpu.neighbours import NeighbourIndex, SearchSpec
from smartprice.cpu.runtime import BATCH_ROWS
from smartprice.cpu.trees import NativeTrees
from smartprice.cpu.views import char_wb_ngrams, word_ngrams
from smartprice.modelio import ModelDirError


@pytest.mark.parametrize("text", ["La Victoria Green Taco Sauce", "a  bb ccc", "K-Cup 18 Count, 2.37 oz", ""])
def test_ngrams_match_scikit_learn(text):
    from sklearn.feature_extraction.text import CountVectorizer

    char = CountVectorizer(analyzer="char_wb", ngram_range=(2, 5)).build_analyzer()
    ours = [g for word in text.lower().split() for g in char_wb_ngrams(word, 2, 5)]
    assert sorted(ours) == sorted(char(text))
    word = CountVectorizer(ngram_range=(1, 2)).build_analyzer()
    tokens = CountVectorizer().build_tokenizer()(text.lower())
    assert sorted(word_ngrams(tokens, 2)) == sorted(word(text))


def _random_rows(rows: int, seed: int) -> sp.csr_matrix:
    """L2-normalised sparse rows over 300 terms, a few shared by many rows (like 'ounce')."""
    rng = np.random.default_rng(seed)
    common = sp.csr_matrix((rng.random((rows, 3)) * (rng.random((rows, 3)) < 0.5)).astype(np.float32))
    matrix = sp.hstack([common, sp.random(rows, 297, density=0.04, random_state=rng, dtype=np.float32)], format="csr")
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(1))).ravel()
    return sp.diags(1 / np.where(norms > 0, norms, 1)).astype(np.float32) @ matrix


def _brute_force(index: NeighbourIndex, queries: sp.csr_matrix, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """Every similarity computed, best k by similarity then lower row; zero similarity is no neighbour."""
    dense = (index.prepare(queries) @ index.rows_.T).toarray().astype(np.float64)
    if exclude is not None:
        dense[exclude] = -1
    order = np.lexsort((np.broadcast_to(np.arange(dense.shape[1]), dense.shape), -dense), axis=1)[:, :k]
    sims = np.take_along_axis(dense, order, axis=1)
    return np.where(sims > 0, order, -1), np.where(sims > 0, sims, 0)


@pytest.mark.parametrize("queries", [1, 5, 200])
def test_exact_search_matches_brute_force(queries):
    rows, query = _random_rows(400, 0), _random_rows(queries, 1)
    index = NeighbourIndex(SearchSpec(method="exact", max_df=0.3)).fit(rows)
    assert len(index.dropped_) >= 1  # the frequent columns are left out of the search
    found, sims = index.search(query, 10, threads=2)
    expected, expected_sims = _brute_force(index, query, 10)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(sims, expected_sims, rtol=1e-5, atol=1e-6)


def test_large_ties_are_cut_by_lower_row_on_every_path():
    """40 identical rows tie for 10 places: the product (many queries) and the block (one query) keep rows 0..9."""
    rows = sp.vstack([_random_rows(1, 5)] * 40 + [_random_rows(60, 6)], format="csr")
    index = NeighbourIndex(SearchSpec(method="exact", max_df=1.0)).fit(rows)
    many, _ = index.search(sp.vstack([rows[:1]] * 40, format="csr"), 10, threads=2)
    one, _ = index.search(rows[:1], 10)
    np.testing.assert_array_equal(many, np.tile(np.arange(10), (40, 1)))
    np.testing.assert_array_equal(one, np.arange(10)[None, :])


def test_out_of_fold_search_skips_own_group():
    rows = _random_rows(300, 2)
    groups = np.arange(300) % 3
    for method in ("exact", "pruned"):
        index = NeighbourIndex(SearchSpec(method=method, max_df=0.3)).fit(rows)
        found, _ = index.search(rows, 8, groups=groups, query_groups=groups)
        valid = found >= 0
        assert valid.mean() > 0.9
        assert not (groups[found[valid]] == np.repeat(groups, 8).reshape(-1, 8)[valid]).any()
    exact = NeighbourIndex(SearchSpec(method="exact", max_df=0.3)).fit(rows)
    found, _ = exact.search(rows, 8, groups=groups, query_groups=groups)
    expected, _ = _brute_force(exact, rows, 8, exclude=groups[:, None] == groups[None, :])
    np.testing.assert_array_equal(found, expected)


def test_pruned_search_recall_and_exact_similarities():
    """Candidates from strong terms are re-scored exactly: every similarity is exact, recall@10 >= 0.9.

    Rows keep 8 of their ~12 terms here, a harder cut than the preset's 48 of ~110 on listings;
    bench/cpu.py measures the share found on the model's own views.
    """
    rows, query = _random_rows(2000, 3), _random_rows(200, 4)
    index = NeighbourIndex(SearchSpec(method="pruned", max_df=0.3, strong_terms=8)).fit(rows)
    found, sims = index.search(query, 10)
    expected, _ = _brute_force(index, query, 10)
    recall = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum()) for a, b in zip(found, expected)])
    assert recall >= 0.9, recall
    prepared = index.prepare(query)
    for i in range(20):
        for j, s in zip(found[i], sims[i]):
            if j >= 0:
                assert s == pytest.approx(prepared[i].multiply(index.rows_[j]).sum(), rel=1e-5)


def test_an_exact_twin_of_a_pruned_index_finds_the_exact_neighbours():
    rows, query = _random_rows(500, 3), _random_rows(50, 4)
    pruned = NeighbourIndex(SearchSpec(method="pruned", max_df=0.3, strong_terms=4)).fit(rows)
    exact = NeighbourIndex(SearchSpec(method="exact", max_df=0.3)).fit(rows)
    twin = pruned.exact()
    assert pruned.method_ == "pruned" and twin.method_ == "exact"
    found, sims = twin.search(query, 10)
    expected, expected_sims = exact.search(query, 10)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(sims, expected_sims, rtol=1e-6)


@pytest.fixture(scope="module")
def fitted() -> PricePredictor:
    return PricePredictor("cpu", trees=60).fit(make_catalog(300))


def test_lightgbms_c_library_scores_as_the_package_does(fitted, tmp_path):
    """NativeTrees (ctypes, no `import lightgbm`) = Booster.predict, also after save/load and pickling."""
    import lightgbm

    model = fitted.model_
    dense = model.model.dense(make_catalog(300, labelled=False).catalog_content.tolist())
    assert isinstance(model.trees, NativeTrees)
    expected = lightgbm.Booster(model_str=model.model.trees_text_).predict(dense)
    np.testing.assert_allclose(model.trees.predict(dense), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.trees.predict(dense, threads=2), expected, rtol=0, atol=1e-12)
    fitted.save(tmp_path / "m")
    loaded = PricePredictor.load(tmp_path / "m").model_
    assert isinstance(loaded.trees, NativeTrees)
    np.testing.assert_allclose(loaded.trees.predict(dense), expected, rtol=0, atol=1e-12)
    copy = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(copy.predict(make_catalog(20)), fitted.predict(make_catalog(20)))
    with pytest.raises(ValueError, match="features"):
        model.trees.predict(dense[:, :-1])


def test_without_lightgbms_c_library_the_package_scores(fitted, tmp_path, monkeypatch):
    fitted.save(tmp_path / "m")
    expected = fitted.predict(make_catalog(40))
    monkeypatch.setattr(trees, "native_library", lambda: None)
    loaded = PricePredictor.load(tmp_path / "m")
    assert isinstance(loaded.model_.trees, trees.BoosterTrees)
    np.testing.assert_allclose(loaded.predict(make_catalog(40)), expected, rtol=1e-9, atol=0)


def test_small_request_path_equals_batch_path(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    model = PricePredictor.load(tmp_path / "m")
    frame = make_catalog(BATCH_ROWS + parallel.MIN_ROWS, labelled=False)
    batch = model.predict(frame)  # worker processes, LightGBM
    one_by_one = np.concatenate([model.predict(frame.iloc[[i]]) for i in range(0, len(frame), 97)])
    np.testing.assert_allclose(one_by_one, batch[::97], rtol=1e-9, atol=0)
    small = model.predict(frame.iloc[:50])  # no workers, one piece here
    np.testing.assert_allclose(small, batch[:50], rtol=1e-9, atol=0)


def test_running_workers_share_mid_sized_inputs(fitted, tmp_path, monkeypatch):
    """Below MIN_ROWS no worker is started, but once a server started them, inputs from WARM_MIN_ROWS use them."""
    fitted.save(tmp_path / "m")
    model = PricePredictor.load(tmp_path / "m")
    frame = make_catalog(300, labelled=False)
    alone = model.predict(frame)
    shared_sizes: list[int] = []
    run = parallel.Pool.run
    monkeypatch.setattr(parallel.Pool, "run", lambda self, texts, final, local: shared_sizes.append(len(texts))
                        or run(self, texts, final, local))
    model.expect_rows(parallel.MIN_ROWS)  # what `serve` does at start
    np.testing.assert_allclose(model.predict(frame), alone, rtol=1e-9, atol=0)
    model.predict(frame.iloc[:parallel.WARM_MIN_ROWS - 1])
    assert shared_sizes == [300]


def test_a_worker_process_that_ends_is_replaced(fitted, tmp_path, caplog):
    """A long-lived pool (a server's) whose worker is killed scores that call here, then starts a new worker."""
    fitted.save(tmp_path / "m")
    model = PricePredictor.load(tmp_path / "m")
    frame = make_catalog(400, labelled=False)
    alone = model.predict(frame)
    model.expect_rows(parallel.MIN_ROWS)
    pool = parallel._POOL
    first = pool.workers[0]
    first.wait_ready()
    first.process.kill()
    first.process.wait()
    with caplog.at_level("WARNING", logger="smartprice.cpu.parallel"):
        np.testing.assert_allclose(model.predict(frame), alone, rtol=1e-9, atol=0)
    assert "failed" in caplog.text and "started a new level-1 worker" in caplog.text
    assert pool.workers[0] is not first and pool.workers[0].process.poll() is None
    pool.workers[0].wait_ready()  # the new one loads the model and takes pieces again
    np.testing.assert_allclose(model.predict(frame), alone, rtol=1e-9, atol=0)


def test_predict_from_many_threads(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    model = PricePredictor.load(tmp_path / "m")
    frames = [make_catalog(n, labelled=False) for n in (1, 7, parallel.MIN_ROWS + 10, 30)]
    expected = [model.predict(f) for f in frames]
    results: dict[tuple[int, int], np.ndarray] = {}

    def run(thread: int) -> None:
        for round_ in range(3):
            for i, frame in enumerate(frames):
                results[(thread, round_ * 10 + i)] = model.predict(frame)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 * 3 * len(frames)
    for (_, key), prices in results.items():
        np.testing.assert_array_equal(prices, expected[key % 10])


@pytest.mark.parametrize("views", [("name", "word"), ("word", "name"), ("name",), ("word",), ("char", "name"),
                                   ("word", "char", "name")])
def test_round_trip_every_view_order(tmp_path, views):
    frame = make_catalog(80)
    model = PricePredictor("cpu", trees=30, knn_views=views).fit(frame)
    model.save(tmp_path / "m")
    loaded = PricePredictor.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    assert loaded.explain(frame.iloc[:2], k=3)[0]["neighbours"]


def test_pruned_model_round_trip(tmp_path):
    frame = make_catalog(120)
    model = PricePredictor("cpu", trees=30, neighbour_search="pruned", neighbour_strong_terms=4).fit(frame)
    assert {i.method_ for i in model.model_.model.level1_.indices_.values()} == {"pruned"}
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(PricePredictor.load(tmp_path / "m").predict(frame), model.predict(frame))


def test_auto_search_switches_on_size():
    frame = make_catalog(60)
    small = PricePredictor("cpu", trees=10, exact_max_rows=100).fit(frame)
    large = PricePredictor("cpu", trees=10, exact_max_rows=50).fit(frame)
    assert small.model_.model.level1_.indices_["name"].method_ == "exact"
    assert large.model_.model.level1_.indices_["name"].method_ == "pruned"


def test_older_cpu_layout_asks_to_retrain(tmp_path, fitted):
    fitted.save(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    config["format_version"] = 1
    config["model_state"] = {"knn_shape": [300, 1048576], "knn_views": ["name", "word"], "y_mean": 2.0, "brands": {}}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="retrain it"):
        PricePredictor.load(tmp_path / "m")
    make_catalog(3, labelled=False).to_csv(tmp_path / "test.csv", index=False)
    result = subprocess.run([sys.executable, "-m", "smartprice", "predict", str(tmp_path / "m"), str(tmp_path / "test.csv"),
                             "--out", str(tmp_path / "p.csv")], capture_output=True, text=True)
    assert result.returncode == 2 and "retrain it" in result.stderr and "Traceback" not in result.stderr


def test_blank_and_odd_listings_get_prices(fitted):
    frame = pd.DataFrame({"sample_id": ["a", "b", "c", "d"],
                          "catalog_content": ["", "Item Name: ounce ounce pack", "Value: 1e308\nUnit: Ounce", "???"]})
    prices = fitted.predict(frame)
    assert np.isfinite(prices).all() and (prices > 0).all()
