"""The page `smartprice serve` answers a browser with: price one listing, price a file, read the model's card.

`router` (routes.py) is mounted beside the JSON API and uses the model the API loaded (`app.state`).
Server-rendered HTML (Jinja2, autoescaped), one small stylesheet and script of our own: it opens with
no network and works without JavaScript.
"""

from .routes import FORM_PATHS, router

__all__ = ["FORM_PATHS", "router"]
