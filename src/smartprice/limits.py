"""What one HTTP request may hold (the JSON API and the page share them), and the listing a server warms up with."""

from __future__ import annotations

MAX_ITEMS = 10_000                 # listings per request: one request stays seconds of work (bench/serve.py)
MAX_BODY_BYTES = 20 * 1024 * 1024  # 10,000 listings at 2 KB (train.csv: mean 0.9 KB, longest 6.2 KB)
MAX_TEXT_CHARS = 100_000           # one catalog_content: 16x the longest in train.csv (6,192 characters)
MAX_ID_CHARS = 256                 # one sample_id: ids are short keys, echoed back
WARM_UP_LISTING = "Item Name: Warm-up Coffee Beans, 12 Ounce (Pack of 2)\nValue: 24.0\nUnit: Ounce\n"
