"""The document store: passages, metadata and image references in SQLite, kept in step with the index.

Every document lives in one table row keyed by the same string id that the multi-vector index
uses. A row has a ``state``:

- ``pending``: written before the index commit that adds the document; invisible to readers.
- ``committed``: the index contains the document; ``get`` and search results return it.
- ``deleting``: a tombstone written before the index deletes the document; invisible to readers.

The retriever adds in three steps (stage rows as pending, commit the index manifest, mark the
rows committed) and deletes in three steps (mark deleting, delete from the index, drop the
rows). A crash between any two steps leaves rows in a transient state, and
:meth:`DocumentStore.recover` resolves them on the next open by asking the index which ids it
contains. A pending row whose id the index contains becomes committed, any other pending row is
dropped, and a deleting row is deleted from the index (again, if needed) and then dropped. So
when every write goes through the retriever, the committed rows and the live index ids are the
same set after recovery.

Images given as bytes or PIL images are stored as PNG files named by the SHA-256 of their
encoded bytes under ``<index dir>/images/``, and the table refers to them relative to the index
directory, so the directory can be moved. Images given as paths are referenced by absolute path
and never copied or removed. Rows read back always carry absolute paths.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    image_path TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'committed', 'deleting'))
);
CREATE INDEX IF NOT EXISTS documents_state ON documents (state);
CREATE INDEX IF NOT EXISTS documents_image_path ON documents (image_path);
CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# SQLite limits the number of bound parameters per statement (32766 since 3.32, 999 before).
_MAX_PARAMETERS = 900


class DuplicateIdError(ValueError):
    """A document id that is already in the store, or twice in one batch."""


class DocumentStoreCorruptedError(ValueError):
    """The SQLite file of the docstore is truncated or is not a database."""


@dataclass
class StoredDocument:
    """One docstore row: the passage text, JSON metadata and the absolute image path (or None)."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    image_path: str | None = None


