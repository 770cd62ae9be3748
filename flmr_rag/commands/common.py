"""Options and helpers shared by the commands that read corpora and open index directories."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from flmr_rag.cli import UsageError

logger = logging.getLogger(__name__)

# faiss logs which CPU build it loads at INFO level on every start; the commands hide those lines.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

DEFAULT_MODEL = "LinWeizheDragon/PreFLMR_ViT-L"
CORPUS_FORMATS = ("jsonl", "csv", "parquet", "image_folder", "m2kr")


def positive_int(value: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return number


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Add --device, --dtype and --batch-size."""
    parser.add_argument("--device", default=None, help="device to run the model on, e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("auto", "float32", "float16", "bfloat16"),
        help="model dtype (default: bfloat16 or float16 on CUDA, float32 on CPU)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=None, help="documents or queries per forward pass (default: 32)")


def add_corpus_options(parser: argparse.ArgumentParser) -> None:
    """Add the CORPUS argument and the options that select its format and columns."""
    parser.add_argument("corpus", metavar="CORPUS", help="a .jsonl, .csv/.tsv or .parquet file, or a folder of images")
    parser.add_argument("--format", choices=CORPUS_FORMATS, default=None, help="corpus format (default: from the extension)")
    parser.add_argument("--id-column", default=None, help="column of document ids (default: id; passage_id for m2kr)")
    parser.add_argument("--text-column", default=None, help="column of passage texts (default: text; passage_content for m2kr)")
    parser.add_argument("--image-column", default=None, help="column of image paths or bytes (default: image; image_path for m2kr)")
    parser.add_argument("--strict", action="store_true", help="fail on rows without text and image or with unreadable images instead of skipping them")


def read_corpus_argument(args: argparse.Namespace) -> Any:
    """Return the document stream of ``args.corpus``; a missing path is a usage error."""
    from flmr_rag.data import read_corpus

    path = Path(args.corpus)
    if not path.exists():
        raise UsageError(f"corpus {path} does not exist; check the path")
    return read_corpus(
        path,
        format=args.format,
        id_column=args.id_column,
        text_column=args.text_column,
        image_column=args.image_column,
        strict=args.strict,
    )


def require_index_dir(path: str) -> Path:
    """Return ``path`` if it contains an index, else raise a usage error."""
    from flmr_rag.index_directory import SETTINGS_FILE

    directory = Path(path)
    if not (directory / SETTINGS_FILE).is_file():
        raise UsageError(f"{directory} is not an flmr-rag index directory; build one with: flmr-rag index CORPUS --index {directory}")
    return directory


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON (paths and other objects as strings)."""
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print rows as left-aligned columns under ``headers``."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    print("  ".join(header.ljust(width) for header, width in zip(headers, widths)).rstrip())
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
