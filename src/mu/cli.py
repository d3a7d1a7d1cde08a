"""`mu train | eval | generate`. User errors exit 2 with one line on stderr."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mu", description="MU block-wise semantic attention language model.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a tokenizer and an MU model on text files")
    train.add_argument("--train", nargs="+", required=True, help="training text files (or hf:wikitext-2-raw-v1:train)")
    train.add_argument("--valid", nargs="*", default=[], help="validation text files, scored every epoch")
    train.add_argument("--out", required=True, help="model directory (checkpoints, tokenizer, weights)")
    train.add_argument("--preset", default="test", help="test (6 layers, seq 128) or full (24 layers, seq 256)")
    train.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override any preset field, e.g. --set n_layers=2 --set epochs=1")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    try:
        from trainloop.overrides import parse_sets

        from .train import eval_windows, evaluate, load_model, resolve, train_mu

        if args.command == "train":
            preset = resolve(args.preset, parse_sets(args.sets))
            result = train_mu(args.train, args.valid, args.out, preset, resume=args.resume)
            print(json.dumps(result.history[-1] if result.history else {}))
        elif args.command == "eval":
            from .data import encode_corpus, read_lines

            model, tokenizer = load_model(args.model)
            ids = encode_corpus(tokenizer, read_lines(args.file))
            print(json.dumps(evaluate(model, eval_windows(ids, model.config.max_seq_len))))
        else:
            from .generate import generate

            model, tokenizer = load_model(args.model)
            ids = generate(model, tokenizer.encode(args.prompt).ids, args.max_new_tokens, args.temperature, args.top_k,
                           args.top_p, args.repetition_penalty, args.seed)
            print(args.prompt + tokenizer.decode(ids))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"mu: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
