"""The pricing HTTP API: `create_app(model_dir)` builds a FastAPI app; `smartprice serve` runs it on uvicorn.

    POST /predict  {"items": [{"sample_id": "1", "catalog_content": "Item Name: ..."}]}
                   -> {"predictions": [{"sample_id": "1", "price": 12.3}]}   (same order, prices finite, > 0)
    GET  /health   {"status": "ok"}
    GET  /model    preset, kind, format version, training rows, fit date, validation figures (null if unknown)

Every error is a 4xx JSON body `{"detail": "<what is wrong>"}`: size limits are checked on the
raw bytes (Content-Length first, then while the body streams in) before any JSON is parsed.
The model directory is read once, when the app is created, so a missing or broken one fails at
start; the lifespan then prices a warm-up listing, so no request pays a first load.

Prediction is CPU-bound and holds the GIL, so it runs in the thread pool (health checks stay
responsive) and small concurrent requests are merged into one model call (see `Coalescer`).
Predicting is safe from any thread (the CPU model's worker processes are fresh interpreters, see
smartprice/cpu/parallel.py); a server scales with `--workers` processes.
"""

from __future__ import annotations

import asyncio
import codecs
import contextvars
import copy
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from .catalog import TEXT_COLUMN
from .coalesce import MAX_BATCH_ROWS, Coalescer  # re-exported: smartprice.serve.Coalescer
from .errors import SettingsError, UserError
from .modelio import ModelDirError, read_config
from .predictor import PricePredictor

log = logging.getLogger(__name__)

MODEL_ENV = "SMARTPRICE_MODEL"     # model directory for `app_from_env`, the factory uvicorn's worker processes call
MAX_ITEMS = 10_000                 # listings per request: one request stays seconds of work (bench/serve.py)
MAX_BODY_BYTES = 20 * 1024 * 1024  # 10,000 listings at 2 KB (train.csv: mean 0.9 KB, longest 6.2 KB)
MAX_TEXT_CHARS = 100_000           # one catalog_content: 16x the longest in train.csv (6,192 characters)
MAX_ID_CHARS = 256                 # one sample_id: ids are short keys, echoed back
MAX_ERRORS_SHOWN = 5               # validation errors spelled out in one message
WARM_UP_LISTING = "Item Name: Warm-up Coffee Beans, 12 Ounce (Pack of 2)\nValue: 24.0\nUnit: Ounce\n"
WARM_UP_ROWS = (1, 1000)  # one listing, and a batch: the small-request path and the one shared with worker processes


# --- request and response bodies ---------------------------------------------------------------

class Listing(BaseModel):
    """One listing to price; other catalog columns (image_link, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    sample_id: str = Field(strict=True, min_length=1, max_length=MAX_ID_CHARS, description="echoed back")
    catalog_content: str = Field(strict=True, max_length=MAX_TEXT_CHARS,
                                 description="Item Name / Bullet Point / Value / Unit lines; blank still gets a price")


class PredictRequest(BaseModel):
    """The listings to price, 1 to MAX_ITEMS of them."""

    items: list[Listing] = Field(min_length=1, max_length=MAX_ITEMS)
    interval: float | None = Field(default=None, gt=0, lt=1, strict=True, allow_inf_nan=False,
                                   description="optional coverage of a calibrated price range (0.8: 80% of such "
                                               "listings' prices fall inside); adds price_low and price_high")


class Prediction(BaseModel):
    """A price for one listing."""

    sample_id: str
    price: float = Field(gt=0, description="finite, > 0, within the training price range")
    price_low: float | None = Field(default=None, gt=0, description="the range's low end (only when interval is asked)")
    price_high: float | None = Field(default=None, gt=0, description="the range's high end (only when interval is asked)")


class PredictResponse(BaseModel):
    """Predictions in the order of the request's items."""

    predictions: list[Prediction]


class ModelInfo(BaseModel):
    """What the server is serving; null where the model directory does not record it."""

    preset: str
    kind: str
    format_version: int
    smartprice_version: str | None
    training_rows: int | None
    fit_date: str | None = Field(description="when the model was saved (ISO 8601, UTC)")
    validation: dict[str, Any] | None
    ranges: bool = Field(description="whether the model gives calibrated price ranges (\"interval\" in /predict)")
    limits: dict[str, int]


# --- the model ------------------------------------------------------------------------------------

