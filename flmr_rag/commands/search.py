"""``flmr-rag search``: retrieve the passages of an index for a question, an image, or both."""

from __future__ import annotations

import argparse

from flmr_rag.cli import UsageError
from flmr_rag.commands.common import (
    INSTRUCTION_HELP,
    add_runtime_options,
    check_image_option,
    print_json,
    print_table,
    require_index_dir,
)

TEXT_WIDTH = 60


def _k(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("search", help="retrieve passages for a question and/or an image")
    parser.add_argument("index", metavar="DIR", help="an index directory")
    parser.add_argument("--question", default=None, help="the question text")
    parser.add_argument("--image", default=None, metavar="IMAGE", help="path of the query image")
    parser.add_argument("-k", type=_k, default=10, help="number of results (default: 10)")
    parser.add_argument("--instruction", default=None, help=f"instruction ending with ':' put before the question; {INSTRUCTION_HELP} (default: one per query kind; '' for none)")
    parser.add_argument("--exact", action="store_true", help="score every document exactly instead of the approximate index search")
    add_runtime_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.question is None and args.image is None:
        raise UsageError("give --question TEXT, --image IMAGE, or both")
    if args.question is not None and not args.question.strip() and args.image is None:
        raise UsageError("--question is empty; give --question, --image or both")
    if args.k < 1:
        raise UsageError(f"-k {args.k} must be at least 1")
    if args.image is not None:
        check_image_option(args.image)
    directory = require_index_dir(args.index)

    from flmr_rag.retriever import FLMRRetriever

    question = args.question if args.question and args.question.strip() else None
    with FLMRRetriever.open(directory, device=args.device, dtype=args.dtype, batch_size=args.batch_size) as retriever:
        results = retriever.search(question=question, image=args.image, k=args.k, instruction=args.instruction, exact=args.exact)

    if args.json:
        print_json(
            {
                "query": {"question": args.question, "image": args.image, "k": args.k},
                "results": [
                    {"rank": r.rank, "id": r.id, "score": r.score, "text": r.text, "image_path": r.image_path, "metadata": r.metadata}
                    for r in results
                ],
            }
        )
        return 0
    if not results:
        print(f"no results: {directory} contains no documents")
        return 0
    rows = [[str(r.rank), f"{r.score:.4f}", r.id, _shorten(r.text), r.image_path or ""] for r in results]
    print_table(["rank", "score", "id", "text", "image"], rows)
    return 0


def _shorten(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= TEXT_WIDTH else flat[: TEXT_WIDTH - 3] + "..."
