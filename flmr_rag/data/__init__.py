"""Corpus readers: JSONL, CSV/TSV, Parquet, folders of images and M2KR-style passage rows.

Each reader streams :class:`~flmr_rag.types.Document` objects, so a corpus larger than memory can
be indexed. :func:`read_corpus` picks the reader from the file extension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flmr_rag.data.csv_reader import read_csv
from flmr_rag.data.image_folder import read_image_folder
from flmr_rag.data.jsonl import read_jsonl
from flmr_rag.data.m2kr import read_m2kr
from flmr_rag.data.parquet import read_parquet
from flmr_rag.data.rows import CorpusError
from flmr_rag.types import Document

__all__ = [
    "CorpusError",
    "FORMATS",
    "read_corpus",
    "read_csv",
    "read_image_folder",
    "read_jsonl",
    "read_m2kr",
    "read_parquet",
]

_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

TABLE_READERS: dict[str, Callable[..., Iterator[Document]]] = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "parquet": read_parquet,
}

FORMATS = ("jsonl", "csv", "parquet", "image_folder", "m2kr")


def format_of(path: Path) -> str:
    """Return the corpus format of ``path``: ``image_folder`` for a folder, else by extension.

    Raises:
        CorpusError: the extension is not one of the supported ones.
    """
    if path.is_dir():
        return "image_folder"
    suffix = path.suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        known = ", ".join(sorted(_SUFFIX_FORMATS))
        raise CorpusError(f"cannot tell the format of corpus {path} from its extension {suffix!r}; use one of {known} or pass format=")
    return _SUFFIX_FORMATS[suffix]


def read_corpus(
    path: str | Path,
    format: str | None = None,
    id_column: str | None = None,
    text_column: str | None = None,
    image_column: str | None = None,
    strict: bool = False,
    **options: Any,
) -> Iterator[Document]:
    """Stream the documents of a corpus file or image folder.

    Args:
        path: a .jsonl/.ndjson, .csv/.tsv or .parquet/.pq file, or a folder of images.
        format: one of ``FORMATS``; None picks it from ``path``. ``"m2kr"`` reads M2KR-style
            rows (``passage_id``, ``passage_content``, ``image_path``) from any table format.
        id_column, text_column, image_column: column names; None keeps the reader's default
            (``id``/``text``/``image``, or the M2KR names).
        strict: raise on the first row without text and image or with an unreadable image,
            instead of skipping it with a counted warning.
        options: passed to the reader (``metadata_columns``, ``delimiter``, ``recursive``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorpusError: unknown format, unreadable file, duplicate ids, bad rows under ``strict``, or
            an empty corpus (the last three while iterating).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus {path} does not exist; check the path")
    if format is None:
        format = format_of(path)
    if format not in FORMATS:
        raise CorpusError(f"unknown corpus format {format!r}; use one of {', '.join(FORMATS)}")

    if format == "image_folder":
        return read_image_folder(path, strict=strict, **options)
    columns = {
        name: value
        for name, value in (("id_column", id_column), ("text_column", text_column), ("image_column", image_column))
        if value is not None
    }
    reader = read_m2kr if format == "m2kr" else TABLE_READERS[format]
    return reader(path, strict=strict, **columns, **options)