def warm_up(predictor: PricePredictor) -> None:
    """Start what a first request would wait for: worker processes, both predict paths, the ranges' trees.

    Requests of up to MAX_ITEMS rows will come: the CPU model starts its worker processes now, and batches
    share them, so a batch uses every core even when one server process holds every client.
    """
    predictor.expect_rows(MAX_ITEMS)
    for rows in WARM_UP_ROWS:
        prices = predictor.predict(pd.DataFrame({TEXT_COLUMN: [WARM_UP_LISTING] * rows}))
        if not (len(prices) == rows and np.isfinite(prices).all() and (prices > 0).all()):
            raise RuntimeError(f"a warm-up listing was priced {prices[:1]!r} (a bug)")
    if predictor.has_ranges:
        predictor.predict_interval(pd.DataFrame({TEXT_COLUMN: [WARM_UP_LISTING]}), 0.8)


def model_info(predictor: PricePredictor) -> dict[str, Any]:
    """GET /model's body: the model's own description and this server's limits."""
    limits = {"max_items": MAX_ITEMS, "max_body_bytes": MAX_BODY_BYTES, "max_text_chars": MAX_TEXT_CHARS,
              "max_id_chars": MAX_ID_CHARS}
    return {**predictor.describe(), "limits": limits}


# --- errors ---------------------------------------------------------------------------------------

def _where(loc: tuple) -> str:
    """("body", "items", 3, "catalog_content") -> "items[3].catalog_content"."""
    text = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request body"


def describe_errors(errors: list[dict[str, Any]]) -> tuple[int, str]:
    """Status and one message for pydantic/JSON errors: 400 for malformed JSON, else 422."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        position = first.get("loc", ("body", "?"))[-1]
        return 400, f"malformed JSON at character {position}: {first.get('ctx', {}).get('error', 'cannot parse')}"
    if first.get("loc") == ("body",) and first.get("type") == "missing":
        return 422, 'request body is empty; send JSON like {"items": [{"sample_id": "1", "catalog_content": "..."}]}'
    messages = []
    for error in errors[:MAX_ERRORS_SHOWN]:
        where = _where(tuple(error.get("loc", ())))
        kind = error.get("type", "")
        if kind in ("too_short", "too_long") and where == "items":
            messages.append(f"items: send 1 to {MAX_ITEMS:,} listings, got {_count(error)}")
        elif kind == "string_unicode":
            messages.append(f"{where}: contains an unpaired surrogate escape (\\ud800-\\udfff); send valid Unicode")
        elif kind == "missing":
            messages.append(f"{where}: required field is missing")
        elif kind in ("string_type", "model_attributes_type", "model_type", "dict_type", "list_type"):
            expected = {"string_type": "a string", "list_type": "a list"}.get(kind, "a JSON object")
            messages.append(f"{where}: must be {expected}, got {_json_type(error.get('input'))}")
        else:
            messages.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(errors) - MAX_ERRORS_SHOWN
    return 422, "; ".join(messages) + (f"; and {more} more errors" if more > 0 else "")


def _count(error: dict[str, Any]) -> str:
    """How many items a too_short/too_long error saw."""
    return f"{error.get('ctx', {}).get('actual_length', '?'):,}"


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    status, message = describe_errors(list(exc.errors()))
    return JSONResponse({"detail": message}, status_code=status)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own errors, with the cause spelled out where it hides one (a body nested too deeply)."""
    detail = exc.detail
    if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps what the body guard raised while it read the body
        return JSONResponse({"detail": exc.__cause__.message}, status_code=exc.__cause__.status)
    if exc.status_code == 400 and exc.__cause__ is not None:
        detail = f"cannot parse the body as JSON ({exc.__cause__})"
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _user_error(request: Request, exc: UserError) -> JSONResponse:
    """A mistake the request made that only the model found: 422 with its one-line message."""
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A defect of ours: 500 with a JSON message, the traceback in the log (bad input never gets here)."""
    log.error("%s %s failed: a bug in smartprice", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}): a bug in smartprice; the server logged "
                                   "its traceback"}, status_code=500)


# --- ASGI middleware: the body guard, and what the access log adds ------------------------------

REQUEST_NOTE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("smartprice_request", default=None)


class AccessNote(logging.Filter):
    """Adds the request's latency and items priced to uvicorn's own access line (`... 200 12.3 ms items=1`).

    It sets `record.note`, which the access format of `uvicorn_log_config` prints after the status.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        note = REQUEST_NOTE.get()
        record.note = ""
        if note is not None:
            items = note.get("items")
            record.note = f" {(time.perf_counter() - note['started']) * 1000:.1f} ms" + (
                f" items={items}" if items is not None else "")
        return True


