"""M2KR-style passage corpora: rows with ``passage_id`` and ``passage_content``.

The M2KR benchmark (the PreFLMR training and evaluation collection) stores each knowledge base as
rows of ``passage_id``, ``passage_content`` and optional fields such as ``page_title``. Image
passages name their picture in an image-path column. The rows may be in a JSONL, CSV or Parquet
file; the container is chosen by the file extension.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from flmr_rag.data.rows import CorpusError
from flmr_rag.types import Document

ID_COLUMN = "passage_id"
TEXT_COLUMN = "passage_content"
IMAGE_COLUMN = "image_path"


def read_m2kr(
    path: str | Path,
    id_column: str = ID_COLUMN,
    text_column: str = TEXT_COLUMN,
    image_column: str | None = IMAGE_COLUMN,
    strict: bool = False,
    metadata_columns: list[str] | None = None,
) -> Iterator[Document]:
    """Stream the passages of an M2KR-style file; other columns (``page_title``, ...) become metadata.

    Raises:
        CorpusError: the extension is not .jsonl, .csv, .tsv or .parquet, or a reader check fails.
    """
    from flmr_rag.data import TABLE_READERS, format_of

    path = Path(path)
    container = format_of(path)
    reader = TABLE_READERS.get(container)
    if reader is None:
        raise CorpusError(f"M2KR corpus {path} must be a .jsonl, .csv, .tsv or .parquet file, not {path.suffix!r}")
    return reader(
        path,
        id_column=id_column,
        text_column=text_column,
        image_column=image_column,
        strict=strict,
        metadata_columns=metadata_columns,
    )
