"""JSON Lines corpora: one JSON object per line."""

from __future__ import annotations

import json
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
    utf8_required,
)
from flmr_rag.types import Document


def read_jsonl(
    path: str | Path,
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = DEFAULT_TEXT_COLUMN,
    image_column: str | None = DEFAULT_IMAGE_COLUMN,
    strict: bool = False,
    metadata_columns: list[str] | None = None,
) -> Iterator[Document]:
    """Stream the documents of a JSON Lines file (blank lines are ignored).

    Relative image paths are resolved against the file's folder. See
    :class:`~flmr_rag.data.rows.RowConverter` for the columns and the skipping rules.

    Raises:
        FileNotFoundError: ``path`` does not exist (raised at call time).
        CorpusError: a line is not a JSON object, an id repeats, a row is bad under ``strict``,
            or no document was read (raised while iterating).
    """
    path = check_corpus_file(path)
    converter = RowConverter(path, id_column, text_column, image_column, strict=strict, metadata_columns=metadata_columns)
    return convert_rows(converter, _rows(path))


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle, utf8_required(path):
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{path} line {number} is not valid JSON: {error}; fix or remove the line") from error
            if not isinstance(row, dict):
                raise CorpusError(
                    f"{path} line {number} is a JSON {type(row).__name__}, not an object; "
                    "each line must be an object such as {\"id\": ..., \"text\": ...}"
                )
            yield f"line {number}", row