class BodyTooLarge(Exception):
    """Raised inside `receive` when a body passes the limit or is not UTF-8; BodyGuard answers it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class BodyGuard:
    """Refuse bodies that are too large, not JSON or not UTF-8 before anything parses them.

    The size is checked on Content-Length, then counted as the app reads the body (a chunked or
    lying client is stopped at the limit), each piece decoded incrementally as UTF-8; nothing is
    copied or replayed. Also notes when the request started, for the access log's latency.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, skip: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.skip = skip  # paths whose routes read and limit their own bodies (the page's forms)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        note: dict[str, Any] = {"started": time.perf_counter()}
        scope.setdefault("state", {})["note"] = note
        REQUEST_NOTE.set(note)
        if scope["method"] not in ("POST", "PUT", "PATCH") or scope["path"] in self.skip:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        problem = _content_type_problem(headers.get("content-type"))
        if problem:
            await _refuse(scope, receive, send, 415, problem)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status, why = (400, f"Content-Length {declared!r} is not a number") if not declared.isdigit() else \
                (413, f"body of {int(declared):,} bytes is over the limit of {self.max_bytes:,} bytes")
            await _refuse(scope, receive, send, status, why)
            return
        seen, decoder, started = 0, codecs.getincrementaldecoder("utf-8")(), False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > self.max_bytes:
                    raise BodyTooLarge(413, f"body is over the limit of {self.max_bytes:,} bytes")
                try:
                    decoder.decode(chunk, final=not message.get("more_body", False))
                except UnicodeDecodeError as exc:
                    raise BodyTooLarge(400, f"body is not valid UTF-8 (byte {seen - len(chunk) + exc.start}); "
                                            "send JSON encoded as UTF-8") from None
            return message

        async def noted(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, noted)
        except BodyTooLarge as refused:
            if started:
                raise
            await _refuse(scope, receive, send, refused.status, refused.message)


def _content_type_problem(value: str | None) -> str | None:
    """Why a Content-Type is not acceptable for a JSON body, or None if it is."""
    if value is None:
        return "Content-Type must be application/json (the request has none)"
    media, _, params = value.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        return f"Content-Type must be application/json, got {value!r}"
    charset = next((p.split("=", 1)[1].strip().strip('"').lower() for p in params.split(";")
                    if p.strip().lower().startswith("charset=")), "utf-8")
    if charset not in ("utf-8", "utf8"):
        return f"JSON bodies must be UTF-8, got charset {charset!r}"
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    await JSONResponse({"detail": message}, status_code=status)(scope, receive, send)


# --- the app --------------------------------------------------------------------------------------

