"""An HTML report of a model on a labelled catalog: where it is wrong, by price, unit and pack size.

`report_data` computes every figure as plain data (written as JSON with `--json`); one small
function per figure draws it with matplotlib's Agg canvas (no pyplot, no display); `render_html`
lays the tables and PNGs (base64, inline) into one file that opens offline: no scripts, no links.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .catalog import ID_COLUMN, PRICE_COLUMN, TEXT_COLUMN, split_catalog_content
from .errors import MissingExtraError
from .explain import cpu_part, nearest_listings
from .features import parse_listings
from .metrics import PRICE_BANDS, range_report, row_smape, smape, smape_report
from .predictor import PricePredictor
from .units import DIMENSIONS

log = logging.getLogger(__name__)

WORST = 25              # listings in the "worst" table
NEIGHBOURS = 3          # nearest training listings shown per worst listing
TOP_FEATURES = 20       # bars in the importance chart
SCATTER_POINTS = 5000   # predicted-vs-actual points drawn (and kept in JSON); a seeded sample beyond this
ERROR_BINS = 40         # histogram bins of the log error
# Pack-size buckets: (lowest count, highest count, label); listings without a stated pack count are 1.
PACK_BUCKETS = ((1, 1, "1"), (2, 3, "2-3"), (4, 6, "4-6"), (7, 12, "7-12"), (13, 24, "13-24"), (25, math.inf, "25+"))
SECTIONS = {"overview": "Model and overall SMAPE", "bands": "SMAPE by price band", "scatter": "Predicted vs actual",
            "errors": "Distribution of the log error", "dimension": "SMAPE by unit dimension",
            "pack": "SMAPE by pack size", "ranges": "Price ranges: calibration", "worst": f"The {WORST} worst listings",
            "importance": "Top features"}
CALIBRATION_LEVELS = (0.5, 0.8, 0.9, 0.95)  # nominal coverages of the calibration plot
BAND_LEVEL = 0.8                            # the range whose coverage is shown by price band and for the worst listings


def require_matplotlib() -> None:
    """Raise a one-line error naming the extra to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError("the report needs matplotlib, which is not installed: pip install 'smartprice[report]'") from None


# --- the figures as data ----------------------------------------------------------------------
def _grouped(predicted: np.ndarray, actual: np.ndarray, groups: np.ndarray, order: list[str]) -> dict[str, dict]:
    """SMAPE and row count per group label, in `order` (empty groups left out)."""
    return {label: {"smape": smape(predicted[groups == label], actual[groups == label]), "rows": int((groups == label).sum())}
            for label in order if (groups == label).any()}


def pack_bucket(count: float) -> str:
    """The PACK_BUCKETS label of a pack count: 6 -> "4-6"."""
    return next(label for low, high, label in PACK_BUCKETS if low <= count <= high)


