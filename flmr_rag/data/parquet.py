"""Parquet corpora, streamed in record batches with pyarrow (the ``flmr-rag[parquet]`` extra)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flmr_rag.data.rows import (
    DEFAULT_ID_COLUMN,
    DEFAULT_IMAGE_COLUMN,
    DEFAULT_TEXT_COLUMN,
    CorpusError,
    RowConverter,
    check_corpus_file,
    convert_rows,
)
from flmr_rag.types import Document

BATCH_ROWS = 1024


def _import_parquet() -> Any:
    try:
        import pyarrow.parquet
    except ImportError as error:
        raise ImportError(
            "reading Parquet corpora needs pyarrow; install it with: pip install 'flmr-rag[parquet]'"
        ) from error
    return pyarrow.parquet


def read_parquet(
    path: str | Path,
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = DEFAULT_TEXT_COLUMN,
    image_column: str | None = DEFAULT_IMAGE_COLUMN,
    strict: bool = False,
    metadata_columns: list[str] | None = None,
) -> Iterator[Document]:
    """Stream the documents of a Parquet file, ``BATCH_ROWS`` rows at a time.

    An image cell may be a path string, binary bytes, or a struct with ``bytes`` and ``path``
    fields (the Hugging Face datasets image layout).

    Raises:
        ImportError: pyarrow is not installed (names the extra to install).
        FileNotFoundError: ``path`` does not exist.
        CorpusError: the file is not Parquet, lacks the text and image columns, an id repeats, a
            row is bad under ``strict``, or no document was read.
    """
    parquet = _import_parquet()
    path = check_corpus_file(path)
    try:
        parquet_file = parquet.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid and OSError subclasses for a bad file
        raise CorpusError(f"{path} is not a readable Parquet file: {error}") from error
    converter = RowConverter(path, id_column, text_column, image_column, strict=strict, metadata_columns=metadata_columns)
    converter.check_columns(parquet_file.schema_arrow.names)
    return convert_rows(converter, _rows(parquet_file), total_rows=parquet_file.metadata.num_rows)


def _rows(parquet_file: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    number = 0
    for batch in parquet_file.iter_batches(batch_size=BATCH_ROWS):
        for row in batch.to_pylist():
            yield f"row {number}", row
            number += 1
