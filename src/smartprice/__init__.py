"""smartprice: predict a product's price from its catalog listing."""

from .catalog import CatalogError, read_catalog
from .metrics import smape, smape_report
from .predictor import PricePredictor

__all__ = ["CatalogError", "PricePredictor", "read_catalog", "smape", "smape_report"]
__version__ = "0.1.0"
