"""HTTP API benchmark: a real `smartprice serve` subprocess on 127.0.0.1, driven by httpx for a bounded time.

Trains the default cpu model on ../shared/data/train.csv into a temporary directory (or takes
--model), starts the server on a free port and measures, with listings from test_unlabeled.csv:
  1. single-listing requests/s and latency p50 / p99 with 8 concurrent clients;
  2. rows/s for batches of 1,000 listings (one client per worker process);
  3. 500 bad requests (malformed JSON, non-UTF-8, wrong type, missing fields, 10,001 items,
     a 1 MB field, a 30 MB Content-Length ...) mixed into single-listing traffic, then 1. and 2. again;
  4. errors: good requests that did not get 200 with every price finite > 0, bad requests that
     did not get a 4xx JSON message; the server's peak RSS (each process's VmHWM); SIGTERM exit time.
The client runs on the same cores as the server. Last line: one JSON object.

    python bench/serve.py [--model DIR] [--workers 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from common import DATA, SMARTPRICE, require_data, tree_memory_mib

CLIENTS = 8         # concurrent single-listing clients, as the issue specifies
BATCH_ROWS = 1000   # listings per batch request
BAD_REQUESTS = 500  # bad requests mixed into the traffic
TARGETS = {"single_p99_ms": 25, "single_rps": 500, "batch_rows_per_s": 5000, "failed_good": 0}  # the CPU default's targets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bad_requests(texts: list[str]) -> list[tuple[str, dict]]:
    """BAD_REQUESTS (kind, httpx kwargs) of many kinds, shuffled; a few heavy ones (1 MB field, 10,001 items)."""
    json_h = {"content-type": "application/json"}
    item = {"sample_id": "1", "catalog_content": texts[0]}
    light = [
        ("malformed JSON", {"content": b'{"items": [{"sample_id": "1",', "headers": json_h}),
        ("non-UTF-8", {"content": b'{"items": [{"sample_id": "\xff", "catalog_content": "x"}]}', "headers": json_h}),
        ("wrong content type", {"content": b"a=b", "headers": {"content-type": "text/plain"}}),
        ("no items", {"json": {}}),
        ("empty list", {"json": {"items": []}}),
        ("missing field", {"json": {"items": [{"sample_id": "1"}]}}),
        ("non-string field", {"json": {"items": [{"sample_id": 1, "catalog_content": 5}]}}),
        ("not an object", {"json": [item]}),
        ("empty body", {"content": b"", "headers": json_h}),
        ("deep nesting", {"content": b"[" * 50_000, "headers": json_h}),
    ]
    heavy = [("10,001 items", {"json": {"items": [item] * 10_001}}),
             ("1 MB field", {"json": {"items": [{"sample_id": "1", "catalog_content": "x" * 1_000_000}]}})]
    chosen = [light[i % len(light)] for i in range(BAD_REQUESTS - 10)] + [heavy[i % 2] for i in range(10)]
    random.Random(0).shuffle(chosen)
    return chosen


async def oversize_by_header(port: int) -> int:
    """Declare a 30 MB body and send none: the server must refuse on the header alone."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 30000000\r\n\r\n")
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


def good_ok(response: httpx.Response, n: int) -> bool:
    if response.status_code != 200:
        return False
    prices = [p["price"] for p in response.json()["predictions"]]
    return len(prices) == n and all(math.isfinite(p) and p > 0 for p in prices)


