"""The HTTP API: good and bad requests through a client, the CLI's start-up errors, and a real server.

Bad input must always be a 4xx JSON body with a message, never a 500 or a dead worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'smartprice[serve]'")
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install 'smartprice[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import make_catalog  # noqa: E402
from smartprice import PricePredictor  # noqa: E402
from smartprice.cli import main  # noqa: E402
from smartprice.modelio import FORMAT_VERSION, ModelDirError  # noqa: E402
from smartprice.serve import MAX_BODY_BYTES, MAX_ITEMS, MAX_TEXT_CHARS, BodyGuard, Coalescer, create_app  # noqa: E402

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small cpu model saved to disk (the preset's defaults but fewer trees, folds and hash columns, for speed)."""
    path = tmp_path_factory.mktemp("serve") / "model"
    PricePredictor(preset="cpu", trees=30, folds=3, hash_bits=16).fit(make_catalog(60)).save(path)
    return path


@pytest.fixture(scope="module")
def client(model_dir):
    with TestClient(create_app(model_dir)) as test_client:  # one event loop for the module's requests
        yield test_client


def items(n: int, start: int = 0) -> list[dict]:
    frame = make_catalog(start + n, labelled=False).iloc[start:]
    return [{"sample_id": s, "catalog_content": t} for s, t in zip(frame.sample_id, frame.catalog_content)]


def test_predict_matches_the_python_api(client, model_dir):
    body = items(12) + [{"sample_id": "blank", "catalog_content": "", "image_link": "https://x/1.jpg"},
                        {"sample_id": "ünï", "catalog_content": "Item Name: Café ☕ 12 oz\nValue: 12\nUnit: Ounce"}]
    response = client.post("/predict", json={"items": body})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["sample_id"] for p in predictions] == [item["sample_id"] for item in body]
    prices = np.array([p["price"] for p in predictions])
    assert np.isfinite(prices).all() and (prices > 0).all()
    import pandas as pd

    expected = PricePredictor.load(model_dir).predict(pd.DataFrame(body))
    np.testing.assert_allclose(prices, expected, rtol=1e-9)


