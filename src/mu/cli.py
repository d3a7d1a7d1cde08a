"""`mu train | eval | generate | presets`. User errors exit 2 with one line; a bug exits 1 with its traceback.

Every command needs the `nn` extra (torch and friends); `--help` and `--version` do not. This
module imports none of it at import time, so on a base install each command answers with one
line that says what to install instead of an import traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import traceback
from collections.abc import Sequence

from sharedcore.about import NN_INSTALL, __version__
from sharedcore.errors import UserError

NEEDS = ("torch", "accelerate", "safetensors", "tokenizers", "tqdm")  # what mu imports from the nn extra


LIBRARY_LOGGERS = ("accelerate", "transformers")
BUG_NOTE = ("mu: this is a bug in mu (smartprice {version}), not a mistake in your files or flags; "
            "please report it with the traceback above")


def missing_module() -> str | None:
    """The first module mu needs that cannot be found, else None; finds modules without importing them."""
    for name in NEEDS:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a finder that refuses it, or a half-removed package
            return name
    return None


def nn_message(missing: str) -> str:
    """The one line a user without the nn extra sees."""
    return f"mu needs the nn extra ({missing} is not installed): {NN_INSTALL}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; building it and `--help` import nothing of the nn extra."""
    missing = missing_module()
    parser = argparse.ArgumentParser(prog="mu", description="MU block-wise semantic attention language model.",
                                     epilog=f"note: {nn_message(missing)}" if missing else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # the note on one line
    parser.add_argument("--version", action="version", version=f"mu (smartprice {__version__})")
    parser.add_argument("-v", "--verbose", action="store_true", help="also the INFO lines of Accelerate and transformers")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a tokenizer and an MU model on text files")
    train.add_argument("--train", nargs="+", required=True, help="training text files (or hf:wikitext-2-raw-v1:train)")
    train.add_argument("--valid", nargs="*", default=[], help="validation text files, scored every epoch")
    train.add_argument("--out", required=True, help="model directory (checkpoints, tokenizer, weights)")
    train.add_argument("--preset", default="test", help="preset name (default: test); 'mu presets' lists them")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override any preset field, e.g. --set n_layers=2 --set loop.epochs=1 "
                            "('mu presets NAME' lists them)")
    train.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint in --out")
    evaluate = commands.add_parser("eval", help="loss, token accuracy and perplexity on a text file")
    evaluate.add_argument("model", help="model directory written by 'mu train'")
    evaluate.add_argument("file", nargs="+", help="text files")
    gen = commands.add_parser("generate", help="continue a prompt (KV-cached sampling)")
    gen.add_argument("model", help="model directory written by 'mu train'")
    gen.add_argument("prompt", help="text to continue")
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=50, help="0 = off")
    gen.add_argument("--top-p", type=float, default=0.9, help="1 = off")
    gen.add_argument("--repetition-penalty", type=float, default=1.2, help="1 = off")
    gen.add_argument("--seed", type=int, default=None)
    presets = commands.add_parser("presets", help="list the presets, or show one preset's fields, values and reasons")
    presets.add_argument("name", nargs="?", help="a preset to show field by field")
    return parser


def _train(args: argparse.Namespace) -> None:
    from sharedcore.overrides import parse_sets

    from .train import resolve, train_mu

    preset = resolve(args.preset, parse_sets(args.sets))
    result = train_mu(args.train, args.valid, args.out, preset, resume=args.resume)
    print(json.dumps(result.history[-1] if result.history else {}))


def _eval(args: argparse.Namespace) -> None:
    from .data import encode_corpus, read_lines
    from .train import eval_windows, evaluate, load_model

    model, tokenizer = load_model(args.model)
    ids = encode_corpus(tokenizer, read_lines(args.file))
    print(json.dumps(evaluate(model, eval_windows(ids, model.config.max_seq_len))))


def _generate(args: argparse.Namespace) -> None:
    from .generate import generate
    from .train import load_model

    model, tokenizer = load_model(args.model)
    ids = generate(model, tokenizer.encode(args.prompt).ids, args.max_new_tokens, args.temperature, args.top_k,
                   args.top_p, args.repetition_penalty, args.seed)
    print(args.prompt + tokenizer.decode(ids))


def _presets(args: argparse.Namespace) -> None:
    from sharedcore.describe import NEEDS_NN, render_preset, render_presets

    from . import train  # the preset table lives beside the code that reads it

    def needs(_preset: object) -> str:
        return NEEDS_NN

    if args.name:
        print(render_preset(train, args.name, needs, "mu"))
    else:
        print(render_presets(train, needs, "mu", default="test", with_kind=False))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `mu` command; 0 on success, 2 with one line on stderr for a user error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for name in LIBRARY_LOGGERS:  # Accelerate logs five INFO lines per epoch checkpoint: shown with -v only
        logging.getLogger(name).setLevel(logging.INFO if args.verbose else logging.WARNING)
    missing = missing_module()
    if missing:
        print(f"mu: error: {nn_message(missing)}", file=sys.stderr)
        return 2
    handlers = {"train": _train, "eval": _eval, "generate": _generate, "presets": _presets}
    try:
        handlers[args.command](args)
    except ModuleNotFoundError as exc:  # found above but failing to import, e.g. a broken torch install
        root = (exc.name or "").split(".")[0]
        if root not in NEEDS:
            raise
        print(f"mu: error: {nn_message(root)}", file=sys.stderr)
        return 2
    except UserError as exc:  # a mistake in the files, flags or settings: one line
        print(f"mu: error: {exc}", file=sys.stderr)
        return 2
    except Exception:  # anything else is a defect of mu: the traceback, and a note saying so
        traceback.print_exc()
        print(BUG_NOTE.format(version=__version__), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