def report_data(model: PricePredictor, frame: pd.DataFrame, *, source: str = "") -> dict[str, Any]:
    """Every number the report shows, JSON-ready: SMAPE by band, dimension and pack, errors, worst rows, importance."""
    started = time.perf_counter()
    texts = frame[TEXT_COLUMN].fillna("").astype(str).tolist()
    actual = frame[PRICE_COLUMN].to_numpy(dtype=float)
    ranges: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    if model.has_ranges:  # one pass gives the prices and every level's range
        predicted, ranges = model.predict_ranges(frame, list(CALIBRATION_LEVELS))
    else:
        predicted = model.predict(frame)
    _, raw = parse_listings(texts)
    dimensions = np.array([DIMENSIONS[int(code)] for code in raw["unit_type"]])
    packs = np.array([pack_bucket(count) for count in raw["pack_size"]])
    per_row = row_smape(predicted, actual)
    log_error = np.log(predicted) - np.log(actual)  # > 0: predicted too high
    counts, edges = np.histogram(log_error, bins=ERROR_BINS)
    sample = np.arange(len(actual))
    if len(sample) > SCATTER_POINTS:
        sample = np.sort(np.random.default_rng(0).choice(len(actual), SCATTER_POINTS, replace=False))

    worst = np.argsort(-per_row, kind="stable")[:WORST]
    cpu, notes = cpu_part(model.model_)
    neighbours = nearest_listings(cpu, [texts[i] for i in worst], NEIGHBOURS) if cpu is not None else None
    if cpu is not None and neighbours is None:
        notes = [*notes, "neighbours unavailable: the model was saved without its training listings; retrain it"]
    importance = cpu.feature_importance() if cpu is not None else {}
    importance_note = ("LightGBM gain of the blend's CPU part" if cpu is not None and cpu is not model.model_
                       else "LightGBM gain (total loss reduction of the splits on each feature)" if cpu is not None
                       else "not available: a transformer model has no per-feature importance")
    ids = frame[ID_COLUMN].astype(str).tolist() if ID_COLUMN in frame.columns else [str(i) for i in range(len(frame))]
    overall = smape_report(predicted, actual)
    data = {
        "source": source,
        "model": model.describe(),
        "rows": overall["rows"],
        "smape": overall["smape"],
        "by_band": overall["by_band"],
        "by_dimension": _grouped(predicted, actual, dimensions, list(DIMENSIONS)),
        "by_pack": _grouped(predicted, actual, packs, [label for _, _, label in PACK_BUCKETS]),
        "scatter": {"actual": actual[sample].tolist(), "predicted": predicted[sample].tolist(),
                    "sampled": bool(len(sample) < len(actual))},
        "log_error": {"edges": edges.tolist(), "counts": counts.tolist(), "mean": float(log_error.mean()),
                      "median": float(np.median(log_error)), "p10": float(np.percentile(log_error, 10)),
                      "p90": float(np.percentile(log_error, 90))},
        "worst": [{"sample_id": ids[i], "name": _item_name(texts[i]), "actual": float(actual[i]),
                   "predicted": float(predicted[i]), "smape": float(per_row[i]),
                   "range": [float(ranges[BAND_LEVEL][0][i]), float(ranges[BAND_LEVEL][1][i])] if ranges else None,
                   "neighbours": neighbours[n] if neighbours is not None else None} for n, i in enumerate(worst)],
        "importance": {"features": dict(list(importance.items())[:TOP_FEATURES]), "note": importance_note},
        "ranges": _range_data(actual, ranges) if ranges else None,
        "notes": notes,
    }
    data["seconds"] = round(time.perf_counter() - started, 3)
    return data


