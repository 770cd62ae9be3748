"""``flmr-rag add``: add the documents of a corpus to an existing index directory."""

from __future__ import annotations

import argparse
import time

from flmr_rag.commands.common import (
    add_corpus_options,
    add_runtime_options,
    plural,
    positive_int,
    print_json,
    read_corpus_argument,
    require_index_dir,
    skipped_rows_note,
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("add", help="add the documents of a corpus to an existing index")
    add_corpus_options(parser)
    parser.add_argument("--index", required=True, metavar="DIR", help="an index directory built with flmr-rag index")
    parser.add_argument("--model", default=None, help="fail unless the index was built with this model (a check; the index's own model is used)")
    parser.add_argument("--chunk-size", type=positive_int, default=None, help="documents per commit; bounds memory (default: the index's, 4096 unless set)")
    add_runtime_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from flmr_rag.retriever import FLMRRetriever

    directory = require_index_dir(args.index)
    documents = read_corpus_argument(args)
    started = time.perf_counter()
    with FLMRRetriever.open(directory, device=args.device, dtype=args.dtype, model=args.model, batch_size=args.batch_size, chunk_size=args.chunk_size) as retriever:
        ids = retriever.add(documents)
        summary = {"index": str(directory), "added": len(ids), "skipped": getattr(documents, "skipped", 0), "documents": len(retriever), "seconds": round(time.perf_counter() - started, 2)}

    if args.json:
        print_json(summary)
    else:
        print(f"added {plural(summary['added'], 'document')} to {directory}; it now contains {summary['documents']}{skipped_rows_note(documents)}")
    return 0