def create_app(model_dir: str | Path, *, max_batch_rows: int = MAX_BATCH_ROWS) -> FastAPI:
    """The pricing API for one model directory, checked now (a bad directory raises ModelDirError here).

    The lifespan loads the model and the request merger; `max_batch_rows` caps how many rows
    concurrent small requests are merged into (1: never merge). Mount it in any ASGI server.
    """
    predictor = PricePredictor.load(model_dir)  # missing, damaged or foreign directories: one line, before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(warm_up, predictor)

        def predict_texts(texts: list[str]) -> np.ndarray:
            prices = predictor.predict(pd.DataFrame({TEXT_COLUMN: texts}))
            if not (len(prices) == len(texts) and np.isfinite(prices).all() and (prices > 0).all()):
                raise RuntimeError(f"the model returned {len(prices)} prices for {len(texts)} listings, or one not finite > 0")
            return prices

        app.state.predictor, app.state.info = predictor, model_info(predictor)
        app.state.coalesce = Coalescer(predict_texts, max_rows=max_batch_rows)
        yield

    # /docs and /redoc from Swagger UI / ReDoc files shipped by fastapi-offline: the pages open with no network.
    app = FastAPIOffline(title="smartprice", summary="Price product listings from their catalog text.",
                         version=str(predictor.describe()["smartprice_version"] or "unknown"), lifespan=lifespan,
                         swagger_ui_parameters={"validatorUrl": None})  # no badge fetched from validator.swagger.io
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(UserError, _user_error)
    app.add_exception_handler(Exception, _unexpected_error)
    from . import web  # the page for people (GET /), on the model loaded above

    app.include_router(web.router)
    app.add_middleware(BodyGuard, skip=web.FORM_PATHS)

    errors = {status: {"description": why, "content": {"application/json": {"example": {"detail": "what is wrong"}}}}
              for status, why in ((400, "malformed JSON, bad Content-Length or non-UTF-8 body"),
                                  (413, f"body over {MAX_BODY_BYTES:,} bytes"), (415, "not application/json"),
                                  (422, "missing or non-string field, 0 or too many items, a field too long"),
                                  (500, "a defect of smartprice (its traceback is in the server log)"))}

    @app.post("/predict", response_model=PredictResponse, responses=errors, response_model_exclude_none=True)
    async def predict(body: PredictRequest, request: Request) -> PredictResponse:
        """Prices for 1 to 10,000 listings, in the order given; with `interval`, each price's calibrated range."""
        request.scope["state"]["note"]["items"] = len(body.items)
        texts = [item.catalog_content for item in body.items]
        if body.interval is not None:
            frame = await run_in_threadpool(request.app.state.predictor.predict_interval, pd.DataFrame({TEXT_COLUMN: texts}),
                                            body.interval)
            return PredictResponse(predictions=[
                Prediction(sample_id=item.sample_id, price=float(price), price_low=float(low), price_high=float(high))
                for item, price, low, high in zip(body.items, frame["price"], frame["price_low"], frame["price_high"])])
        prices = await request.app.state.coalesce(texts)  # a failure: 500
        return PredictResponse(predictions=[Prediction(sample_id=item.sample_id, price=float(price))
                                            for item, price in zip(body.items, prices)])

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: answers while predictions run (they run in worker threads)."""
        return {"status": "ok"}

    @app.get("/model", response_model=ModelInfo)
    async def model(request: Request) -> dict[str, Any]:
        """The served model: preset, format version, training rows, fit date, validation figures."""
        return request.app.state.info

    return app


def app_from_env() -> FastAPI:
    """The app for the model directory in $SMARTPRICE_MODEL: uvicorn's factory in each worker process."""
    model_dir = os.environ.get(MODEL_ENV)
    if not model_dir:
        raise ModelDirError(f"${MODEL_ENV} is not set; it names the model directory to serve")
    return create_app(model_dir)


def uvicorn_log_config(level: int) -> dict[str, Any]:
    """uvicorn's logging config plus this package's logger (applied again in every worker process)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["smartprice"] = {"format": "%(asctime)s %(levelname)s %(message)s", "datefmt": "%H:%M:%S"}
    config["handlers"]["smartprice"] = {"class": "logging.StreamHandler", "formatter": "smartprice",
                                        "stream": "ext://sys.stderr"}
    config["loggers"]["smartprice"] = {"handlers": ["smartprice"], "level": logging.getLevelName(level), "propagate": False}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        config["loggers"].setdefault(name, {})["level"] = logging.getLevelName(max(level, logging.INFO))
    config["filters"] = {"access_note": {"()": f"{__name__}.AccessNote"}}  # latency and items on uvicorn's own line
    config["handlers"]["access"]["filters"] = ["access_note"]
    config["formatters"]["access"]["fmt"] += "%(note)s"
    return config


class NoDelayHTTP(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol with Nagle's algorithm off on every connection, as asyncio sets it for its own sockets.

    With `--workers`, uvicorn binds the listening socket as `socket.socket(AF_INET)`, whose protocol
    number is 0, and asyncio only disables Nagle on sockets that say IPPROTO_TCP. A keep-alive client
    then waited ~40 ms per request (the response's second write held until the client's delayed ACK).
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def run(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
        log_level: int = logging.INFO) -> None:
    """Serve until SIGINT/SIGTERM, letting in-flight requests finish; a bad model raises before listening."""
    import uvicorn

    if workers < 1:
        raise SettingsError(f"--workers {workers}: need at least 1")
    if not 0 <= port <= 65535:
        raise SettingsError(f"--port {port}: must be 0..65535")
    options = {"host": host, "port": port, "log_config": uvicorn_log_config(log_level), "http": NoDelayHTTP}
    if workers == 1:
        uvicorn.run(create_app(model_dir), **options)  # checks the directory before a socket opens
        return
    read_config(model_dir)  # each worker loads its own copy in its lifespan; the supervisor only checks the directory
    os.environ[MODEL_ENV] = str(Path(model_dir).resolve())
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **options)
