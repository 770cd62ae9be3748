"""``flmr-rag index``: build a new index directory from a corpus."""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from flmr_rag.cli import UsageError
from flmr_rag.commands.common import (
    DEFAULT_MODEL,
    INSTRUCTION_HELP,
    add_corpus_options,
    add_runtime_options,
    positive_int,
    plural,
    print_json,
    read_corpus_argument,
    skipped_rows_note,
)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("index", help="build a new index directory from a corpus")
    add_corpus_options(parser)
    parser.add_argument("--index", required=True, metavar="DIR", help="the index directory to create (new or empty)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id or local folder of an FLMR checkpoint (default: {DEFAULT_MODEL})")
    parser.add_argument("--nbits", type=int, choices=(1, 2, 4, 8), default=2, help="bits per residual dimension; more is more accurate and larger (default: 2)")
    parser.add_argument(
        "--instruction", default=None, help=f"query instruction ending with ':' used for every query kind; {INSTRUCTION_HELP} (default: one per kind)"
    )
    parser.add_argument("--chunk-size", type=positive_int, default=4096, help="documents per commit; bounds memory (default: 4096)")
    add_runtime_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from flmr_rag.index_directory import SETTINGS_FILE

    directory = Path(args.index)
    if (directory / SETTINGS_FILE).exists():
        raise UsageError(f"{directory} already contains an index; add documents with: flmr-rag add {args.corpus} --index {directory}")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"--index {directory} is not an empty directory; choose a new path")
    existed = directory.exists()
    documents = read_corpus_argument(args)
    if args.instruction and ":" not in args.instruction:
        logger.warning(
            "--instruction %r has no ':' separator; queries will use %r so that the instruction tokens are masked",
            args.instruction,
            f"{args.instruction.strip()}:",
        )

    from flmr_rag.retriever import FLMRRetriever

    started = time.perf_counter()
    retriever = FLMRRetriever.create(
        directory,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        nbits=args.nbits,
        batch_size=args.batch_size or 32,
        instruction=args.instruction,
        chunk_size=args.chunk_size,
    )
    try:
        ids = retriever.add(documents)
    except BaseException:
        empty = len(retriever) == 0
        retriever.close()
        # A failed first build leaves nothing worth keeping; a partial one keeps its committed chunks.
        if empty:
            _remove_new_index(directory, existed)
        raise
    summary = {
        "index": str(directory),
        "model": retriever.settings["model"],
        "documents": len(retriever),
        "added": len(ids),
        "skipped": getattr(documents, "skipped", 0),
        "nbits": args.nbits,
        "seconds": round(time.perf_counter() - started, 2),
    }
    retriever.close()

    if args.json:
        print_json(summary)
    else:
        print(
            f"indexed {plural(summary['added'], 'document')} into {directory} with {summary['model']} "
            f"in {summary['seconds']} s{skipped_rows_note(documents)}"
        )
    return 0


def _remove_new_index(directory: Path, existed: bool) -> None:
    if not existed:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for child in directory.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
