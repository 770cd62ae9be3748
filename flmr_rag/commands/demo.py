"""``flmr-rag demo``: the offline end-to-end demo on easy-vqa (train, index, ask, evaluate)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_REPORT_DIR = Path("flmr-rag-demo")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="train a small FLMR retriever and reader on easy-vqa, then index, ask and evaluate (offline)",
        description=(
            "Runs the whole chain offline on the easy-vqa data set: fine-tunes a small FLMR retriever "
            "(MiniLM text encoder) and a small T5 reader on the train split (cached after the first run), "
            "indexes a 24-passage knowledge base, answers the test questions with FLMRRetriever.ask and "
            "prints Recall@1, Recall@5, VQA score, accuracy by question type and timings."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="100 retriever and 150 reader training steps, 200 test questions (for tests and CI)")
    parser.add_argument("--json", metavar="PATH", help="also write the metrics as JSON to PATH")
    parser.add_argument("--report", metavar="PATH", help=f"HTML report path (default: {DEFAULT_REPORT_DIR}/report.html)")
    parser.add_argument("--cache-dir", metavar="DIR", help="folder for the trained models (default: $FLMR_RAG_CACHE, else $XDG_CACHE_HOME/flmr-rag, else ~/.cache/flmr-rag)")
    parser.add_argument("--retrain", action="store_true", help="train again even when the cache contains the models")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of this process (default: CPU count minus the reader worker's one, at least 1)")
    parser.add_argument("--sequential", action="store_true", help="train the reader after the retriever in this process, instead of in a one-thread worker process at the same time")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from flmr_rag.cli import UsageError

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    import torch

    # The reader trains in a worker process on one thread, so the retriever gets the other cores.
    threads = args.threads
    if threads is None:
        reserved = 0 if args.sequential else 1
        threads = max((os.cpu_count() or 2) - reserved, 1)
    torch.set_num_threads(threads)

    from flmr_rag.demo.pipeline import FULL_SETTINGS, QUICK_SETTINGS, run_demo
    from flmr_rag.demo.report import format_table, write_html, write_json

    result = run_demo(QUICK_SETTINGS if args.quick else FULL_SETTINGS, cache_dir=args.cache_dir, retrain=args.retrain, parallel_training=not args.sequential)
    print(format_table(result))

    report = Path(args.report) if args.report else DEFAULT_REPORT_DIR / "report.html"
    write_html(result, report)
    print(f"\nHTML report: {report}")
    if args.json:
        write_json(result, args.json)
        print(f"JSON metrics: {args.json}")
    return 0
