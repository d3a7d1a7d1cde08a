"""MLflow: the pyfunc flavour round trip, and the training loop's tracker (log_with=mlflow), in a local file store."""

from __future__ import annotations

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install 'smartprice[mlflow]'")

pytest.importorskip("mlflow.pyfunc")

from conftest import make_catalog  # noqa: E402
from sharedcore.about import __version__  # noqa: E402
from smartprice import PricePredictor  # noqa: E402


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A local file store in tmp_path (MLflow 3 asks for this variable to use one) as the tracking URI."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # what Accelerate's tracker and log_with read
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def model():
    return PricePredictor("cpu", trees=30, folds=2, hash_bits=16).fit(make_catalog(40))


def test_log_model_load_model_gives_identical_prices(tracking, model):
    import smartprice.mlflow

    frame = make_catalog(25, labelled=False)
    with mlflow.start_run():
        info = smartprice.mlflow.log_model(model, name="model")
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    out = loaded.predict(frame[["sample_id", "catalog_content"]])
    np.testing.assert_array_equal(out["price"].to_numpy(), model.predict(frame))
    np.testing.assert_array_equal(loaded.predict(frame[["catalog_content"]])["price"].to_numpy(), model.predict(frame))
    inputs = {c.name: (c.type.name, c.required) for c in loaded.metadata.signature.inputs.inputs}
    assert inputs == {"catalog_content": ("string", True), "sample_id": ("string", False)}
    assert [(c.name, c.type.name) for c in loaded.metadata.signature.outputs.inputs] == [("price", "double")]


def test_save_model_pins_the_version_and_stores_the_model_directory(tmp_path, model):
    import smartprice.mlflow

    model.save(tmp_path / "plain")
    smartprice.mlflow.save_model(tmp_path / "plain", tmp_path / "mlflow-model")  # from a model directory too
    requirements = (tmp_path / "mlflow-model" / "requirements.txt").read_text().split()
    assert f"smartprice=={__version__}" in requirements
    assert (tmp_path / "mlflow-model" / "data" / "smartprice-model" / "config.json").exists()
    assert not list((tmp_path / "mlflow-model").rglob("*.pkl"))  # nothing pickled
    frame = make_catalog(10, labelled=False)
    prices = mlflow.pyfunc.load_model(str(tmp_path / "mlflow-model")).predict(frame)["price"].to_numpy()
    np.testing.assert_array_equal(prices, model.predict(frame))


def test_fusion_training_with_log_with_mlflow_leaves_metrics(tracking, tmp_path):
    pytest.importorskip("transformers", reason="needs the nn extra")
    from conftest import tiny_encoder

    encoder = tiny_encoder("distilroberta", tmp_path / "encoder")
    loop = {"epochs": 2, "batch_size": 8, "grad_accum": 2, "progress": False, "num_workers": 0, "log_with": "mlflow"}
    PricePredictor("blazing", encoder=encoder, max_length=32, eval_batch_size=16, loop=loop).fit(make_catalog(48))
    runs = mlflow.search_runs(experiment_names=["smartprice"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["encoder"] == encoder and run.data.params["loop.epochs"] == "2"  # the preset's fields
    client = mlflow.MlflowClient()
    steps = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(steps) >= 4 and all(np.isfinite(m.value) for m in steps)  # per optimizer step
    assert len(client.get_metric_history(run.info.run_id, "lr")) == len(steps)
    assert len(client.get_metric_history(run.info.run_id, "valid_smape")) == 2  # per epoch
    assert run.info.status == "FINISHED"


def test_unknown_tracker_is_an_error():
    pytest.importorskip("torch", reason="needs the nn extra")
    from trainloop.loop import _tracker

    assert _tracker("") is None and _tracker("none") is None and _tracker("MLflow") == "mlflow"
    with pytest.raises(ValueError, match="choose mlflow, tensorboard or none"):
        _tracker("wandb")
