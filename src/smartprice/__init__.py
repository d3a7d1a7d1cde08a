"""smartprice: predict a product's price from its catalog listing.

The API's names are loaded on first use (PEP 562), so importing a submodule (`smartprice.presets`
for `smartprice presets`) does not load pandas and the model stack first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sharedcore.about import __version__

if TYPE_CHECKING:
    from .catalog import read_catalog
    from .errors import CatalogError, ModelDirError, UserError
    from .metrics import smape, smape_report
    from .predictor import PricePredictor

__all__ = ["CatalogError", "ModelDirError", "PricePredictor", "UserError", "__version__", "read_catalog", "smape",
           "smape_report"]
_HOMES = {"CatalogError": "errors", "ModelDirError": "errors", "UserError": "errors", "read_catalog": "catalog",
          "smape": "metrics", "smape_report": "metrics",
          "PricePredictor": "predictor"}  # name -> the module that defines it


def __getattr__(name: str) -> Any:
    """`smartprice.PricePredictor` etc.: import the defining module when the name is first asked for."""
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'smartprice' has no attribute {name!r}")