async def singles(client: httpx.AsyncClient, url: str, texts: list[str], seconds: float,
                  bad: list[tuple[str, dict]] | None = None, port: int = 0) -> dict:
    """CLIENTS concurrent clients sending one listing per request for `seconds` (plus any bad requests)."""
    latencies: list[float] = []
    failed = [0]
    bad_results: dict[str, int] = {"as_expected": 0, "unexpected": 0}
    deadline = time.perf_counter() + seconds
    queue = list(bad or [])

    async def one_client(number: int) -> None:
        i = number
        while time.perf_counter() < deadline or queue:  # even clients send the bad requests, odd ones good
            if queue and number % 2 == 0:
                kind, kwargs = queue.pop()
                try:
                    response = await client.post(f"{url}/predict", **kwargs)
                    good = 400 <= response.status_code < 500 and isinstance(response.json().get("detail"), str)
                except (httpx.HTTPError, ValueError):
                    good = False
                bad_results["as_expected" if good else "unexpected"] += 1
                if not good:
                    print(f"  unexpected answer to a bad request ({kind})", file=sys.stderr)
            else:
                body = {"items": [{"sample_id": str(i), "catalog_content": texts[i % len(texts)]}]}
                started = time.perf_counter()
                try:
                    ok = good_ok(await client.post(f"{url}/predict", json=body), 1)
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                failed[0] += not ok
            i += CLIENTS

    started = time.perf_counter()
    await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
    if bad is not None:
        for _ in range(3):
            ok = await oversize_by_header(port) == 413
            bad_results["as_expected" if ok else "unexpected"] += 1
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    result = {"requests": len(latencies), "requests_per_s": len(latencies) / elapsed,
              "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "failed": failed[0]}
    if bad is not None:
        result["bad_requests"] = bad_results
    return result


async def batches(client: httpx.AsyncClient, url: str, texts: list[str], seconds: float, concurrency: int) -> dict:
    """`concurrency` clients sending BATCH_ROWS listings per request for `seconds` (each sends at least one)."""
    rows, failed, latencies = [0], [0], []
    deadline = time.perf_counter() + seconds

    async def one_client(number: int) -> None:
        start = number * BATCH_ROWS
        while True:
            chunk = [texts[(start + j) % len(texts)] for j in range(BATCH_ROWS)]
            body = {"items": [{"sample_id": str(j), "catalog_content": t} for j, t in enumerate(chunk)]}
            began = time.perf_counter()
            try:
                ok = good_ok(await client.post(f"{url}/predict", json=body), BATCH_ROWS)
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - began)
            rows[0] += BATCH_ROWS if ok else 0
            failed[0] += not ok
            start += concurrency * BATCH_ROWS
            if time.perf_counter() >= deadline:
                return

    started = time.perf_counter()
    await asyncio.gather(*(one_client(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "rows_per_s": rows[0] / elapsed, "seconds_per_batch": float(np.median(latencies)),
            "failed": failed[0]}


async def drive(url: str, port: int, texts: list[str], seconds: float, workers: int) -> dict:
    limits = httpx.Limits(max_connections=CLIENTS + workers, max_keepalive_connections=CLIENTS + workers)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await singles(client, url, texts, 2)  # warm-up: connections, every worker's first calls
        results = {"single": await singles(client, url, texts, seconds)}
        print(f"single listing, {CLIENTS} clients: {results['single']['requests_per_s']:.0f} req/s, "
              f"p50 {results['single']['p50_ms']:.1f} ms, p99 {results['single']['p99_ms']:.1f} ms", flush=True)
        results["batch"] = await batches(client, url, texts, seconds, workers)
        print(f"batches of {BATCH_ROWS}: {results['batch']['rows_per_s']:.0f} rows/s "
              f"({results['batch']['seconds_per_batch']:.2f} s per batch)", flush=True)
        results["mixed"] = await singles(client, url, texts, seconds, bad_requests(texts), port)
        print(f"{BAD_REQUESTS} bad requests mixed in: {results['mixed']['bad_requests']}, singles meanwhile "
              f"{results['mixed']['requests_per_s']:.0f} req/s, p99 {results['mixed']['p99_ms']:.1f} ms", flush=True)
        results["single_after_bad"] = await singles(client, url, texts, seconds)
        results["batch_after_bad"] = await batches(client, url, texts, seconds, workers)
        print(f"after them: single {results['single_after_bad']['requests_per_s']:.0f} req/s, "
              f"p50 {results['single_after_bad']['p50_ms']:.1f} ms, p99 {results['single_after_bad']['p99_ms']:.1f} ms; "
              f"batches {results['batch_after_bad']['rows_per_s']:.0f} rows/s", flush=True)
        results["health_after"] = (await client.get(f"{url}/health")).status_code
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory to serve (default: train the cpu preset on train.csv)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default: 2, one per core)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    args = parser.parse_args()
    require_data("bench/serve.py", "train.csv", "test_unlabeled.csv")
    texts = pd.read_csv(DATA / "test_unlabeled.csv", dtype=str, keep_default_na=False)["catalog_content"].tolist()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = Path(tmp) / "model"
            started = time.perf_counter()
            subprocess.run([*SMARTPRICE, "train", str(DATA / "train.csv"), "--out", str(model)],
                           check=True, stdout=subprocess.DEVNULL)
            print(f"trained the cpu preset on train.csv in {time.perf_counter() - started:.0f} s", flush=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w") as log:
            started = time.perf_counter()
            server = subprocess.Popen([*SMARTPRICE, "serve", str(model), "--port", str(port),
                                       "--workers", str(args.workers)], stdout=log, stderr=subprocess.STDOUT)
            try:
                while server.poll() is None:
                    try:
                        if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.1)
                else:
                    sys.exit(f"the server did not start:\n{log_path.read_text()[-3000:]}")
                startup_s = time.perf_counter() - started
                print(f"server up in {startup_s:.1f} s ({args.workers} workers, port {port})", flush=True)
                results = asyncio.run(drive(url, port, texts, args.seconds, args.workers))
                rss = {str(pid): mib for pid, (_, mib) in tree_memory_mib(server.pid).items()}  # each one's peak
                stopping = time.perf_counter()
                server.send_signal(signal.SIGTERM)
                exit_code = server.wait(120)
                results["sigterm_exit_s"] = time.perf_counter() - stopping
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
        tracebacks = log_path.read_text().count("Traceback")
    good_failed = sum(results[k]["failed"] for k in ("single", "batch", "mixed", "single_after_bad", "batch_after_bad"))
    summary = {
        "workers": args.workers, "seconds_per_phase": args.seconds, "startup_s": startup_s,
        "single_rps": results["single"]["requests_per_s"], "single_p50_ms": results["single"]["p50_ms"],
        "single_p99_ms": results["single"]["p99_ms"], "batch_rows_per_s": results["batch"]["rows_per_s"],
        "after_bad": {"single_rps": results["single_after_bad"]["requests_per_s"],
                      "single_p50_ms": results["single_after_bad"]["p50_ms"],
                      "single_p99_ms": results["single_after_bad"]["p99_ms"],
                      "batch_rows_per_s": results["batch_after_bad"]["rows_per_s"]},
        "bad_requests": results["mixed"]["bad_requests"], "failed_good": good_failed,
        "server_peak_rss_mib": {"per_process": rss, "total": sum(rss.values())},
        "server_tracebacks": tracebacks, "sigterm_exit_code": exit_code, "sigterm_exit_s": results["sigterm_exit_s"],
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    summary["meets"] = {"single_p99_ms": summary["single_p99_ms"] <= TARGETS["single_p99_ms"],
                        "single_rps": summary["single_rps"] >= TARGETS["single_rps"],
                        "batch_rows_per_s": summary["batch_rows_per_s"] >= TARGETS["batch_rows_per_s"],
                        "failed_good": good_failed == TARGETS["failed_good"]}
    print(f"errors: {good_failed} failed good requests, {summary['bad_requests']['unexpected']} bad requests answered "
          f"other than 4xx, {tracebacks} tracebacks in the server log; peak RSS "
          f"{summary['server_peak_rss_mib']['total']:.0f} MiB over {len(rss)} processes; SIGTERM exit "
          f"{exit_code} in {results['sigterm_exit_s']:.1f} s")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
