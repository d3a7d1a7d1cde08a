"""Price ranges: calibrated on a catalog whose noise is known, nested, the same through every entry point, clear errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smartprice import PricePredictor
from smartprice.ranges import CoverageError, NoRangesError, PriceRanges, check_coverage, check_coverages

PRODUCTS = {"rice": 0.0, "beans": 0.3, "pasta": -0.2, "flour": -0.4, "sugar": 0.1, "oats": 0.5, "lentils": 0.2,
            "quinoa": 0.9}
NOISE = {"Steadyco": 0.05, "Wildmart": 0.8}  # log-price noise of each kind of product: one quiet, one noisy


def noisy_catalog(rows: int, seed: int) -> pd.DataFrame:
    """Two kinds of product, identical but for the noise of their prices (known): Steadyco quiet, Wildmart noisy."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(rows):
        brand = list(NOISE)[i % 2]
        product = str(rng.choice(list(PRODUCTS)))
        quantity = int(rng.choice([4, 8, 12, 16, 24, 32, 48, 64]))
        log_price = math.log(0.4 * quantity) + PRODUCTS[product] + NOISE[brand] * rng.standard_normal()
        text = (f"Item Name: {brand} {product} {quantity} Ounce\nBullet Point 1: {brand} {product}, a pantry staple\n"
                f"Value: {quantity}.0\nUnit: Ounce\n")
        records.append({"sample_id": f"{seed}-{i}", "catalog_content": text, "price": round(math.exp(log_price), 2),
                        "brand": brand})
    return pd.DataFrame(records)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[PricePredictor, Path, pd.DataFrame]:
    """A CPU model with ranges fitted on 1,600 synthetic rows, saved; 800 fresh rows to measure it on."""
    model = PricePredictor("cpu", trees=300, range_trees=60).fit(noisy_catalog(1600, seed=1))
    directory = tmp_path_factory.mktemp("ranges") / "model"
    model.save(directory)
    return model, directory, noisy_catalog(800, seed=2)


def test_coverage_near_nominal_and_wider_for_the_noisy_kind(fitted):
    model, _, test = fitted
    actual = test["price"].to_numpy()
    for coverage in (0.8, 0.9):
        ranges = model.predict_interval(test, coverage)
        inside = (actual >= ranges["price_low"]) & (actual <= ranges["price_high"])
        assert abs(inside.mean() - coverage) < 0.05, (coverage, inside.mean())
    ranges = model.predict_interval(test, 0.8)
    width = (ranges["price_high"] / ranges["price_low"]).to_numpy()
    quiet, noisy = (np.median(width[(test["brand"] == brand).to_numpy()]) for brand in NOISE)
    assert noisy > 1.5 * quiet, (quiet, noisy)


def test_ranges_hold_the_price_nest_and_keep_prices_unchanged(fitted, tmp_path):
    model, directory, test = fitted
    r80, r90 = model.predict_interval(test, 0.8), model.predict_interval(test, 0.9)
    assert (r80["price_low"] <= r80["price"]).all() and (r80["price"] <= r80["price_high"]).all()
    assert (r90["price_low"] <= r80["price_low"]).all() and (r80["price_high"] <= r90["price_high"]).all()
    assert (r80["price_low"] > 0).all() and np.isfinite(r90.to_numpy()).all()
    np.testing.assert_array_equal(r80["price"].to_numpy(), model.predict(test))
    loaded = PricePredictor.load(directory)
    pd.testing.assert_frame_equal(loaded.predict_interval(test, 0.8), r80, check_exact=True)
    without = PricePredictor("cpu", trees=300, range_method="none").fit(noisy_catalog(1600, seed=1))
    np.testing.assert_array_equal(without.predict(test), model.predict(test))  # ranges never move a price
    assert not without.has_ranges


