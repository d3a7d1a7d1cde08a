"""Where the benchmarks find the real data, and what they say when some of it is absent.

The files live beside the checkout, in ../shared/data (never in the repository). A benchmark checks
the files of every part it was asked to run before any work: a part that was the point of the run
stops it with status 2 naming the part, the files and how to get them; a side measure it can do
without is announced as skipped on stderr and recorded as skipped in its JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HOW_TO_GET = (f"to run it, put the real data in {DATA}, a folder beside the checkout: train.csv, holdout.csv, "
              "stress_extremes.csv and test_unlabeled.csv, rows of the Amazon ML Challenge 2025 ('Smart Product "
              "Pricing') train and test files with columns sample_id, catalog_content, image_link[, price]")


def absent(*names: str) -> list[str]:
    """The named data files that are not there."""
    return [name for name in names if not (DATA / name).is_file()]


def require(bench: str, part: str, *names: str) -> None:
    """Stop with status 2 when a file that `part` (what the run was asked to measure) needs is absent."""
    missing = absent(*names)
    if missing:
        print(f"{bench}: cannot run {part}: {', '.join(missing)} absent from {DATA}; {HOW_TO_GET}", file=sys.stderr)
        sys.exit(2)


def optional(bench: str, part: str, *names: str) -> str | None:
    """None when the files of a side measure are there; else the reason it is skipped, also printed on stderr."""
    missing = absent(*names)
    if not missing:
        return None
    reason = f"{', '.join(missing)} absent from {DATA}"
    print(f"{bench}: skipping {part}: {reason}; {HOW_TO_GET}", file=sys.stderr, flush=True)
    return reason
