"""A folder of images as a corpus, with optional captions in same-stem ``.txt`` files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flmr_rag.data.rows import CorpusError, RowConverter, convert_rows
from flmr_rag.types import Document

IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})


def read_image_folder(path: str | Path, strict: bool = False, recursive: bool = True) -> Iterator[Document]:
    """Stream one document per image file under ``path`` (sorted by relative path).

    The document id is the image's path relative to ``path`` (POSIX separators), its text is the
    content of ``<stem>.txt`` beside the image when present (else empty), and its metadata is
    ``{"file": <relative path>}``. Unreadable images are skipped with a counted warning (or raise
    with ``strict``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorpusError: ``path`` is not a folder, or holds no readable image (raised while iterating).
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist; check the path")
    if not folder.is_dir():
        raise CorpusError(f"{folder} is not a folder; pass a folder of images or a corpus file")
    converter = RowConverter(folder, id_column="id", text_column="text", image_column="image", base_dir=folder, strict=strict)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    images = sorted(
        candidate for candidate in candidates if candidate.is_file() and candidate.suffix.lower() in IMAGE_SUFFIXES
    )
    return convert_rows(converter, _rows(folder, images), total_rows=len(images))


def _rows(folder: Path, images: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for image in images:
        relative = image.relative_to(folder).as_posix()
        caption_file = image.with_suffix(".txt")
        caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else ""
        yield relative, {"id": relative, "text": caption, "image": relative, "file": relative}