@pytest.mark.parametrize("method", ["constant", "adaptive"])
def test_range_methods_and_a_blank_listing(method):
    model = PricePredictor("cpu", trees=100, range_trees=30, range_method=method).fit(noisy_catalog(400, seed=3))
    frame = pd.DataFrame({"catalog_content": ["", "Item Name: Wildmart quinoa 9999 Ounce\nValue: 9999\nUnit: Ounce"]})
    ranges = model.predict_interval(frame, 0.95)
    assert np.isfinite(ranges.to_numpy()).all() and (ranges.to_numpy() > 0).all()
    assert model.describe()["ranges"]


@pytest.mark.parametrize("bad", [0, 1, -0.2, 1.5, "abc", "", None, True, float("nan"), float("inf"), [0.8]])
def test_bad_coverage_is_one_error(bad):
    with pytest.raises(CoverageError, match="strictly between 0 and 1"):
        check_coverage(bad)


def test_coverages_parse_a_list():
    assert check_coverages("0.5,0.8") == [0.5, 0.8]
    assert check_coverages(0.9) == [0.9]
    with pytest.raises(CoverageError, match="--interval"):
        check_coverages("0.8,x", "--interval")


def test_conformal_quantile_on_known_scores():
    rng = np.random.default_rng(0)
    predicted = rng.normal(3, 1, 5000)
    actual = predicted + rng.normal(0, 0.5, 5000)
    ranges = PriceRanges.calibrate(predicted, actual)
    low, high = ranges.interval(predicted[:10], 0.8)
    np.testing.assert_allclose(high - predicted[:10], 1.2816 * 0.5, rtol=0.08)  # the normal's 80% half-width
    assert ranges.state()["bands"] == 5 and not ranges.normalised


# --- a model saved before ranges existed, and bad coverages, through every entry point -------------

@pytest.fixture(scope="module")
def old_model(fitted, tmp_path_factory) -> Path:
    """The fitted model's directory as an older smartprice wrote it: no ranges file, no ranges in config.json."""
    _, directory, _ = fitted
    old = tmp_path_factory.mktemp("old") / "model"
    import shutil

    shutil.copytree(directory, old)
    (old / "ranges.npz").unlink()
    config = json.loads((old / "config.json").read_text())
    config.pop("ranges")
    config["files"].pop("ranges.npz")
    (old / "config.json").write_text(json.dumps(config))
    return old


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartprice", *args], capture_output=True, text=True, timeout=300)


def test_old_model_prices_as_before_and_says_to_retrain_for_ranges(fitted, old_model, tmp_path):
    model, _, test = fitted
    old = PricePredictor.load(old_model)
    np.testing.assert_array_equal(old.predict(test), model.predict(test))
    assert not old.has_ranges and old.describe()["ranges"] is False
    with pytest.raises(NoRangesError, match="retrain"):
        old.predict_interval(test, 0.8)
    catalog = tmp_path / "in.csv"
    test.drop(columns=["price", "brand"]).head(20).to_csv(catalog, index=False)
    result = _cli("predict", str(old_model), str(catalog), "--out", str(tmp_path / "p.csv"), "--interval", "0.8")
    assert result.returncode == 2 and "retrain" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _cli("predict", str(old_model), str(catalog), "--out", str(tmp_path / "p.csv"))
    assert result.returncode == 0 and pd.read_csv(tmp_path / "p.csv").columns.tolist() == ["sample_id", "price"]


@pytest.mark.parametrize("bad", ["0", "1", "1.5", "-0.1", "abc", "nan", "inf", "80"])
def test_cli_bad_coverage_is_a_one_line_error(fitted, bad, tmp_path):
    _, directory, test = fitted
    catalog = tmp_path / "in.csv"
    test.drop(columns=["price", "brand"]).head(5).to_csv(catalog, index=False)
    for command in (["predict", str(directory), str(catalog), "--out", str(tmp_path / "p.csv"), f"--interval={bad}"],
                    ["evaluate", str(directory), str(catalog), f"--interval={bad}"]):
        result = _cli(*command)
        assert result.returncode == 2, result.stderr
        assert "--interval must be a number strictly between 0 and 1" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "p.csv").exists()


