"""Turning corpus rows (mappings of column name to value) into documents, with the shared checks.

Every table reader (JSONL, CSV, Parquet, M2KR) feeds its rows through one :class:`RowConverter`.
The converter picks the id, text and image columns, resolves relative image paths against the corpus
file's folder, checks that each image can be opened, skips or rejects bad rows, rejects duplicate
ids and an empty corpus, and logs one counted warning for the skipped rows.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from flmr_rag.types import Document, ImageInput

logger = logging.getLogger(__name__)

DEFAULT_ID_COLUMN = "id"
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_IMAGE_COLUMN = "image"


class CorpusError(ValueError):
    """A corpus that cannot be read: a missing file, a bad row under ``strict``, a duplicate id."""


def check_corpus_file(path: str | Path) -> Path:
    """Return ``path`` as a Path after checking that it is a readable file.

    Raises:
        FileNotFoundError: the file does not exist.
        CorpusError: the path is a folder, or cannot be opened.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus file {path} does not exist; check the path")
    if path.is_dir():
        raise CorpusError(f"corpus path {path} is a folder; pass a file, or format='image_folder' for a folder of images")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise CorpusError(f"corpus file {path} cannot be read: {error.strerror}; check its permissions") from error
    return path


@contextmanager
def utf8_required(path: Path) -> Iterator[None]:
    """Re-raise a UnicodeDecodeError from the block as a CorpusError that names ``path`` and the UTF-8 fix."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path} is not UTF-8 text ({error}); save it as UTF-8") from error


def check_image(image: ImageInput) -> None:
    """Open ``image`` far enough to know PIL can decode it.

    Raises:
        ValueError: the file is missing or is not a readable image (the message names it).
    """
    if isinstance(image, Image.Image):
        return
    if isinstance(image, (bytes, bytearray)):
        source: Any = io.BytesIO(image)
        name = f"image bytes ({len(image)} bytes)"
    else:
        source = Path(image)
        name = f"image file {image}"
        if not source.is_file():
            raise ValueError(f"{name} does not exist")
    try:
        with Image.open(source) as opened:
            opened.verify()
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name} is not a readable image: {error}") from error


def jsonable(value: Any) -> Any:
    """Return ``value`` if JSON can store it, else its ``str()`` (dates, decimals, numpy scalars)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


