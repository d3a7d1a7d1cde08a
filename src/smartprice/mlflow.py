"""MLflow pyfunc flavour: log or save a fitted model so `mlflow.pyfunc.load_model(uri).predict(frame)` prices listings.

    >>> import smartprice.mlflow
    >>> info = smartprice.mlflow.log_model(model, name="model")        # inside mlflow.start_run()
    >>> mlflow.pyfunc.load_model(info.model_uri).predict(frame)       # DataFrame with a `price` column

The model directory that `PricePredictor.save` writes (npz, JSON and LightGBM text: nothing that
executes on load) is stored as the MLflow model's data; MLflow loads it through this module's
`_load_pyfunc`, so no Python object is pickled. The signature: input `catalog_content` (string) and
optional `sample_id` (string), output `price` (double). The requirements pin this smartprice version.
Needs the `mlflow` extra (`mlflow-skinny`). This module is `smartprice.mlflow`; `import mlflow`
below is absolute and reaches the MLflow package.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from sharedcore.about import __version__

from .catalog import ID_COLUMN, TEXT_COLUMN
from .errors import MissingExtraError
from .predictor import PricePredictor

LOADER_MODULE = "smartprice.mlflow"  # MLflow imports this module and calls its _load_pyfunc(data_path)
PRICE_OUTPUT = "price"
EXAMPLE = "Item Name: Barilla Spaghetti 16 oz (Pack of 12)\nValue: 192.0\nUnit: Ounce\n"  # stored as the input example
INSTALL = "pip install 'smartprice[mlflow]'"


def _mlflow() -> Any:
    """The MLflow package, or a RuntimeError saying how to install it."""
    try:
        import mlflow
        import mlflow.pyfunc  # noqa: F401
    except ImportError:
        raise MissingExtraError(f"MLflow support needs the mlflow extra: {INSTALL}") from None
    return mlflow


def signature() -> Any:
    """Input: catalog_content (string), optional sample_id (string); output: price (double)."""
    _mlflow()
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs = Schema([ColSpec("string", TEXT_COLUMN), ColSpec("string", ID_COLUMN, required=False)])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", PRICE_OUTPUT)]))


def pip_requirements(model: PricePredictor) -> list[str]:
    """This smartprice version, with the nn extra when the model is a transformer or a blend."""
    from .kinds import needs_nn

    extra = "[nn]" if needs_nn(model.config_) else ""
    return [f"smartprice{extra}=={__version__}"]


def _predictor(model: Any) -> PricePredictor:
    """A fitted PricePredictor from a PricePredictor, a fitted sklearn PriceRegressor or a model directory."""
    if isinstance(model, (str, Path)):
        return PricePredictor.load(model)
    model = getattr(model, "predictor_", model)  # smartprice.sklearn.PriceRegressor
    if not isinstance(model, PricePredictor) or not hasattr(model, "model_"):
        raise ValueError("expected a fitted PricePredictor, a fitted PriceRegressor or a model directory")
    return model


def save_model(model: Any, path: str | Path, **kwargs: Any) -> None:
    """Write an MLflow model directory at `path`; `kwargs` go to mlflow.pyfunc.save_model (e.g. metadata)."""
    mlflow = _mlflow()
    predictor = _predictor(model)
    kwargs.setdefault("input_example", pd.DataFrame({TEXT_COLUMN: [EXAMPLE], ID_COLUMN: ["1"]}))
    with tempfile.TemporaryDirectory() as scratch:
        data = _model_dir(model, predictor, Path(scratch))
        mlflow.pyfunc.save_model(str(path), loader_module=LOADER_MODULE, data_path=str(data), signature=signature(),
                                 pip_requirements=pip_requirements(predictor), **kwargs)


def log_model(model: Any, name: str = "model", **kwargs: Any) -> Any:
    """Log the model to the active run (or a new one) as artifact `name`; returns MLflow's ModelInfo.

    `kwargs` go to mlflow.pyfunc.log_model (registered_model_name, metadata, ...).
    """
    mlflow = _mlflow()
    predictor = _predictor(model)
    kwargs.setdefault("input_example", pd.DataFrame({TEXT_COLUMN: [EXAMPLE], ID_COLUMN: ["1"]}))
    with tempfile.TemporaryDirectory() as scratch:
        data = _model_dir(model, predictor, Path(scratch))
        return mlflow.pyfunc.log_model(name=name, loader_module=LOADER_MODULE, data_path=str(data),
                                       signature=signature(), pip_requirements=pip_requirements(predictor), **kwargs)


def _model_dir(model: Any, predictor: PricePredictor, scratch: Path) -> Path:
    """The smartprice model directory to store: copied if given as one, else written by `save`."""
    target = scratch / "smartprice-model"
    if isinstance(model, (str, Path)):
        shutil.copytree(model, target)
        return target
    return predictor.save(target)


class PricePyfunc:
    """What mlflow.pyfunc.load_model wraps: prices for a frame with a catalog_content column."""

    def __init__(self, predictor: PricePredictor) -> None:
        self.predictor = predictor

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """A `price` column, one row per input row, in order (same prices as PricePredictor.predict)."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        prices = self.predictor.predict(frame)
        return pd.DataFrame({PRICE_OUTPUT: prices}, index=frame.index)


def _load_pyfunc(data_path: str) -> PricePyfunc:
    """MLflow's entry point for this flavour: load the stored smartprice model directory."""
    return PricePyfunc(PricePredictor.load(data_path))