def _range_data(actual: np.ndarray, ranges: dict[float, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Observed coverage and width of each level's range, and the BAND_LEVEL range's coverage by band of actual price."""
    calibration = [{"nominal": 100 * level, **range_report(actual, *ranges[level])} for level in CALIBRATION_LEVELS]
    low, high = ranges[BAND_LEVEL]
    by_band, lower = {}, 0.0
    for upper in PRICE_BANDS:
        mask = (actual >= lower) & (actual < upper)
        if mask.any():
            label = f"{lower:g}-{upper:g}" if np.isfinite(upper) else f">={lower:g}"
            by_band[label] = range_report(actual[mask], low[mask], high[mask])
        lower = upper
    return {"calibration": calibration, "level": 100 * BAND_LEVEL, "by_band": by_band}


def _item_name(text: str) -> str:
    """The listing's item name, as the parsers see it (first 200 characters)."""
    return split_catalog_content(text).item_name[:200]


# --- one small function per figure; each returns PNG bytes -------------------------------------
def _figure(width: float = 6.4, height: float = 3.6) -> tuple[Any, Any]:
    """A figure on the Agg canvas (no pyplot: no global state, no display needed) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _bars(groups: dict[str, dict], title: str, xlabel: str) -> bytes:
    """SMAPE per group as bars, each labelled with its row count."""
    figure, axes = _figure()
    labels = list(groups)
    bars = axes.bar(labels, [groups[g]["smape"] for g in labels], color="#4c72b0")
    axes.bar_label(bars, labels=[f"{groups[g]['rows']} rows" for g in labels], fontsize=8)
    axes.set(title=title, xlabel=xlabel, ylabel="SMAPE (%)")
    axes.margins(y=0.15)
    return _png(figure)


def figure_bands(data: dict) -> bytes:
    """SMAPE by price band (of the actual price)."""
    return _bars(data["by_band"], "SMAPE by price band", "actual price")


def figure_scatter(data: dict) -> bytes:
    """Predicted against actual price, log axes, with the line of perfect predictions."""
    figure, axes = _figure(5.2, 5.0)
    actual, predicted = np.asarray(data["scatter"]["actual"]), np.asarray(data["scatter"]["predicted"])
    axes.scatter(actual, predicted, s=6, alpha=0.35, color="#4c72b0", linewidths=0)
    low, high = min(actual.min(), predicted.min()) * 0.8, max(actual.max(), predicted.max()) * 1.25
    axes.plot([low, high], [low, high], color="#c44e52", linewidth=1, label="predicted = actual")
    axes.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high), xlabel="actual price",
             ylabel="predicted price", title="Predicted vs actual" + (" (sample)" if data["scatter"]["sampled"] else ""))
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)


def figure_log_error(data: dict) -> bytes:
    """Histogram of ln(predicted / actual): left of 0 too low, right too high."""
    figure, axes = _figure()
    edges, counts = np.asarray(data["log_error"]["edges"]), np.asarray(data["log_error"]["counts"])
    axes.stairs(counts, edges, fill=True, color="#4c72b0")
    axes.axvline(0, color="#c44e52", linewidth=1)
    axes.set(title="ln(predicted / actual)", xlabel="log error (0 = exact; 0.69 = predicted twice the price)",
             ylabel="listings")
    return _png(figure)


def figure_calibration(data: dict) -> bytes | None:
    """Observed against nominal coverage of the price ranges: on the diagonal, the ranges mean what they say."""
    if not data.get("ranges"):
        return None
    figure, axes = _figure(5.2, 4.4)
    points = data["ranges"]["calibration"]
    nominal, observed = [p["nominal"] for p in points], [p["coverage"] for p in points]
    axes.plot([40, 100], [40, 100], color="#c44e52", linewidth=1, label="observed = nominal")
    axes.plot(nominal, observed, marker="o", color="#4c72b0", label="price ranges")
    for x, y in zip(nominal, observed):
        axes.annotate(f"{y:.1f}%", (x, y), textcoords="offset points", xytext=(6, -12), fontsize=8)
    axes.set(xlim=(40, 100), ylim=(40, 100), xlabel="nominal coverage (%)", ylabel="observed coverage (%)",
             title="Do the price ranges hold what they promise?")
    axes.legend(loc="upper left", fontsize=8)
    return _png(figure)


def figure_dimension(data: dict) -> bytes:
    """SMAPE by the dimension of the parsed unit (mass, volume, count, ...)."""
    return _bars(data["by_dimension"], "SMAPE by unit dimension", "dimension of the parsed Value/Unit")


def figure_pack(data: dict) -> bytes:
    """SMAPE by pack-size bucket."""
    return _bars(data["by_pack"], "SMAPE by pack size", "items per listing (parsed)")


def figure_importance(data: dict) -> bytes | None:
    """Top features by LightGBM gain, largest at the top; None when the model has none."""
    features = data["importance"]["features"]
    if not features:
        return None
    figure, axes = _figure(6.4, 0.25 * len(features) + 1.0)
    names = list(features)[::-1]
    axes.barh(names, [features[n] for n in names], color="#4c72b0")
    axes.set(title="Top features by gain", xlabel="total gain")
    axes.tick_params(axis="y", labelsize=8)
    return _png(figure)


# --- HTML --------------------------------------------------------------------------------------
def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table, every cell escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _group_table(groups: dict[str, dict], what: str) -> str:
    return _table([what, "SMAPE", "rows"], [[g, f"{v['smape']:.2f}", v["rows"]] for g, v in groups.items()])


def _worst_table(worst: list[dict]) -> str:
    rows = []
    for entry in worst:
        near = "; ".join(f"{n['name'][:70]} ({n['price']:.2f}, sim {n['similarity']:.2f})" for n in entry["neighbours"] or [])
        span = f"{entry['range'][0]:.2f} to {entry['range'][1]:.2f}" if entry.get("range") else "—"
        rows.append([entry["sample_id"], entry["name"], f"{entry['actual']:.2f}", f"{entry['predicted']:.2f}", span,
                     f"{entry['smape']:.1f}", near or "—"])
    return _table(["sample_id", "item name", "actual", "predicted", f"{BAND_LEVEL:.0%} range", "SMAPE",
                   "nearest training listings (price, similarity)"], rows)


def _ranges_html(data: dict) -> str:
    """The calibration plot and tables, or a note that the model has no ranges."""
    ranges = data.get("ranges")
    if not ranges:
        return '<p class="note">This model has no price ranges (saved before they existed): retrain it to get them.</p>'
    levels = _table(["nominal coverage", "observed coverage", "median width (high / low)", "rows"],
                    [[f"{p['nominal']:.0f}%", f"{p['coverage']:.1f}%", f"x{p['median_width']:.2f}", p["rows"]]
                     for p in ranges["calibration"]])
    bands = _table(["actual price", f"{ranges['level']:.0f}% range holds", "median width (high / low)", "rows"],
                   [[band, f"{v['coverage']:.1f}%", f"x{v['median_width']:.2f}", v["rows"]]
                    for band, v in ranges["by_band"].items()])
    note = ('<p class="note">Ranges are calibrated for the catalog as a whole and by band of <em>predicted</em> price; '
            "by band of actual price, extreme prices fall outside more often, since the model pulls them to the middle.</p>")
    return _img(figure_calibration(data), "observed against nominal coverage of the price ranges") + levels + \
        f"<h3>Coverage by price band ({ranges['level']:.0f}% range)</h3>" + bands + note


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;display:block;margin:.5em 0}.note{color:#666;font-size:.9em}"""


def render_html(data: dict) -> str:
    """The whole report as one HTML page (inline CSS and PNGs, nothing fetched)."""
    info = data["model"]
    fit = f"{info['fit_seconds']:.1f} s" if info["fit_seconds"] is not None else "not recorded"
    overview = _table(["field", "value"], [
        ["preset", info["preset"]], ["model kind", info["kind"]],
        ["training rows", info["training_rows"] if info["training_rows"] is not None else "not recorded"],
        ["fit time", fit], ["model format version", info["format_version"]],
        ["scored file", data["source"] or "(frame)"], ["scored rows", data["rows"]],
        ["overall SMAPE", f"{data['smape']:.2f}"]])
    error = data["log_error"]
    body = {
        "overview": overview + "".join(f'<p class="note">{html.escape(n)}</p>' for n in data["notes"]),
        "bands": _group_table(data["by_band"], "actual price") + _img(figure_bands(data), "SMAPE by price band"),
        "scatter": _img(figure_scatter(data), "predicted vs actual price, log axes"),
        "errors": _img(figure_log_error(data), "histogram of the log error")
        + f'<p class="note">mean {error["mean"]:+.3f}, median {error["median"]:+.3f}, '
          f'10th-90th percentile {error["p10"]:+.3f} to {error["p90"]:+.3f}</p>',
        "dimension": _group_table(data["by_dimension"], "dimension") + _img(figure_dimension(data), "SMAPE by unit dimension"),
        "pack": _group_table(data["by_pack"], "pack size") + _img(figure_pack(data), "SMAPE by pack size"),
        "ranges": _ranges_html(data),
        "worst": _worst_table(data["worst"]),
        "importance": _img(figure_importance(data), "top features by gain")
        + _table(["feature", "gain"], [[n, f"{g:.1f}"] for n, g in data["importance"]["features"].items()])
        + f'<p class="note">{html.escape(data["importance"]["note"])}</p>',
    }
    sections = "".join(f'<section><h2 id="{key}">{html.escape(title)}</h2>{body[key]}</section>'
                       for key, title in SECTIONS.items())
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>smartprice report</title>'
            f"<style>{STYLE}</style></head><body><h1>smartprice report: SMAPE {data['smape']:.2f}</h1>"
            f"{sections}</body></html>\n")


def write_report(model: PricePredictor, frame: pd.DataFrame, out: str | Path, *, json_path: str | Path | None = None,
                 source: str = "") -> dict[str, Any]:
    """Write the HTML report (and, if asked, its figures as JSON); return the data."""
    require_matplotlib()
    data = report_data(model, frame, source=source)
    page = render_html(data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    if json_path is not None:
        Path(json_path).write_text(json.dumps(data, indent=1), encoding="utf-8")
    log.info("report on %d rows written to %s", data["rows"], out)
    return data