class RowConverter:
    """Converts the rows of one corpus into :class:`~flmr_rag.types.Document` objects.

    Args:
        source: the corpus file or folder, named in messages.
        id_column: column of the document id; when absent from a row the retriever generates one.
        text_column: column of the passage text.
        image_column: column of the image: a path (relative paths are resolved against
            ``base_dir``), encoded bytes, or a ``{"bytes": ..., "path": ...}`` mapping as Hugging
            Face datasets store images. None means the corpus has no images.
        base_dir: folder that relative image paths are resolved against.
        strict: raise on the first bad row instead of skipping it.
        metadata_columns: columns copied into ``Document.metadata``; None copies every column
            other than the id, text and image columns.
    """

    def __init__(
        self,
        source: Path,
        id_column: str = DEFAULT_ID_COLUMN,
        text_column: str = DEFAULT_TEXT_COLUMN,
        image_column: str | None = DEFAULT_IMAGE_COLUMN,
        base_dir: Path | None = None,
        strict: bool = False,
        metadata_columns: Iterable[str] | None = None,
    ) -> None:
        self.source = source
        self.id_column = id_column
        self.text_column = text_column
        self.image_column = image_column
        self.base_dir = base_dir if base_dir is not None else source.parent
        self.strict = strict
        self.metadata_columns = list(metadata_columns) if metadata_columns is not None else None
        self.skipped: Counter[str] = Counter()
        self.first_skip: str | None = None
        self.rows_read = 0
        self.documents = 0
        self._seen_ids: set[str] = set()

    def check_columns(self, columns: Iterable[str]) -> None:
        """Reject a corpus whose columns hold neither the text nor the image column.

        Raises:
            CorpusError: naming the columns that exist and the option that selects them.
        """
        names = list(columns)
        if self.text_column in names or (self.image_column is not None and self.image_column in names):
            return
        expected = f"text column {self.text_column!r}"
        if self.image_column is not None:
            expected += f" or image column {self.image_column!r}"
        raise CorpusError(
            f"corpus {self.source} has no {expected}; its columns are {names}; "
            "choose them with text_column=/image_column= (--text-column/--image-column)"
        )

    def convert(self, row: Mapping[str, Any], location: str) -> Document | None:
        """Return the document of ``row`` (found at ``location``, e.g. "line 3"), or None if skipped."""
        self.rows_read += 1
        if self.rows_read == 1:
            self.check_columns(row.keys())

        text = row.get(self.text_column)
        text = "" if text is None else str(text)
        image = self._image_of(row)
        if not text.strip() and image is None:
            return self._skip("no text and no image", location)
        if image is not None:
            try:
                check_image(image)
            except ValueError as error:
                return self._skip(f"unreadable image ({error})", location, reason_key="unreadable image")

        doc_id = self._id_of(row, location)
        skip = {self.id_column, self.text_column, self.image_column}
        columns = self.metadata_columns if self.metadata_columns is not None else [key for key in row if key not in skip]
        metadata = {key: jsonable(row[key]) for key in columns if key in row}
        self.documents += 1
        return Document(id=doc_id, text=text, image=image, metadata=metadata)

    def _id_of(self, row: Mapping[str, Any], location: str) -> str | None:
        value = row.get(self.id_column)
        if value is None or value == "":
            return None
        doc_id = str(value)
        if doc_id in self._seen_ids:
            raise CorpusError(f"duplicate document id {doc_id!r} at {location} of {self.source}; ids must be unique")
        self._seen_ids.add(doc_id)
        return doc_id

    def _image_of(self, row: Mapping[str, Any]) -> ImageInput | None:
        if self.image_column is None:
            return None
        value = row.get(self.image_column)
        if isinstance(value, Mapping):
            value = value.get("bytes") or value.get("path")
        if value is None or value == "" or value == b"":
            return None
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def _skip(self, reason: str, location: str, reason_key: str | None = None) -> None:
        message = f"{self.source} {location}: {reason}"
        if self.strict:
            raise CorpusError(f"{message}; fix the row or drop strict mode (--strict) to skip such rows")
        self.skipped[reason_key or reason] += 1
        if self.first_skip is None:
            self.first_skip = message
        logger.debug("skipping %s", message)
        return None

    def finish(self) -> None:
        """Log the counted warning for skipped rows; raise if the corpus gave no document.

        Raises:
            CorpusError: no row produced a document.
        """
        total_skipped = sum(self.skipped.values())
        if total_skipped:
            reasons = ", ".join(f"{count} with {reason}" for reason, count in self.skipped.most_common())
            logger.warning(
                "skipped %d of %d rows of %s (%s); first: %s",
                total_skipped,
                self.rows_read,
                self.source,
                reasons,
                self.first_skip,
            )
        if self.documents == 0:
            raise CorpusError(
                f"corpus {self.source} contains no documents ({self.rows_read} rows read, {total_skipped} skipped); "
                "check the file and the text/image column names"
            )


class DocumentStream(Iterator[Document]):
    """The documents of one corpus, converted lazily from ``(location, row)`` pairs.

    ``skipped`` counts the rows skipped so far. ``total_rows`` is the row count when the reader
    knows it before reading (Parquet metadata, an image folder's listing), else None.
    """

    def __init__(self, converter: RowConverter, rows: Iterable[tuple[str, Mapping[str, Any]]], total_rows: int | None = None) -> None:
        self.converter = converter
        self.total_rows = total_rows
        self._documents = self._convert(rows)

    def _convert(self, rows: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[Document]:
        for location, row in rows:
            document = self.converter.convert(row, location)
            if document is not None:
                yield document
        self.converter.finish()

    @property
    def skipped(self) -> int:
        """Rows skipped so far (without text and image, or with an unreadable image)."""
        return sum(self.converter.skipped.values())

    def __next__(self) -> Document:
        return next(self._documents)

    def __length_hint__(self) -> int:
        # Rows not read yet; skipped rows make it an upper bound of the documents still to come.
        if self.total_rows is None:
            return NotImplemented
        return max(self.total_rows - self.converter.rows_read, 0)

    def close(self) -> None:
        """Stop reading and release the file the rows come from."""
        self._documents.close()


def convert_rows(
    converter: RowConverter, rows: Iterable[tuple[str, Mapping[str, Any]]], total_rows: int | None = None
) -> DocumentStream:
    """Return the documents of ``(location, row)`` pairs; the converter's final checks run after the last row."""
    return DocumentStream(converter, rows, total_rows)
