"""CSV and TSV corpora, read with the standard ``csv`` module (UTF-8, an optional byte-order mark)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

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


def read_csv(
    path: str | Path,
    id_column: str = DEFAULT_ID_COLUMN,
    text_column: str = DEFAULT_TEXT_COLUMN,
    image_column: str | None = DEFAULT_IMAGE_COLUMN,
    strict: bool = False,
    metadata_columns: list[str] | None = None,
    delimiter: str | None = None,
) -> Iterator[Document]:
    """Stream the documents of a CSV file whose first line is the header.

    ``delimiter`` defaults to a tab for ``.tsv`` files and a comma otherwise. Empty cells count as
    missing values. Relative image paths are resolved against the file's folder.

    Raises:
        FileNotFoundError: ``path`` does not exist (raised at call time).
        CorpusError: the header lacks the text and image columns, an id repeats, a row is bad
            under ``strict``, or no document was read (raised while iterating).
    """
    path = check_corpus_file(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    converter = RowConverter(path, id_column, text_column, image_column, strict=strict, metadata_columns=metadata_columns)
    return convert_rows(converter, _rows(path, delimiter, converter))


def _rows(path: Path, delimiter: str, converter: RowConverter) -> Iterator[tuple[str, dict[str, str]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle, utf8_required(path):
        try:
            reader = csv.DictReader(handle, delimiter=delimiter)
            if reader.fieldnames is None:
                raise CorpusError(f"corpus {path} is empty; it needs a header line and at least one row")
            converter.check_columns(reader.fieldnames)
            for row in reader:
                cells = {key: value for key, value in row.items() if key is not None and value != ""}
                yield f"line {reader.line_num}", cells
        except csv.Error as error:
            raise CorpusError(f"{path} line {reader.line_num} is not valid CSV: {error}") from error