def test_health_model_and_docs(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["preset"] == "cpu" and info["kind"] == "cpu" and info["format_version"] == FORMAT_VERSION
    assert info["training_rows"] == 60
    assert info["fit_date"] and "validation" in info
    assert info["limits"]["max_items"] == MAX_ITEMS
    assert "/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_open_offline(client, page):
    html = client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    links = re.findall(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""", html.text)
    assert links and not [link for link in links if re.match(r"(https?:)?//", link)], links  # no external host
    for link in links:  # the scripts, styles and icon are served by the app itself
        assert client.get(link).status_code == 200, link


GOOD = {"items": [{"sample_id": "1", "catalog_content": "Item Name: Tea 20 Count\nValue: 20\nUnit: Count"}]}
BAD_REQUESTS = {
    "malformed JSON": ({"content": b'{"items": [', "headers": JSON}, 400, "malformed JSON at character 11"),
    "JSON nested too deeply": ({"content": b"[" * 100_000, "headers": JSON}, 400, "cannot parse the body as JSON"),
    "non-UTF-8 bytes": ({"content": b'{"items": [{"sample_id": "\xff\xfe", "catalog_content": "x"}]}', "headers": JSON},
                        400, "not valid UTF-8 (byte 26)"),
    "wrong content type": ({"content": b"sample_id=1", "headers": {"content-type": "application/x-www-form-urlencoded"}},
                           415, "Content-Type must be application/json"),
    "no content type": ({"content": json.dumps(GOOD).encode()}, 415, "the request has none"),
    "latin-1 charset": ({"content": json.dumps(GOOD).encode(), "headers": {"content-type": "application/json; charset=latin-1"}},
                        415, "must be UTF-8"),
    "empty body": ({"content": b"", "headers": JSON}, 422, "request body is empty"),
    "not an object": ({"json": [GOOD]}, 422, "request body: must be a JSON object, got a list"),
    "no items": ({"json": {"listings": []}}, 422, "items: required field is missing"),
    "items not a list": ({"json": {"items": "abc"}}, 422, "items: must be a list, got a string"),
    "empty list": ({"json": {"items": []}}, 422, "items: send 1 to 10,000 listings, got 0"),
    "too many items": ({"json": {"items": GOOD["items"] * (MAX_ITEMS + 1)}}, 422, "got 10,001"),
    "missing catalog_content": ({"json": {"items": [{"sample_id": "1"}]}}, 422,
                                "items[0].catalog_content: required field is missing"),
    "missing sample_id": ({"json": {"items": [{"catalog_content": "x"}]}}, 422, "items[0].sample_id: required field is missing"),
    "numeric sample_id": ({"json": {"items": [{"sample_id": 7, "catalog_content": "x"}]}}, 422,
                          "items[0].sample_id: must be a string, got a number"),
    "null catalog_content": ({"json": {"items": [{"sample_id": "1", "catalog_content": None}]}}, 422,
                             "items[0].catalog_content: must be a string, got null"),
    "list catalog_content": ({"json": {"items": [{"sample_id": "1", "catalog_content": ["a"]}]}}, 422, "got a list"),
    "blank sample_id": ({"json": {"items": [{"sample_id": "", "catalog_content": "x"}]}}, 422, "items[0].sample_id"),
    "item not an object": ({"json": {"items": ["Item Name: Tea"]}}, 422, "items[0]: must be a JSON object, got a string"),
    "unpaired surrogate": ({"content": b'{"items": [{"sample_id": "1", "catalog_content": "\\ud800"}]}', "headers": JSON},
                           422, "unpaired surrogate"),
    "10 MB catalog_content": ({"json": {"items": [{"sample_id": "1", "catalog_content": "x" * 10_000_000}]}}, 422,
                              f"String should have at most {MAX_TEXT_CHARS} characters"),
    "body over 20 MB": ({"content": b" " * (MAX_BODY_BYTES + 1), "headers": JSON}, 413, "over the limit"),
    "chunked body over 20 MB": ({"content": (b" " * 2**20 for _ in range(21)), "headers": JSON}, 413, "over the limit"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_with_a_message(client, name):
    kwargs, status, message = BAD_REQUESTS[name]
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and message in detail
    assert client.post("/predict", json=GOOD).status_code == 200  # and the server still prices


def test_many_errors_are_summarised(client):
    response = client.post("/predict", json={"items": [{"sample_id": i} for i in range(50)]})
    assert response.status_code == 422
    assert response.json()["detail"].endswith("and 95 more errors")


def test_unknown_paths_and_methods_are_json_4xx(client):
    assert client.get("/nowhere").status_code == 404 and client.get("/nowhere").json()["detail"]
    assert client.get("/predict").status_code == 405 and client.get("/predict").json()["detail"]


def test_access_line_gets_latency_and_items():
    """uvicorn's own access line (as its protocol logs it) with the request's latency and items added."""
    from smartprice.serve import REQUEST_NOTE, AccessNote

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "POST", "/predict", "1.1", 200), None)
    token = REQUEST_NOTE.set({"started": time.perf_counter() - 0.0123, "items": 3})
    try:
        assert AccessNote().filter(record)
    finally:
        REQUEST_NOTE.reset(token)
    from uvicorn.logging import AccessFormatter

    from smartprice.serve import uvicorn_log_config

    line = AccessFormatter(uvicorn_log_config(logging.INFO)["formatters"]["access"]["fmt"], use_colors=False).format(record)
    assert re.fullmatch(r'INFO: +127\.0\.0\.1:5000 - "POST /predict HTTP/1\.1" 200 OK \d+\.\d ms items=3', line), line


def test_model_failure_is_logged_and_the_worker_lives(model_dir, caplog, monkeypatch):
    app = create_app(model_dir)
    with TestClient(app, raise_server_exceptions=False) as test_client:  # answer the 500 as a server would
        monkeypatch.setattr(app.state.predictor, "predict", lambda frame: 1 / 0)
        with caplog.at_level("ERROR", logger="smartprice.serve"):
            response = test_client.post("/predict", json=GOOD)
        assert response.status_code == 500 and "bug in smartprice" in response.json()["detail"]
        assert "ZeroDivisionError" in response.json()["detail"] and "Traceback" in caplog.text
        assert "ZeroDivisionError" in caplog.text
        monkeypatch.undo()
        assert test_client.post("/predict", json=GOOD).status_code == 200


def test_large_request_does_not_fork(client, monkeypatch):
    """Served models run in-process: forking from a threaded server is unsafe (see serve.py)."""
    def no_fork():
        raise AssertionError("the server forked")

    monkeypatch.setattr(os, "fork", no_fork)
    response = client.post("/predict", json={"items": items(2500)})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 2500


def test_coalescer_merges_concurrent_requests_and_isolates_failures():
    calls = []

    def predict(texts):
        calls.append(len(texts))
        time.sleep(0.01)
        if "boom" in texts:
            raise ValueError("boom")
        return np.array([float(t) for t in texts])

    async def scenario():
        coalesce = Coalescer(predict, max_rows=8)
        requests = [[str(i)] for i in range(20)] + [["100", "boom"]] + [[str(i) for i in range(30)]]
        return await asyncio.gather(*(coalesce(r) for r in requests), return_exceptions=True)

    results = asyncio.run(scenario())
    assert [list(r) for r in results[:20]] == [[float(i)] for i in range(20)]
    assert isinstance(results[20], ValueError)
    assert list(results[21]) == [float(i) for i in range(30)]
    assert len(calls) < 15 and max(calls) <= 30  # merged, and the big request ran alone


def test_body_guard_stops_reading_at_the_limit():
    received, sent = [], []

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # a client that never stops

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # reads the body as Starlette does, piece by piece
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the app must not get an over-limit body whole")

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(BodyGuard(app, max_bytes=10_000)(scope, receive, send))
    assert len(received) == 11 and sent[0]["status"] == 413


def test_broken_model_dirs_fail_at_start(model_dir, tmp_path):
    import shutil

    with pytest.raises(ModelDirError, match="model directory not found"):
        create_app(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="not a smartprice model"):
        create_app(tmp_path / "empty")
    truncated = shutil.copytree(model_dir, tmp_path / "truncated")
    (truncated / "lightgbm.txt").write_text("tree\n")
    with pytest.raises(ModelDirError, match="incomplete model"):
        create_app(truncated)
    garbled = shutil.copytree(model_dir, tmp_path / "garbled")
    size = (garbled / "cpu_model.npz").stat().st_size
    (garbled / "cpu_model.npz").write_bytes(b"\0" * size)  # right size, wrong bytes
    with pytest.raises(ModelDirError, match="damaged model, cpu_model.npz does not match its checksum") as error:
        create_app(garbled)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("broken, workers", [("missing", "1"), ("garbled", "2")])
def test_cli_errors_before_uvicorn_starts(model_dir, tmp_path, capsys, monkeypatch, broken, workers):
    import shutil

    import uvicorn

    path = tmp_path / broken
    if broken == "garbled":
        shutil.copytree(model_dir, path)
        (path / "lightgbm.txt").write_bytes(b"x" * (path / "lightgbm.txt").stat().st_size)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("uvicorn started"))
    assert main(["serve", str(path), "--workers", workers]) == 2
    error = capsys.readouterr().err
    assert ("model directory not found" if broken == "missing" else "damaged model, lightgbm.txt") in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_cli_without_the_serve_extra_says_what_to_install(model_dir, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fastapi(name, *args, **kwargs):
        if name == "fastapi" or name.startswith("fastapi."):
            raise ModuleNotFoundError("No module named 'fastapi'", name="fastapi")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "smartprice.serve")
    monkeypatch.setattr(builtins, "__import__", no_fastapi)
    assert main(["serve", str(model_dir)]) == 2
    assert "pip install 'smartprice[serve]'" in capsys.readouterr().err


# --- a real server -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "smartprice", "serve", str(model_dir), "--port", str(port), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"server did not start: {process.communicate()[0][-2000:]}")


def test_real_server_finishes_in_flight_requests_on_sigterm(model_dir):
    process, url = start_server(model_dir)
    try:
        assert httpx.post(f"{url}/predict", json=GOOD).status_code == 200
        bad = httpx.post(f"{url}/predict", content=b"\xff{", headers=JSON)
        assert bad.status_code == 400 and "UTF-8" in bad.json()["detail"]
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as raw:
            raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 999999999\r\n\r\n")  # refused on the header: no body is ever sent
            assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")

        done = {}

        body = json.dumps({"items": items(6000)}).encode()

        def slowly() -> Iterator[bytes]:  # in flight for sure: half the body, a pause, the rest
            yield body[: len(body) // 2]
            time.sleep(1.5)
            yield body[len(body) // 2:]

        def slow_request():
            done["response"] = httpx.post(f"{url}/predict", content=slowly(), headers=JSON, timeout=120)
            done["at"] = time.perf_counter()

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.3)
        started = time.perf_counter()
        health = httpx.get(f"{url}/health", timeout=10)  # answered while the prediction runs
        assert health.status_code == 200 and time.perf_counter() - started < 2 and "response" not in done
        signalled = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        worker.join(120)
        assert done["response"].status_code == 200 and len(done["response"].json()["predictions"]) == 6000
        assert done["at"] > signalled  # it was in flight when the signal came, and finished
        assert process.wait(60) in (0, -signal.SIGTERM)  # uvicorn >= 0.29 re-raises the signal once shut down
        log = process.stdout.read()
        assert re.search(r'"POST /predict HTTP/1\.1" 200 OK \d+\.\d ms items=6000', log) and "Traceback" not in log
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=1)
    finally:
        process.kill()
        process.wait()


def test_workers_run_the_factory_in_each_process(model_dir, monkeypatch):
    """--workers N hands uvicorn an import string + factory reading the model from the environment
    (bench/serve.py runs a real two-worker server)."""
    import uvicorn

    from smartprice import serve

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    monkeypatch.delenv(serve.MODEL_ENV, raising=False)
    serve.run(model_dir, port=0, workers=2)
    app, options = calls[0]
    assert app == "smartprice.serve:app_from_env" and options["factory"] and options["workers"] == 2
    assert os.environ[serve.MODEL_ENV] == str(model_dir.resolve())
    with TestClient(serve.app_from_env()) as test_client:
        assert test_client.post("/predict", json=GOOD).status_code == 200


def test_connections_have_nagle_off_even_on_a_socket_bound_as_uvicorn_workers_bind_it():
    """`--workers` binds `socket.socket(AF_INET)` (protocol 0), on which asyncio leaves Nagle on: keep-alive
    clients then waited ~40 ms a request for a delayed ACK. NoDelayHTTP turns it off per connection."""
    import uvicorn
    from uvicorn.server import ServerState

    from smartprice.serve import NoDelayHTTP

    async def accepted_nodelay() -> int:
        listener = socket.socket(socket.AF_INET)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        config = uvicorn.Config(app=create_app_placeholder, log_level="warning")
        config.load()
        made: list[NoDelayHTTP] = []

        def protocol() -> NoDelayHTTP:
            made.append(NoDelayHTTP(config=config, server_state=ServerState(), app_state={}))
            return made[-1]

        server = await asyncio.get_running_loop().create_server(protocol, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        for _ in range(100):
            if made and getattr(made[0], "transport", None) is not None:
                break
            await asyncio.sleep(0.01)
        value = made[0].transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        server.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0


async def create_app_placeholder(scope, receive, send) -> None:
    """An ASGI app for the protocol test above; it is never called."""
