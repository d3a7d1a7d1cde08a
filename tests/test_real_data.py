"""A fit on a slice of the shared real training rows (skipped when ../shared/data is absent)."""

from __future__ import annotations

import numpy as np

from conftest import shared_file
from smartprice import PricePredictor, read_catalog


def test_fit_on_real_slice_beats_median():
    frame = read_catalog(shared_file("train.csv"), labelled=True)
    train, test = frame.iloc[:1500], frame.iloc[1500:2000]
    model = PricePredictor(preset="cpu-fast").fit(train)
    report = model.score(test)
    median = np.median(train.price)
    constant = 100 * np.mean(2 * abs(median - test.price) / (median + test.price))
    assert report["smape"] < constant - 5  # clearly better than the median price
    prices = model.predict(read_catalog(shared_file("sample_test.csv")))
    assert len(prices) == 100 and np.isfinite(prices).all() and (prices > 0).all()
