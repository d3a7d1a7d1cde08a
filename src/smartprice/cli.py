"""Command line: `smartprice train | predict | evaluate | report | explain | ...`; user errors exit 2 on one line."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sharedcore.about import __version__
from sharedcore.overrides import parse_sets  # `--set` parsing, shared with mu (re-exported: smartprice.cli.parse_sets)

from .catalog import DEFAULT_CHUNK_ROWS, read_catalog
from .errors import MissingExtraError, SettingsError, UserError
from .presets import DEFAULT_PRESET, PRESETS, resolve_preset

log = logging.getLogger("smartprice")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartprice", description="Predict product prices from catalog listings.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print the INFO lines of the libraries underneath (Accelerate, transformers)")
    parser.add_argument("--version", action="version", version=f"smartprice {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fit a model on a labelled catalog and save it")
    train.add_argument("train", type=Path, help="labelled catalog (.csv or .parquet) with sample_id, catalog_content, price")
    train.add_argument("--out", type=Path, required=True, help="model directory to write (replaced atomically)")
    train.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                       help=f"model preset (default: {DEFAULT_PRESET})")
    train.add_argument("--valid", type=Path, help="labelled catalog to score after fitting (never used to fit)")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a preset field, e.g. --set trees=500; a neural preset's training loop "
                            "setting, e.g. --set loop.epochs=2; or a blend's inner preset's, e.g. "
                            "--set fusion.loop.epochs=2 (repeatable; unknown keys are an error; "
                            "'smartprice presets NAME' lists the fields)")
    train.add_argument("--resume", action="store_true",
                       help="neural presets: continue from the last epoch checkpoint in OUT.work/")
    train.add_argument("--strict", action="store_true",
                       help="treat rows with a missing/invalid price as an error instead of skipping them")

    predict = commands.add_parser("predict", help="write sample_id,price for every row of a catalog")
    predict.add_argument("model", type=Path, help="model directory written by 'smartprice train'")
    predict.add_argument("input", type=Path, help="catalog (.csv or .parquet) with sample_id, catalog_content")
    predict.add_argument("--out", type=Path, required=True, help="output CSV (sample_id,price), same row order")
    predict.add_argument("--interval", metavar="COVERAGE",
                         help="also write price_low,price_high: a calibrated range holding this share of prices (0.8)")
    predict.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                         help=f"rows read, predicted and written at a time (default {DEFAULT_CHUNK_ROWS}); memory stays flat")

    evaluate = commands.add_parser("evaluate", help="SMAPE of a model on a labelled catalog, overall and by band")
    evaluate.add_argument("model", type=Path, help="model directory written by 'smartprice train'")
    evaluate.add_argument("labelled", type=Path, help="labelled catalog (.csv or .parquet)")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows read and scored at a time")
    evaluate.add_argument("--interval", metavar="COVERAGES",
                          help="also report the observed coverage and width of price ranges at these levels (0.8,0.9)")

    report = commands.add_parser("report", help="a self-contained HTML report (plots embedded) of a model on a labelled catalog")
    report.add_argument("model", type=Path, help="model directory written by 'smartprice train'")
    report.add_argument("labelled", type=Path, help="labelled catalog (.csv or .parquet)")
    report.add_argument("--out", type=Path, required=True, help="HTML file to write")
    report.add_argument("--json", type=Path, metavar="FILE", help="also write the report's figures as JSON")

    explain = commands.add_parser("explain", help="why listings got their price: parsed fields, neighbours, contributions")
    explain.add_argument("model", type=Path, help="model directory written by 'smartprice train'")
    explain.add_argument("input", type=Path, help="catalog (.csv or .parquet) with sample_id, catalog_content")
    explain.add_argument("--rows", type=int, default=5, help="explain the first N rows of INPUT (default 5)")
    explain.add_argument("--neighbours", type=int, default=5, help="nearest training listings per row (default 5)")
    explain.add_argument("--interval", type=float, default=0.8, metavar="COVERAGE",
                         help="coverage of each listing's price range (default 0.8), for models with ranges")
    explain.add_argument("--json", action="store_true", help="print the explanations as JSON")

    serve = commands.add_parser("serve", help="HTTP pricing API on uvicorn (needs the serve extra)")
    serve.add_argument("model", type=Path, help="model directory written by 'smartprice train'")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes, each loading the model (default: 1)")

    presets = commands.add_parser("presets", help="list the presets, or show one preset's fields, values and reasons")
    presets.add_argument("name", nargs="?", help="a preset to show field by field")

    cv = commands.add_parser("cv", help="k-fold cross-validation; with --compare, a paired test of two configurations")
    cv.add_argument("train", type=Path, help="labelled catalog (.csv, .tsv, .parquet, optionally compressed)")
    cv.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help=f"preset (default: {DEFAULT_PRESET})")
    cv.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    cv.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    cv.add_argument("--seed", type=int, default=0, help="seed of the fold split (default 0)")
    cv.add_argument("--compare", choices=sorted(PRESETS), metavar="PRESET2",
                    help="also cross-validate PRESET2 on the same folds and report the paired difference")
    cv.add_argument("--set2", dest="sets2", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of the second configuration (with --compare; default: the first preset)")
    cv.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def _train(args: argparse.Namespace) -> None:
    from .cpu.model import fit_stages
    from .predictor import PricePredictor

    overrides = parse_sets(args.sets)
    config = resolve_preset(args.preset, overrides)  # fail on a bad --set before reading any data
    model = PricePredictor(preset=args.preset, **overrides)
    frame = read_catalog(args.train, labelled=True, strict=args.strict)
    valid = read_catalog(args.valid, labelled=True, strict=args.strict) if args.valid else None
    started = time.perf_counter()
    log.info("training preset %r on %d rows of %s", args.preset, len(frame), args.train)
    work_dir = args.out.with_name(args.out.name + ".work")  # epoch checkpoints of neural presets
    stages = fit_stages(config) if config.kind == "cpu" else None  # the stages the CPU model reports
    with _progress(args, f"{args.preset} fit", unit=" stages", total=stages) as bar:
        model.fit(frame, work_dir=work_dir, resume=args.resume,
                  progress=(lambda stage, done, total: bar(1)) if bar is not None and stages else None)
    log.info("fitted in %.1f s", time.perf_counter() - started)
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate launch: rank 0 alone writes the model
        return
    model.save(args.out)
    shutil.rmtree(work_dir, ignore_errors=True)  # the model is safely written; checkpoints are no longer needed
    if valid is not None:
        report = model.score(valid)
        print(f"validation SMAPE {report['smape']:.2f} on {report['rows']} rows of {args.valid}")
    print(f"model written to {args.out}")


@contextmanager
def _progress(args: argparse.Namespace, what: str, unit: str = " rows",
              total: int | None = None) -> Iterator[Callable[[int], object] | None]:
    """A progress bar (rows/s by default) on stderr when it is a terminal; nothing with -q or on a pipe."""
    if args.quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(), tqdm(desc=what, unit=unit, unit_scale=total is None, total=total, file=sys.stderr,
                                       smoothing=0.1) as bar:
        yield bar.update  # log lines meanwhile are printed above the bar, not through it


@contextmanager
def _paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector around a streamed predict; the stream collects between chunks.

    The model is frozen out of the collector's view, so that pass per chunk costs little; pausing it
    inside a chunk (many small objects, no cycles worth collecting) saved ~6% of predict's run time.
    """
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def _predict(args: argparse.Namespace) -> None:
    from .predictor import PricePredictor
    from .ranges import check_coverage
    from .stream import predict_file

    if args.interval is not None:
        check_coverage(args.interval, "--interval")  # before any work
    model = PricePredictor.load(args.model)
    with _progress(args, "predict") as progress, _paused_gc():
        predict_file(model, args.input, args.out, chunk_rows=args.chunk_rows, progress=progress, interval=args.interval)