def encode_png(image: Image.Image | bytes) -> bytes:
    """Return ``image`` encoded as PNG; bytes are decoded first.

    Raises:
        ValueError: the bytes are not an image PIL can decode.
    """
    if isinstance(image, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(image)) as decoded:
                decoded.load()
                image = decoded.copy()
        except (OSError, Image.DecompressionBombError) as error:
            raise ValueError(f"image bytes ({len(image)} bytes) are not a readable image: {error}") from error
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _chunks(values: list[str], size: int = _MAX_PARAMETERS) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class DocumentStore:
    """SQLite (WAL mode) table of documents aligned with the index ids.

    Args:
        path: the database file; created with its schema when missing.
        images_dir: where :meth:`save_image` writes PNG files; only files in this folder are
            ever removed by the store.

    All methods are safe to call from several threads: one connection is shared under a lock.
    """

    def __init__(self, path: str | os.PathLike[str], images_dir: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.images_dir = Path(images_dir)
        self._root = self.images_dir.parent
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._connection.execute("PRAGMA journal_mode=WAL")
            # FULL makes each commit durable before the index manifest that depends on it is written.
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.executescript(_SCHEMA)
            self._check_schema_version()
        except sqlite3.DatabaseError as error:
            self._connection.close()
            # OperationalError covers locked or read-only files, which are not corruption.
            if isinstance(error, sqlite3.OperationalError):
                raise
            raise DocumentStoreCorruptedError(
                f"docstore {self.path} is corrupted or truncated ({error}); restore it from a backup or rebuild the index"
            ) from error

    def _check_schema_version(self) -> None:
        row = self._connection.execute("SELECT value FROM store_info WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._connection.execute(
                "INSERT INTO store_info (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) > SCHEMA_VERSION:
            raise ValueError(
                f"docstore {self.path} has schema version {row[0]}, newer than {SCHEMA_VERSION} that this "
                "flmr-rag reads; upgrade flmr-rag"
            )

    def close(self) -> None:
        """Close the database connection; later calls raise ``sqlite3.ProgrammingError``."""
        with self._lock:
            self._connection.close()

    # Writing: the add path.

    def save_image(self, png: bytes) -> str:
        """Write PNG bytes to ``images_dir/<sha256>.png`` (atomically, once) and return the path."""
        digest = hashlib.sha256(png).hexdigest()
        target = self.images_dir / f"{digest}.png"
        if target.exists():
            return str(target)
        self.images_dir.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(png)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        return str(target)

    def stage(self, documents: list[StoredDocument]) -> None:
        """Insert ``documents`` as pending rows in one transaction.

        Raises:
            DuplicateIdError: an id occurs twice in ``documents`` or is already stored (in any
                state); nothing is written then.
            TypeError: a metadata value is not JSON-serialisable.
        """
        seen: set[str] = set()
        for document in documents:
            if document.id in seen:
                raise DuplicateIdError(f"duplicate document id {document.id!r} in one batch; ids must be unique")
            seen.add(document.id)
        rows = [
            (document.id, document.text, json.dumps(document.metadata, ensure_ascii=False), self._to_stored(document.image_path))
            for document in documents
        ]

        with self._lock, self._transaction():
            existing = self._existing_ids(list(seen))
            if existing:
                first = next(document.id for document in documents if document.id in existing)
                raise DuplicateIdError(
                    f"document id {first!r} is already in the index ({len(existing)} duplicate ids in this batch); "
                    "delete it first or give the new document another id"
                )
            self._connection.executemany(
                "INSERT INTO documents (id, text, metadata, image_path, state) VALUES (?, ?, ?, ?, 'pending')",
                rows,
            )

    def commit(self, ids: list[str]) -> None:
        """Mark pending rows as committed (the index now contains them)."""
        with self._lock, self._transaction():
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                self._connection.execute(
                    f"UPDATE documents SET state = 'committed' WHERE state = 'pending' AND id IN ({marks})", chunk
                )

    def discard(self, ids: list[str]) -> None:
        """Drop pending rows (an add that failed before the index commit) and their unused images."""
        self._drop(ids, state="pending")

    # Writing: the delete path.

    def mark_deleting(self, ids: Iterable[str]) -> list[str]:
        """Turn the committed rows among ``ids`` into tombstones; return the ids that were committed."""
        unique = list(dict.fromkeys(ids))
        marked: list[str] = []
        with self._lock, self._transaction():
            for chunk in _chunks(unique):
                marks = ",".join("?" * len(chunk))
                found = self._connection.execute(
                    f"SELECT id FROM documents WHERE state = 'committed' AND id IN ({marks})", chunk
                ).fetchall()
                marked.extend(row[0] for row in found)
                self._connection.execute(
                    f"UPDATE documents SET state = 'deleting' WHERE state = 'committed' AND id IN ({marks})", chunk
                )
        return marked

    def finish_delete(self, ids: list[str]) -> None:
        """Drop tombstoned rows (the index no longer contains them) and their unused images."""
        self._drop(ids, state="deleting")

    def _drop(self, ids: list[str], state: str) -> None:
        with self._lock:
            images: set[str] = set()
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                found = self._connection.execute(
                    f"SELECT image_path FROM documents WHERE state = ? AND id IN ({marks}) AND image_path IS NOT NULL",
                    [state, *chunk],
                ).fetchall()
                images.update(row[0] for row in found)

            # Files go first: a crash after this point leaves rows whose documents are already
            # out of the index (or were never in it), and recovery drops them.
            dropped = set(ids)
            for image_path in images:
                self._remove_image_if_unused(image_path, dropped)

            with self._transaction():
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    self._connection.execute(f"DELETE FROM documents WHERE state = ? AND id IN ({marks})", [state, *chunk])

    def _to_stored(self, image_path: str | None) -> str | None:
        """Return the table value of an image path: relative for files in ``images_dir``."""
        if image_path is None:
            return None
        path = Path(image_path)
        if path.is_absolute() and path.parent.resolve() == self.images_dir.resolve():
            return f"{self.images_dir.name}/{path.name}"
        return image_path

    def _from_stored(self, value: str | None) -> str | None:
        if value is None or Path(value).is_absolute():
            return value
        return str(self._root / value)

    def _remove_image_if_unused(self, image_path: str, dropped_ids: set[str]) -> None:
        if Path(image_path).is_absolute():
            return
        path = self._root / image_path
        users = self._connection.execute("SELECT id FROM documents WHERE image_path = ?", (image_path,)).fetchall()
        if all(row[0] in dropped_ids for row in users):
            path.unlink(missing_ok=True)

    # Recovery.

    def recover(self, index_contains: Callable[[str], bool], index_delete: Callable[[list[str]], Any]) -> dict[str, int]:
        """Resolve rows left in a transient state by a crash, using the index as the source of truth.

        Returns the counts ``{"committed": ..., "discarded": ..., "deleted": ...}``: pending rows
        that the index contains, pending rows that it lacks, and tombstones that were finished.
        """
        with self._lock:
            pending = self._ids_in_state("pending")
            deleting = self._ids_in_state("deleting")
        indexed = [doc_id for doc_id in pending if index_contains(doc_id)]
        missing = [doc_id for doc_id in pending if not index_contains(doc_id)]
        if indexed:
            self.commit(indexed)
        if missing:
            self.discard(missing)
        if deleting:
            still_indexed = [doc_id for doc_id in deleting if index_contains(doc_id)]
            if still_indexed:
                index_delete(still_indexed)
            self.finish_delete(deleting)
        counts = {"committed": len(indexed), "discarded": len(missing), "deleted": len(deleting)}
        if any(counts.values()):
            logger.warning(
                "recovered docstore %s after an interrupted write: %d pending documents committed, "
                "%d pending documents discarded, %d deletions finished",
                self.path,
                counts["committed"],
                counts["discarded"],
                counts["deleted"],
            )
        return counts

    def _ids_in_state(self, state: str) -> list[str]:
        rows = self._connection.execute("SELECT id FROM documents WHERE state = ? ORDER BY seq", (state,)).fetchall()
        return [row[0] for row in rows]

    # Reading.

    def get(self, doc_id: str) -> StoredDocument | None:
        """Return the committed document ``doc_id``, or None."""
        return self.get_many([doc_id]).get(doc_id)

    def get_many(self, ids: list[str]) -> dict[str, StoredDocument]:
        """Return the committed documents among ``ids``, keyed by id (absent ids are left out)."""
        found: dict[str, StoredDocument] = {}
        with self._lock:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                marks = ",".join("?" * len(chunk))
                rows = self._connection.execute(
                    f"SELECT id, text, metadata, image_path FROM documents WHERE state = 'committed' AND id IN ({marks})",
                    chunk,
                ).fetchall()
                for doc_id, text, metadata, image_path in rows:
                    found[doc_id] = StoredDocument(doc_id, text, json.loads(metadata), self._from_stored(image_path))
        return found

    def contains(self, doc_id: str) -> bool:
        """Return whether ``doc_id`` is stored in any state (if so, it cannot be added again yet)."""
        with self._lock:
            return bool(self._existing_ids([doc_id]))

    def count(self) -> int:
        """Return the number of committed documents."""
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM documents WHERE state = 'committed'").fetchone()[0])

    def count_by_state(self) -> dict[str, int]:
        """Return the number of rows per state (transient states are non-zero only after a crash)."""
        with self._lock:
            rows = self._connection.execute("SELECT state, COUNT(*) FROM documents GROUP BY state").fetchall()
        counts = {"pending": 0, "committed": 0, "deleting": 0}
        counts.update({state: int(number) for state, number in rows})
        return counts

    def ids(self) -> list[str]:
        """Return the committed ids in insertion order."""
        with self._lock:
            rows = self._connection.execute("SELECT id FROM documents WHERE state = 'committed' ORDER BY seq").fetchall()
        return [row[0] for row in rows]

    def _existing_ids(self, ids: list[str]) -> set[str]:
        existing: set[str] = set()
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = self._connection.execute(f"SELECT id FROM documents WHERE id IN ({marks})", chunk).fetchall()
            existing.update(row[0] for row in rows)
        return existing

    def _transaction(self) -> _Transaction:
        return _Transaction(self._connection)

    def __enter__(self) -> DocumentStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` when the block raises."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._connection.execute("COMMIT")
        else:
            self._connection.execute("ROLLBACK")