def test_cli_predict_and_evaluate_with_ranges(fitted, tmp_path):
    model, directory, test = fitted
    labelled = tmp_path / "labelled.csv"
    test.drop(columns=["brand"]).to_csv(labelled, index=False)
    out = tmp_path / "p.csv"
    assert _cli("-q", "predict", str(directory), str(labelled), "--out", str(out), "--interval", "0.8").returncode == 0
    written = pd.read_csv(out, dtype={"sample_id": str})
    assert written.columns.tolist() == ["sample_id", "price", "price_low", "price_high"]
    expected = model.predict_interval(test, 0.8)
    np.testing.assert_allclose(written[["price", "price_low", "price_high"]].to_numpy(), expected.to_numpy(), rtol=1e-12)
    result = _cli("-q", "evaluate", str(directory), str(labelled), "--interval", "0.8,0.9", "--json")
    report = json.loads(result.stdout)
    assert set(report["ranges"]) == {"0.8", "0.9"}
    assert abs(report["ranges"]["0.8"]["coverage"] - 80) < 5 and report["ranges"]["0.9"]["median_width"] > 1


def test_http_ranges_equal_the_python_api_and_bad_values_are_422(fitted, old_model):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from smartprice.serve import create_app

    model, directory, test = fitted
    items = [{"sample_id": str(i), "catalog_content": t} for i, t in enumerate(test["catalog_content"].head(30))]
    expected = model.predict_interval(test.head(30), 0.9)
    with TestClient(create_app(directory)) as client:
        body = client.post("/predict", json={"items": items, "interval": 0.9}).json()["predictions"]
        got = np.array([[p["price"], p["price_low"], p["price_high"]] for p in body])
        np.testing.assert_allclose(got, expected.to_numpy(), rtol=1e-12)
        plain = client.post("/predict", json={"items": items}).json()["predictions"]
        assert set(plain[0]) == {"sample_id", "price"}
        for bad in (0, 1, 1.5, -1, "0.8", True, [0.8], {"x": 1}):
            response = client.post("/predict", json={"items": items, "interval": bad})
            assert response.status_code == 422 and "interval" in response.json()["detail"], bad
        assert client.get("/model").json()["ranges"] is True
    with TestClient(create_app(old_model)) as client:
        response = client.post("/predict", json={"items": items, "interval": 0.8})
        assert response.status_code == 422 and "retrain" in response.json()["detail"]
        assert client.post("/predict", json={"items": items}).status_code == 200


def test_sklearn_ranges_equal_the_python_api(fitted):
    from smartprice.sklearn import PriceRegressor

    model, _, test = fitted
    regressor = PriceRegressor("cpu", trees=300, range_trees=60).fit(noisy_catalog(1600, seed=1)["catalog_content"],
                                                                     noisy_catalog(1600, seed=1)["price"])
    prices, ranges = regressor.predict(test["catalog_content"], interval=[0.8, 0.9])
    assert ranges.shape == (len(test), 2, 2)
    for j, coverage in enumerate((0.8, 0.9)):
        expected = model.predict_interval(test, coverage)
        np.testing.assert_allclose(ranges[:, 0, j], expected["price_low"], rtol=1e-12)
        np.testing.assert_allclose(ranges[:, 1, j], expected["price_high"], rtol=1e-12)
    np.testing.assert_allclose(prices, regressor.predict(test["catalog_content"]), rtol=0)
    with pytest.raises(CoverageError):
        regressor.predict(test["catalog_content"], interval=2)


def test_explain_shows_each_listings_range(fitted):
    model, _, test = fitted
    entries = model.explain(test.head(3), k=2, coverage=0.8)
    expected = model.predict_interval(test.head(3), 0.8)
    for entry, (_, row) in zip(entries, expected.iterrows()):
        assert entry["range"] == {"coverage": 0.8, "low": row["price_low"], "high": row["price_high"]}
