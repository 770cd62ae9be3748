"""Options and helpers shared by the commands that read corpora and open index directories."""

from __future__ import annotations

import argparse
import json
import logging
import re
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


DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
INSTRUCTION_HELP = "a trailing ':' is appended, with a warning, when the instruction has none"


def device_option(value: str) -> str:
    """argparse type: ``cpu``, ``cuda`` or ``cuda:N``, where CUDA must be available."""
    if not DEVICE_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid --device {value!r}; use cpu, cuda or cuda:N")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"--device {value}: CUDA is not available on this machine; use --device cpu")
        number = int(value.partition(":")[2] or 0)
        if number >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"--device {value}: this machine has {torch.cuda.device_count()} CUDA devices; use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    return value


def add_device_option(
    parser: argparse.ArgumentParser, help_text: str = "device to run the model on: cpu, cuda or cuda:N (default: cuda when available)"
) -> None:
    """Add --device, checked by :func:`device_option`."""
    parser.add_argument("--device", type=device_option, default=None, help=help_text)


def add_dtype_option(parser: argparse.ArgumentParser) -> None:
    """Add --dtype with the supported choices."""
    parser.add_argument("--dtype", default=None, choices=DTYPE_CHOICES, help="model dtype (default: bfloat16 or float16 on CUDA, float32 on CPU)")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Add --device, --dtype and --batch-size."""
    add_device_option(parser)
    add_dtype_option(parser)
    parser.add_argument("--batch-size", type=positive_int, default=None, help="documents or queries per forward pass (default: 32)")


def check_image_option(value: str, option: str = "--image") -> None:
    """Raise a usage error unless ``value`` is a readable image file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(value)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory, not an image file; pass the path of one image")
    if not path.is_file():
        raise UsageError(f"{option} {path} does not exist; check the path")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UsageError(f"{option} {path} is not a readable image file ({error}); check the file or convert it to PNG/JPEG") from None


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
    from flmr_rag.data import CorpusError, format_of, read_corpus

    path = Path(args.corpus)
    if not path.exists():
        raise UsageError(f"corpus {path} does not exist; check the path")
    if args.format is None:
        try:
            format_of(path)
        except CorpusError:
            raise UsageError(
                f"cannot tell the format of corpus {path} from its extension {path.suffix!r}; "
                f"rename it to .jsonl, .csv, .tsv or .parquet, or pass --format ({', '.join(CORPUS_FORMATS)})"
            ) from None
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
    if (directory / SETTINGS_FILE).is_file():
        return directory
    if not directory.exists():
        raise UsageError(f"{directory} does not exist; build an index with: flmr-rag index CORPUS --index {directory}")
    if not directory.is_dir():
        raise UsageError(
            f"{directory} is a file, not an flmr-rag index directory; pass the index directory "
            f"(to index this file: flmr-rag index {directory} --index NEW_DIR)"
        )
    if any(directory.iterdir()):
        raise UsageError(
            f"{directory} is not an flmr-rag index directory (it has no {SETTINGS_FILE}); "
            "pass the directory given to --index when the index was built"
        )
    raise UsageError(f"{directory} is an empty directory, not an flmr-rag index directory; build one with: flmr-rag index CORPUS --index {directory}")


def plural(count: int, noun: str) -> str:
    """Return ``"1 document"`` or ``"2 documents"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def skipped_rows_note(documents: Any) -> str:
    """Return ``"; skipped 2 rows (see the warning above)"`` for a stream that skipped rows, else ``""``."""
    skipped = getattr(documents, "skipped", 0)
    return f"; skipped {plural(skipped, 'row')} (see the warning above)" if skipped else ""


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON (paths and other objects as strings)."""
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print rows as left-aligned columns under ``headers``."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    print("  ".join(header.ljust(width) for header, width in zip(headers, widths)).rstrip())
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