def _evaluate(args: argparse.Namespace) -> None:
    from .predictor import PricePredictor
    from .ranges import check_coverages
    from .stream import evaluate_file

    if args.interval is not None:
        check_coverages(args.interval, "--interval")  # before any work
    model = PricePredictor.load(args.model)
    with _progress(args, "evaluate") as progress, _paused_gc():
        report = evaluate_file(model, args.labelled, chunk_rows=args.chunk_rows, progress=progress,
                               intervals=args.interval)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"SMAPE {report['smape']:.2f} on {report['rows']} rows")
    for band, entry in report["by_band"].items():
        print(f"  price {band:>8}: SMAPE {entry['smape']:6.2f}  ({entry['rows']} rows)")
    for level, entry in report.get("ranges", {}).items():
        print(f"  {float(level):.0%} range: holds {entry['coverage']:.1f}% of prices, median width x{entry['median_width']:.2f}"
              " (high / low)")


def _serve(args: argparse.Namespace) -> None:
    try:
        from . import web  # noqa: F401  (the page at /: jinja2 and python-multipart, from the same extra)
        from .serve import run
    except ModuleNotFoundError as exc:
        if exc.name not in ("fastapi", "fastapi_offline", "uvicorn", "starlette", "pydantic", "jinja2", "multipart",
                            "python_multipart"):
            raise
        raise MissingExtraError(f"'smartprice serve' needs the serve extra ({exc.name} is not installed): "
                           "pip install 'smartprice[serve]'") from None
    run(args.model, host=args.host, port=args.port, workers=args.workers,
        log_level=logging.WARNING if args.quiet else logging.INFO)


