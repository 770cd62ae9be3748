"""``flmr-rag delete``: remove documents from an index directory by id."""

from __future__ import annotations

import argparse
from pathlib import Path

from flmr_rag.cli import UsageError
from flmr_rag.commands.common import print_json, require_index_dir


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("delete", help="remove documents from an index by id")
    parser.add_argument("index", metavar="DIR", help="an index directory")
    parser.add_argument("ids", nargs="*", metavar="ID", help="ids of the documents to remove")
    parser.add_argument("--ids-file", metavar="FILE", help="a file with one id per line to remove as well")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from flmr_rag.retriever import FLMRRetriever

    directory = require_index_dir(args.index)
    ids = list(args.ids)
    if args.ids_file:
        path = Path(args.ids_file)
        if not path.is_file():
            raise UsageError(f"--ids-file {path} does not exist")
        ids.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not ids:
        raise UsageError("no ids given; pass ID arguments or --ids-file FILE")
    unique = list(dict.fromkeys(ids))

    with FLMRRetriever.open(directory, load_model=False) as retriever:
        deleted = retriever.delete(unique)
        remaining = len(retriever)

    summary = {"index": str(directory), "requested": len(unique), "deleted": deleted, "not_found": len(unique) - deleted, "documents": remaining}
    if args.json:
        print_json(summary)
    else:
        print(f"deleted {deleted} of {plural(len(unique), 'document')} from {directory} ({summary['not_found']} not found); {remaining} remain")
    return 0
