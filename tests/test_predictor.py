"""The PricePredictor contract: fit/predict/score/save/load on small inline data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_catalog
from smartprice import PricePredictor
from smartprice.modelio import ModelDirError
from smartprice.presets import resolve_preset

SMALL = {"trees": 60, "folds": 3, "neighbours": 5}  # keeps each fit well under a second


def test_predict_before_fit_is_a_clear_error(catalog):
    with pytest.raises(RuntimeError, match="not fitted"):
        PricePredictor().predict(catalog)


def test_init_stores_arguments_only():
    model = PricePredictor("cpu", trees=10)
    assert model.preset == "cpu" and model.overrides == {"trees": 10}
    assert not hasattr(model, "model_")


def test_fit_predict_positive_finite_and_learns(catalog):
    model = PricePredictor(**SMALL).fit(catalog)
    prices = model.predict(catalog)
    assert prices.shape == (len(catalog),) and np.isfinite(prices).all() and (prices > 0).all()
    baseline = 100 * np.mean(2 * abs(np.median(catalog.price) - catalog.price)
                             / (np.median(catalog.price) + catalog.price))
    assert model.score(catalog)["smape"] < baseline  # better than a constant


def test_messy_rows_still_get_prices(catalog):
    model = PricePredictor(**SMALL).fit(catalog)
    messy = pd.DataFrame({"sample_id": ["a", "b", "c", "d"],
                          "catalog_content": ["", None, "Value: 1e308\nUnit: Kg", "Item Name: ???" * 500]})
    prices = model.predict(messy)
    assert np.isfinite(prices).all() and (prices > 0).all()


def test_reproducible(catalog):
    a = PricePredictor(**SMALL).fit(catalog).predict(catalog)
    b = PricePredictor(**SMALL).fit(catalog).predict(catalog)
    np.testing.assert_array_equal(a, b)


def test_save_load_identical_predictions(tmp_path, catalog):
    model = PricePredictor(**SMALL).fit(catalog)
    model.save(tmp_path / "model")
    loaded = PricePredictor.load(tmp_path / "model")
    test = make_catalog(25, labelled=False)
    np.testing.assert_array_equal(model.predict(test), loaded.predict(test))
    assert loaded.config_ == model.config_
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert "config.json" in names and not any(n.endswith((".pkl", ".pickle", ".joblib")) for n in names)


def test_save_replaces_atomically_and_keeps_old_model_on_failure(tmp_path, catalog, monkeypatch):
    model = PricePredictor(**SMALL).fit(catalog)
    target = tmp_path / "model"
    model.save(target)
    before = (target / "config.json").read_text()

    def boom(directory):
        raise OSError("disk full")

    monkeypatch.setattr(model.model_, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save(target)
    assert (target / "config.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no leftover temporary directory


def test_truncated_model_directory(tmp_path, catalog):
    PricePredictor(**SMALL).fit(catalog).save(tmp_path / "m")
    artefact = tmp_path / "m" / "lightgbm.txt"
    artefact.write_bytes(artefact.read_bytes()[:100])
    with pytest.raises(ModelDirError, match="incomplete model, lightgbm.txt has 100 bytes"):
        PricePredictor.load(tmp_path / "m")
    (tmp_path / "m" / "lightgbm.txt").unlink()
    with pytest.raises(ModelDirError, match="lightgbm.txt is missing"):
        PricePredictor.load(tmp_path / "m")


def test_other_format_version(tmp_path, catalog):
    PricePredictor(**SMALL).fit(catalog).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="format version 99"):
        PricePredictor.load(tmp_path / "m")


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelDirError, match="not a smartprice model"):
        PricePredictor.load(tmp_path)
    with pytest.raises(ModelDirError, match="model directory not found"):
        PricePredictor.load(tmp_path / "missing")


def test_score_reports_bands(catalog):
    report = PricePredictor(**SMALL).fit(catalog).score(catalog)
    assert report["rows"] == len(catalog)
    assert sum(b["rows"] for b in report["by_band"].values()) == len(catalog)


@pytest.mark.parametrize("overrides, message", [({"nope": 1}, "unknown preset field"),
                                                ({"trees": "many"}, "expected a whole number")])
def test_bad_overrides(overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_preset("cpu", overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        resolve_preset("huge")