def _presets(args: argparse.Namespace) -> None:
    from sharedcore.describe import NEEDS_BASE, NEEDS_NN, render_preset, render_presets

    from . import presets
    from .kinds import needs_nn

    def smartprice_needs(preset: object) -> str:  # the CPU family runs on the base install (but for embeddings)
        return NEEDS_NN if needs_nn(preset) else NEEDS_BASE

    if args.name:
        print(render_preset(presets, args.name, smartprice_needs, "smartprice"))
    else:
        print(render_presets(presets, smartprice_needs, "smartprice", default=DEFAULT_PRESET))


def _report(args: argparse.Namespace) -> None:
    from .predictor import PricePredictor
    from .report import require_matplotlib, write_report

    require_matplotlib()  # before any work: the one-line error says how to install it
    model = PricePredictor.load(args.model)
    write_report(model, read_catalog(args.labelled, labelled=True), args.out, json_path=args.json, source=str(args.labelled))
    print(f"report written to {args.out}" + (f" (figures as JSON: {args.json})" if args.json else ""))


def _explain(args: argparse.Namespace) -> None:
    from .catalog import iter_catalog
    from .explain import format_explanation
    from .predictor import PricePredictor
    from .ranges import check_coverage

    if args.rows < 1:
        raise SettingsError(f"--rows must be at least 1, got {args.rows}")
    check_coverage(args.interval, "--interval")
    model = PricePredictor.load(args.model)
    frame = next(iter_catalog(args.input, chunk_rows=args.rows))  # only the first N rows are read
    explanations = model.explain(frame, k=args.neighbours, coverage=args.interval)
    if args.json:
        print(json.dumps(explanations, indent=2))
        return
    print("\n\n".join(format_explanation(entry) for entry in explanations))


def _cv(args: argparse.Namespace) -> None:
    from .cv import compare, cross_validate

    first = parse_sets(args.sets)
    resolve_preset(args.preset, first)  # fail on a bad --set before any fitting
    second_preset = args.compare or (args.preset if args.sets2 else None)
    second = parse_sets(args.sets2)
    if second_preset is not None:
        resolve_preset(second_preset, second)
    frame = read_catalog(args.train, labelled=True)
    runs = [(args.preset, first)] + ([(second_preset, second)] if second_preset is not None else [])
    results = []
    for preset, overrides in runs:
        with _progress(args, f"cv {preset}", unit=" folds", total=args.folds) as progress:
            results.append(cross_validate(frame, preset, overrides, args.folds, args.seed,
                                          on_fold=None if progress is None else lambda *_: progress(1)))
    summaries = [r.summary() for r in results]
    paired = compare(*results) if len(results) == 2 else None
    if args.json:
        print(json.dumps({"configurations": summaries, "paired": paired}, indent=2))
        return
    for summary in summaries:
        sets = " ".join(f"{k}={v}" for k, v in summary["overrides"].items())
        print(f"{summary['preset']} {sets}".rstrip() + f": CV SMAPE {summary['smape']:.2f} ± {summary['se']:.2f} "
              f"({args.folds} folds, {summary['rows']} rows, fit {summary['mean_fit_seconds']:.1f} s per fold)")
        print("  folds: " + "  ".join(f"{s:.2f}" for s in summary["folds"]))
        for band, entry in summary["by_band"].items():
            print(f"  price {band:>8}: SMAPE {entry['smape']:6.2f}  ({entry['rows']} rows)")
    if paired is not None:
        verdict = "a real difference" if abs(paired["z"]) >= 2 else "within noise"
        print(f"paired difference (second - first): {paired['difference']:+.3f} ± {paired['se']:.3f} SMAPE "
              f"({paired['z']:+.1f} standard errors: {verdict})")


# Libraries whose INFO lines (Accelerate: five per epoch checkpoint) are shown only with -v.
LIBRARY_LOGGERS = ("accelerate", "transformers")
BUG_NOTE = ("smartprice: this is a bug in smartprice {version}, not a mistake in your files or flags; "
            "please report it with the traceback above")
SIGPIPE_STATUS = 128 + 13  # what a Unix tool exits with when its reader goes away (`smartprice presets | head -1`)


def _configure_logging(args: argparse.Namespace) -> None:
    """Our INFO lines unless -q; the libraries' INFO lines only with -v (their warnings always)."""
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    verbose = args.verbose and not args.quiet
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:  # transformers sets its own level when imported, from this variable
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "info")
    else:  # nor its "Loading weights" bars (read when transformers is imported)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    handlers = {"train": _train, "predict": _predict, "evaluate": _evaluate, "presets": _presets, "serve": _serve,
                "report": _report, "explain": _explain, "cv": _cv}
    try:
        handlers[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at exit
    except UserError as exc:  # a mistake the user can fix: one line that says what and how
        print(f"smartprice: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout again at exit: let that go nowhere
        return SIGPIPE_STATUS
    except KeyboardInterrupt:
        print("smartprice: interrupted", file=sys.stderr)
        return 130
    except Exception:  # anything else is a defect of ours: show it as one
        traceback.print_exc()
        print(BUG_NOTE.format(version=__version__), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
