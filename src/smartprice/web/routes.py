"""The page's routes: GET / (the forms and the model card), POST /price (one listing), POST /price-file (a file).

They use the model the JSON API loaded (`request.app.state.predictor` and `.info`, set in serve's
lifespan). A mistake a user can fix re-renders the page with the message next to its control (4xx);
a defect of ours renders the page with a one-line notice (500) and logs the traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.datastructures import UploadFile

from ..catalog import TEXT_COLUMN
from ..ranges import CoverageError, check_coverage
from .answer import effects, pack_line, quantity_line
from .files import display_name, download_name, price_upload
from .forms import FieldError, ListingForm, read_form

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
FORM_PATHS = frozenset({"/price", "/price-file"})  # POSTs of HTML forms: serve's JSON body guard lets these through
NEIGHBOURS = 5             # training listings shown beside a price, as `smartprice explain` shows by default
PAGE_COVERAGE = 0.8        # the range shown beside one price: the interval API's default coverage
COVERAGES = (0.5, 0.8, 0.9, 0.95)  # offered for a file's range columns
WARM_UP_LISTING = "Item Name: Warm-up Green Tea, 20 Count (Pack of 6)\nValue: 120.0\nUnit: Count\n"
MULTIPART_SLACK = 64 * 1024        # form boundaries and the other controls around the file
STATIC = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}
# Everything comes from this server; no inline script or style, so listing text could never run even if unescaped.
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                                      "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}



@asynccontextmanager
async def warm_up(app: FastAPI) -> AsyncIterator[None]:
    """Explain one listing once serve's lifespan has loaded the model: the first answer need not read the explainer (~1.6 s)."""
    await run_in_threadpool(answer_listing, app.state.predictor, WARM_UP_LISTING)
    yield


router = APIRouter(include_in_schema=False, lifespan=warm_up)  # the JSON API's /docs lists the API only
templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                                            undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True))


def limits(request: Request) -> dict[str, Any]:
    """The served API's limits (GET /model's "limits"), which the page keeps too: text per listing, file bytes and rows."""
    served = request.app.state.info["limits"]
    return {"text_chars": served["max_text_chars"], "upload_bytes": served["max_body_bytes"],
            "upload_mb": served["max_body_bytes"] / 2**20, "rows": served["max_items"]}


def paste_bytes(text_chars: int) -> int:
    """The paste form's body limit: `text_chars` of 4-byte UTF-8, %-encoded (12 bytes each), and the typed parts."""
    return 12 * text_chars + 64 * 1024


# --- what the page shows --------------------------------------------------------------------------

def has_ranges(predictor: Any) -> bool:
    """Whether the model offers calibrated price ranges (describe()'s "ranges"; models before them: no)."""
    return bool(predictor.describe().get("ranges"))


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _flatten(figures: Any, prefix: str = "") -> list[tuple[str, str]]:
    """{"smape": 51.2, "by_band": {"0-5": 78.1}} -> [("smape", "51.20"), ("by band / 0-5", "78.10")]."""
    if not isinstance(figures, dict):
        return [(prefix or "figures", _figure(figures))]
    rows = []
    for key, value in figures.items():
        name = f"{prefix} / {key}" if prefix else str(key).replace("_", " ")
        rows += _flatten(value, name) if isinstance(value, dict) else [(name, _figure(value))]
    return rows


def _when(iso: str | None) -> str:
    if not iso:
        return "not recorded"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return iso


def model_card(info: dict[str, Any], predictor: Any) -> dict[str, Any]:
    """The model's card: preset, kind, training rows, fit date, ranges, validation figures (from GET /model and describe())."""
    described = predictor.describe()
    rows = info.get("training_rows") or described.get("training_rows")
    validation = described.get("validation") or info.get("validation")
    return {"facts": [("Preset", info["preset"]), ("Model kind", info["kind"]),
                      ("Training listings", f"{rows:,}" if rows else "not recorded"), ("Fitted", _when(info.get("fit_date"))),
                      ("Price ranges", "yes: calibrated on held-out listings" if has_ranges(predictor)
                       else "no: this model has none (retrain it with a smartprice that makes them)"),
                      ("smartprice version", info.get("smartprice_version") or "not recorded")],
            "validation": _flatten(validation) if validation else []}


def answer_listing(predictor: Any, text: str) -> dict[str, Any]:
    """Price, range, parsed fields, neighbours and grouped effects of one listing (runs in a worker thread)."""
    entry = predictor.explain(pd.DataFrame({TEXT_COLUMN: [text]}), k=NEIGHBOURS, coverage=PAGE_COVERAGE)[0]
    span = entry.get("range")  # models with calibrated ranges only
    answer = {"price": entry["price"], "clipped": entry["clipped"], "parsed": entry["parsed"],
              "quantity": quantity_line(entry["parsed"]), "pack": pack_line(entry["parsed"]["pack_count"]),
              "neighbours": entry["neighbours"] or [], "notes": entry["notes"], "start": None, "groups": [], "signals": [],
              "range": (span["low"], span["high"]) if span else None, "coverage": PAGE_COVERAGE}
    if entry["contributions"]:
        answer["start"], answer["groups"], answer["signals"] = effects(entry["contributions"])
    return answer


