"""The scikit-learn estimator: the estimator contract, clone, cross_val_score with SMAPE, GridSearchCV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score

from conftest import make_catalog
from smartprice import PricePredictor
from smartprice.metrics import smape
from smartprice.presets import PRESETS
from smartprice.sklearn import PriceRegressor, listing_texts, smape_scorer

CHEAP = {"trees": 30, "folds": 2}


@pytest.fixture(scope="module")
def data():
    catalog = make_catalog(40)
    return catalog, catalog["catalog_content"], catalog["price"].to_numpy()


def test_same_prices_as_price_predictor(data):
    catalog, X, y = data
    ours = PriceRegressor(**CHEAP).fit(X, y).predict(X)
    theirs = PricePredictor("cpu", **CHEAP).fit(catalog).predict(catalog)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=0)


def test_inputs_of_every_shape_give_the_same_prices(data):
    _, X, y = data
    model = PriceRegressor(**CHEAP).fit(list(X), list(y))
    expected = model.predict(X)
    for form in (X.to_numpy(), list(X), X.to_frame(), X.to_frame("anything"), X.to_numpy().reshape(-1, 1)):
        np.testing.assert_array_equal(model.predict(form), expected)
    with pytest.raises(ValueError, match="exactly one column"):
        listing_texts(pd.DataFrame({"a": X, "b": X}))


def test_params_are_the_preset_and_its_fields():
    model = PriceRegressor(trees=300)
    params = model.get_params()
    assert params["preset"] == "cpu" and params["trees"] == 300
    assert set(params) == {"preset"} | set(vars(PRESETS["cpu"]))
    assert params["num_leaves"] == PRESETS["cpu"].num_leaves  # fields not given show the preset's value
    assert model.set_params(num_leaves=7) is model and model.get_params()["num_leaves"] == 7
    with pytest.raises(ValueError, match="unknown parameter.*nonsense.*valid: preset, kind"):
        model.set_params(nonsense=1)
    assert repr(model) == "PriceRegressor(preset='cpu', trees=300, num_leaves=7)"


def test_a_neural_presets_loop_settings_are_nested_parameters():
    """`loop__epochs`, the scikit-learn spelling of `--set loop.epochs`; checked without fitting (no torch)."""
    model = PriceRegressor("minilm", loop__epochs=2)
    assert model.get_params()["loop"].epochs == 2 and model.get_params()["loop__epochs"] == 2
    assert "loop__epochs" not in model.get_params(deep=False)  # clone rebuilds from the whole `loop`
    assert model.get_params()["loop__lr"] == PRESETS["minilm"].loop.lr  # the rest stays the preset's
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    copy.set_params(loop__lr=2e-4)
    assert copy.get_params()["loop"].lr == 2e-4 and copy.get_params()["loop"].epochs == 2
    assert model.get_params()["loop"].lr == PRESETS["minilm"].loop.lr  # the clone's change stays its own
    assert copy._overrides() == {"loop": PRESETS["minilm"].loop.__class__(**{
        **vars(PRESETS["minilm"].loop), "epochs": 2, "lr": 2e-4})}
    with pytest.raises(ValueError, match="unknown parameter loop__bogus.*loop__epochs"):
        copy.set_params(loop__bogus=1)
    with pytest.raises(ValueError, match="loop.epochs=0"):
        copy.set_params(loop__epochs=0)


def test_clone_and_a_change_of_preset():
    model = PriceRegressor(**CHEAP)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert not hasattr(copy, "predictor_")
    switched = clone(PriceRegressor()).set_params(preset="cpu-fast")  # fields at cpu's values follow the new preset
    assert switched.get_params()["trees"] == PRESETS["cpu-fast"].trees
    kept = clone(model).set_params(preset="cpu-fast")  # fields the user set stay set
    assert kept.get_params()["trees"] == 30


def test_state_rules(data):
    _, X, y = data
    model = PriceRegressor(**CHEAP)
    assert not [name for name in vars(model) if name.endswith("_")]  # __init__ stores arguments only
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(X)
    assert model.fit(X, y) is model and hasattr(model, "predictor_")
    with pytest.raises(ValueError, match="finite numbers > 0; row 3"):
        PriceRegressor(**CHEAP).fit(X, np.where(np.arange(len(y)) == 3, -1.0, y))
    with pytest.raises(ValueError, match="40 listings but y has 39"):
        PriceRegressor(**CHEAP).fit(X, y[:-1])


def test_score_is_r2_and_the_scorer_is_minus_smape(data):
    _, X, y = data
    model = PriceRegressor(**CHEAP).fit(X, y)
    from sklearn.metrics import r2_score

    assert model.score(X, y) == pytest.approx(r2_score(y, model.predict(X)))
    assert smape_scorer(model, X, y) == pytest.approx(-smape(model.predict(X), y))


def test_cross_val_score_with_smape(data):
    _, X, y = data
    scores = cross_val_score(PriceRegressor(**CHEAP), X, y, cv=2, scoring=smape_scorer)
    assert scores.shape == (2,) and (scores < 0).all() and (scores > -200).all()


def test_grid_search_over_a_preset_field(data):
    _, X, y = data
    search = GridSearchCV(PriceRegressor(**CHEAP), param_grid={"trees": [20, 30]}, cv=2, scoring=smape_scorer).fit(X, y)
    assert search.best_params_["trees"] in (20, 30)
    assert len(search.cv_results_["params"]) == 2
    assert search.best_estimator_.predict(X).shape == (len(y),)
