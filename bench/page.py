"""The page's benchmark: a real `smartprice serve` subprocess on 127.0.0.1, driven by httpx as a browser would.

Trains the default cpu model on ../shared/data/train.csv into a temporary directory (or takes
--model), starts the server on a free port and measures:
  1. one pasted listing answered (POST /price: price, range, parsed fields, neighbours, explanation):
     the server's own time (its Server-Timing header) p50 / p90 over --listings holdout listings, one
     at a time, and the client's round trip, each paired with the same listing sent to the JSON API
     (price and range, no explanation: the baseline); plus the first answer after start;
  2. test_unlabeled.csv (4,390 rows) uploaded to POST /price-file and the priced CSV returned:
     wall time at the client per run (--uploads runs) and the server's time, each run paired with
     the same rows sent to the JSON API's /predict (the model's own cost, the baseline);
  3. the page's weight before an answer: GET / and the stylesheet and script it links.
The client runs on the same cores as the server. Last line: one JSON object.

    python bench/page.py [--model DIR] [--listings 200] [--uploads 3]
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGETS = {"listing_server_p50_ms": 50, "upload_4390_rows_s": 5.0, "page_kb": 100}  # issue 26


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_ms(response: httpx.Response) -> float:
    return float(response.headers["server-timing"].split("dur=")[1])


def start(model: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "smartprice", "-q", "serve", str(model), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start within 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model directory (default: fit the default preset on train.csv)")
    parser.add_argument("--listings", type=int, default=200, help="holdout listings pasted one at a time")
    parser.add_argument("--uploads", type=int, default=3, help="uploads of test_unlabeled.csv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model = args.model
        if model is None:
            model = Path(work) / "model"
            print("fitting the default preset on train.csv ...", flush=True)
            subprocess.run([sys.executable, "-m", "smartprice", "-q", "train", str(DATA / "train.csv"), "--out", str(model)],
                           check=True)
        process, url = start(model)
        try:
            result = measure(url, args)
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(json.dumps(result))


def measure(url: str, args: argparse.Namespace) -> dict:
    texts = pd.read_csv(DATA / "holdout.csv", dtype=str, keep_default_na=False).catalog_content.tolist()[:args.listings]
    upload = (DATA / "test_unlabeled.csv").read_bytes()
    unlabeled = pd.read_csv(DATA / "test_unlabeled.csv", dtype=str, keep_default_na=False)
    items = [{"sample_id": i, "catalog_content": t} for i, t in zip(unlabeled.sample_id, unlabeled.catalog_content)]
    with httpx.Client(base_url=url, timeout=120) as client:
        first = client.post("/price", data={"listing": texts[0]})
        first.raise_for_status()
        ranges = client.get("/model").json().get("ranges", False)
        served, round_trip, json_trip = [], [], []
        for text in texts:  # each paired with the same listing sent to the JSON API (price, and range if the model has one)
            started = time.perf_counter()
            response = client.post("/price", data={"listing": text})
            round_trip.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            assert 'class="price"' in response.text
            served.append(server_ms(response))
            started = time.perf_counter()
            client.post("/predict", json={"items": [{"sample_id": "1", "catalog_content": text}],
                                          **({"interval": 0.8} if ranges else {})}).raise_for_status()
            json_trip.append((time.perf_counter() - started) * 1000)
        print(f"one pasted listing (explanation{' and range' if ranges else ''} included), {len(texts)} holdout listings "
              f"one at a time: server p50 {np.percentile(served, 50):.1f} ms, p90 {np.percentile(served, 90):.1f} ms; "
              f"round trip p50 {np.percentile(round_trip, 50):.1f} ms; first answer after start {server_ms(first):.1f} ms "
              f"(target p50 <= {TARGETS['listing_server_p50_ms']} ms); the same listing by the JSON API "
              f"(price{' and range' if ranges else ''}, no explanation), paired: round trip p50 "
              f"{np.percentile(json_trip, 50):.1f} ms")
        walls, upload_served, baseline = [], [], []
        for _ in range(args.uploads):  # each upload paired with the same rows sent to the JSON API: the model's own cost
            started = time.perf_counter()
            response = client.post("/price-file", files={"file": ("test_unlabeled.csv", upload, "text/csv")})
            walls.append(time.perf_counter() - started)
            response.raise_for_status()
            assert response.content.count(b"\n") == 4391, "expected a header and 4,390 rows"
            upload_served.append(server_ms(response) / 1000)
            started = time.perf_counter()
            client.post("/predict", json={"items": items}).raise_for_status()
            baseline.append(time.perf_counter() - started)
        print(f"test_unlabeled.csv (4,390 rows, {len(upload) / 2**20:.1f} MB) uploaded, priced and returned: "
              f"{', '.join(f'{w:.2f}' for w in walls)} s (median {np.median(walls):.2f} s; server "
              f"{np.median(upload_served):.2f} s; target <= {TARGETS['upload_4390_rows_s']} s); the same rows as one "
              f"JSON /predict request, paired: {', '.join(f'{b:.2f}' for b in baseline)} s (page / JSON "
              f"{np.median(walls) / np.median(baseline):.2f}x)")
        page = client.get("/")
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
        sizes = {"/": len(page.content), **{a: len(client.get(a).content) for a in assets}}
        total_kb = sum(sizes.values()) / 1000
        parts = ", ".join(f"{name} {size / 1000:.1f} KB" for name, size in sizes.items())
        print(f"page weight before an answer: {total_kb:.1f} KB ({parts}; target <= {TARGETS['page_kb']} KB)")
    return {"listing_server_p50_ms": round(float(np.percentile(served, 50)), 1),
            "listing_server_p90_ms": round(float(np.percentile(served, 90)), 1),
            "listing_round_trip_p50_ms": round(float(np.percentile(round_trip, 50)), 1),
            "json_listing_round_trip_p50_ms": round(float(np.percentile(json_trip, 50)), 1), "ranges": ranges,
            "first_answer_ms": round(server_ms(first), 1), "upload_4390_rows_s": round(float(np.median(walls)), 2),
            "upload_server_s": round(float(np.median(upload_served)), 2),
            "json_predict_4390_rows_s": round(float(np.median(baseline)), 2), "page_kb": round(total_kb, 1),
            "targets": TARGETS}


if __name__ == "__main__":
    main()