# --- rendering ------------------------------------------------------------------------------------

def render(request: Request, started: float, *, status: int = 200, **context: Any) -> Response:
    """The page with `context` over the defaults: forms empty, no answer, no errors; Server-Timing says how long it took."""
    state = request.app.state
    page = {"card": model_card(state.info, state.predictor), "ranges": has_ranges(state.predictor),
            "form": ListingForm(), "errors": {}, "answer": None, "failure": None, "coverages": COVERAGES,
            "coverage": PAGE_COVERAGE, "want_ranges": False,
            "limits": limits(request)}
    page.update(context)
    response = templates.TemplateResponse(request, "page.html", page, status_code=status, headers=HEADERS)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


def _failure(request: Request, started: float, exc: Exception, **context: Any) -> Response:
    log.error("%s %s failed: a bug in smartprice", request.method, request.url.path, exc_info=exc)
    return render(request, started, status=500, failure=f"Something went wrong on our side ({type(exc).__name__}); "
                                                        "the server logged the details. Please try again or tell us.",
                  **context)


@router.get("/")
async def page(request: Request) -> Response:
    """The page: paste a listing, upload a file, read the model's card."""
    return render(request, time.perf_counter())


@router.get("/price")
@router.get("/price-file")
async def back_to_the_page() -> Response:
    """A reloaded or bookmarked answer: the page, not a 405."""
    return RedirectResponse("/", status_code=303)


@router.post("/price")
async def price_listing(request: Request) -> Response:
    """Price one pasted (or typed) listing and show why, on the same page."""
    started = time.perf_counter()
    form = ListingForm()
    try:
        chars = limits(request)["text_chars"]
        form = ListingForm.from_form(await read_form(request, paste_bytes(chars), "listing",
                                                     f"the listing is over the limit of {chars:,} characters"))
        text = form.catalog_content(chars)
        answer = await run_in_threadpool(answer_listing, request.app.state.predictor, text)
    except FieldError as exc:
        return render(request, started, status=exc.status, form=form, errors={exc.field: exc.message})
    except Exception as exc:  # a defect of ours: the page says so, the log has the traceback
        return _failure(request, started, exc, form=form)
    return render(request, started, form=form, answer=answer)


def _coverage(value: Any) -> float:
    try:
        return check_coverage(value, "the share")
    except CoverageError as exc:
        raise FieldError("coverage", str(exc)) from None


@router.post("/price-file")
async def price_file(request: Request) -> Response:
    """Price every row of an uploaded catalog; the answer is the priced CSV as a download."""
    started = time.perf_counter()
    context: dict[str, Any] = {}
    try:
        allowed = limits(request)
        too_large = (f"the file is over the limit of {allowed['upload_mb']:.0f} MB; "
                     "price it with 'smartprice predict', or split it")
        form = await read_form(request, allowed["upload_bytes"] + MULTIPART_SLACK, "file", too_large, files=1)
        context["want_ranges"] = form.get("ranges") == "yes"
        coverage = _coverage(form.get("coverage", PAGE_COVERAGE)) if context["want_ranges"] else None
        if coverage is not None:
            context["coverage"] = coverage
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise FieldError("file", "choose a file to price (CSV, TSV or Parquet, compressed or not)")
        name = display_name(upload.filename)
        if upload.size is not None and upload.size > allowed["upload_bytes"]:
            raise FieldError("file", too_large, 413)
        if coverage is not None and not has_ranges(request.app.state.predictor):
            raise FieldError("ranges", "this model has no price ranges; retrain it with a smartprice that makes them, "
                                       "or price the file without them")
        body = await run_in_threadpool(price_upload, request.app.state.predictor, upload.file, name, max_rows=allowed["rows"],
                                       coverage=coverage)
    except FieldError as exc:
        return render(request, started, status=exc.status, errors={exc.field: exc.message}, **context)
    except Exception as exc:
        return _failure(request, started, exc, **context)
    filename = download_name(name)
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in filename)
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}",
        "Server-Timing": f"app;dur={(time.perf_counter() - started) * 1000:.1f}", "X-Content-Type-Options": "nosniff"})


@cache
def _static(name: str) -> bytes:
    return (HERE / "static" / name).read_bytes()


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """The page's stylesheet and script (no other files are served from here)."""
    if name not in STATIC:
        raise HTTPException(404, "not a file of the page")
    return Response(_static(name), media_type=STATIC[name],
                    headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})
