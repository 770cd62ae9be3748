"""``flmr-rag eval``: Recall@K and PRRecall@K over a JSONL dataset, plus EM and VQA score with a generator."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from flmr_rag.cli import UsageError
from flmr_rag.commands.common import add_device_option, add_dtype_option
from flmr_rag.commands.generation_options import add_generation_options, load_generator


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="measure retrieval (Recall@K, PRRecall@K) and answers (EM, VQA score) on a dataset",
        description="Each JSONL row contains question, image (path, relative to the dataset file), answers, "
        "pos_item_ids and an optional instruction.",
    )
    parser.add_argument("index", metavar="DIR", help="the index directory")
    parser.add_argument("--dataset", required=True, metavar="FILE", help="JSONL file with one query per line")
    parser.add_argument("--generator", metavar="MODEL", help="generator hub id or folder; adds EM and VQA score")
    parser.add_argument("-k", type=int, nargs="+", default=[1, 5, 10, 20, 50, 100], metavar="K", help="cut-offs for Recall@K and PRRecall@K (default: 1 5 10 20 50 100)")
    parser.add_argument("--generation-k", type=int, default=5, help="passages the generator answers from (default: 5)")
    parser.add_argument("--batch-size", type=int, default=16, help="queries encoded together (default: 16)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N rows")
    parser.add_argument("--exact", action="store_true", help="score every document exactly instead of the approximate search")
    add_generation_options(parser, selection_help="how to choose each final answer (default: joint)")
    add_device_option(parser, help_text="device for the models: cpu, cuda or cuda:N (default: cuda when available)")
    add_dtype_option(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the full result, predictions included, to this JSON file")
    parser.set_defaults(func=run)
    return parser


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(value, stream, indent=2)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    if any(k < 1 for k in args.k):
        raise UsageError(f"-k values must be at least 1, got {args.k}")
    if args.generation_k < 1 or args.batch_size < 1:
        raise UsageError("--generation-k and --batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    if not Path(args.dataset).is_file():
        raise UsageError(f"dataset {args.dataset} does not exist; pass a JSONL file with one query per line")
    if not Path(args.index).is_dir():
        raise UsageError(f"index directory {args.index} does not exist; build one with `flmr-rag index`")

    from flmr_rag.evaluation import evaluate, format_table, read_dataset
    from flmr_rag.retriever import FLMRRetriever

    examples = read_dataset(args.dataset, limit=args.limit)
    generator = load_generator(args) if args.generator else None

    with FLMRRetriever.open(args.index, device=args.device, dtype=args.dtype) as retriever:
        result = evaluate(
            retriever,
            examples,
            ks=args.k,
            generator=generator,
            generation_k=args.generation_k,
            batch_size=args.batch_size,
            exact=args.exact,
        )

    result["dataset"] = str(args.dataset)
    result["index"] = str(args.index)
    if args.generator:
        result["generator"] = args.generator
    if args.json:
        write_json_atomic(Path(args.json), result)
    print(format_table(result))
    return 0
