"""Tests of the SQLite document store: staging, commits, tombstones, images and crash recovery."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from flmr_rag.docstore import DocumentStore, DocumentStoreCorruptedError, DuplicateIdError, StoredDocument, encode_png


@pytest.fixture
def store(tmp_path: Path) -> DocumentStore:
    with DocumentStore(tmp_path / "docstore.sqlite", tmp_path / "images") as opened:
        yield opened


def _rows(*ids: str) -> list[StoredDocument]:
    return [StoredDocument(doc_id, f"text of {doc_id}", {"n": index}) for index, doc_id in enumerate(ids)]


def test_docstore_uses_wal_mode(store: DocumentStore) -> None:
    mode = store._connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_staged_rows_are_invisible_until_commit(store: DocumentStore) -> None:
    store.stage(_rows("a", "b"))
    assert store.get("a") is None
    assert store.count() == 0
    store.commit(["a", "b"])
    assert store.get("a") == StoredDocument("a", "text of a", {"n": 0}, None)
    assert store.count() == 2


def test_get_many_skips_unknown_ids(store: DocumentStore) -> None:
    store.stage(_rows("a", "b"))
    store.commit(["a", "b"])
    found = store.get_many(["b", "zzz", "a"])
    assert sorted(found) == ["a", "b"]


def test_stage_rejects_existing_id(store: DocumentStore) -> None:
    store.stage(_rows("a"))
    store.commit(["a"])
    with pytest.raises(DuplicateIdError, match="'a'"):
        store.stage(_rows("b", "a"))
    assert not store.contains("b")


def test_stage_rejects_duplicate_in_batch(store: DocumentStore) -> None:
    with pytest.raises(DuplicateIdError, match="'x'"):
        store.stage(_rows("x", "y", "x"))
    assert store.count_by_state() == {"pending": 0, "committed": 0, "deleting": 0}


def test_discard_drops_pending_rows(store: DocumentStore) -> None:
    store.stage(_rows("a", "b"))
    store.discard(["a", "b"])
    assert not store.contains("a")
    store.stage(_rows("a"))
    assert store.contains("a")


def test_delete_path_removes_rows(store: DocumentStore) -> None:
    store.stage(_rows("a", "b", "c"))
    store.commit(["a", "b", "c"])
    marked = store.mark_deleting(["b", "unknown", "b"])
    assert marked == ["b"]
    assert store.get("b") is None
    assert store.count_by_state()["deleting"] == 1
    store.finish_delete(marked)
    assert store.ids() == ["a", "c"]
    assert not store.contains("b")


def test_metadata_round_trips_as_json(store: DocumentStore) -> None:
    metadata = {"title": "Café 東京", "tags": ["x", 1, 2.5, None], "nested": {"ok": True}}
    store.stage([StoredDocument("m", "t", metadata)])
    store.commit(["m"])
    assert store.get("m").metadata == metadata


def test_save_image_is_content_addressed(store: DocumentStore) -> None:
    png = encode_png(Image.new("RGB", (4, 4), "red"))
    first = store.save_image(png)
    second = store.save_image(png)
    assert first == second
    assert Path(first).parent == store.images_dir
    assert Path(first).read_bytes() == png


def test_encode_png_rejects_corrupt_bytes() -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        encode_png(b"definitely not an image")


def test_encode_png_decodes_jpeg_bytes() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, format="JPEG")
    png = encode_png(buffer.getvalue())
    assert png.startswith(b"\x89PNG")


def test_shared_image_survives_until_last_user_deleted(store: DocumentStore) -> None:
    path = store.save_image(encode_png(Image.new("RGB", (4, 4), "green")))
    store.stage([StoredDocument("a", "", {}, path), StoredDocument("b", "", {}, path)])
    store.commit(["a", "b"])
    store.finish_delete(store.mark_deleting(["a"]))
    assert Path(path).exists()
    store.finish_delete(store.mark_deleting(["b"]))
    assert not Path(path).exists()


def test_external_image_is_never_removed(store: DocumentStore, tmp_path: Path) -> None:
    outside = tmp_path / "mine.png"
    Image.new("RGB", (4, 4)).save(outside)
    store.stage([StoredDocument("a", "", {}, str(outside))])
    store.commit(["a"])
    store.finish_delete(store.mark_deleting(["a"]))
    assert outside.exists()


def test_recover_commits_rows_the_index_holds(store: DocumentStore) -> None:
    store.stage(_rows("held", "lost"))
    counts = store.recover(index_contains=lambda doc_id: doc_id == "held", index_delete=lambda ids: None)
    assert counts == {"committed": 1, "discarded": 1, "deleted": 0}
    assert store.get("held") is not None
    assert not store.contains("lost")


def test_recover_finishes_interrupted_delete(store: DocumentStore) -> None:
    store.stage(_rows("a", "b"))
    store.commit(["a", "b"])
    store.mark_deleting(["a", "b"])
    deleted_from_index: list[str] = []
    counts = store.recover(index_contains=lambda doc_id: doc_id == "a", index_delete=deleted_from_index.extend)
    assert deleted_from_index == ["a"]
    assert counts["deleted"] == 2
    assert store.ids() == []


def test_recover_after_killed_writer(tmp_path: Path) -> None:
    # A separate process stages rows and an image, then dies before committing or discarding.
    script = f"""
import os
from PIL import Image
from flmr_rag.docstore import DocumentStore, StoredDocument, encode_png
store = DocumentStore({str(tmp_path / 'docstore.sqlite')!r}, {str(tmp_path / 'images')!r})
store.stage([StoredDocument('kept', 'old', {{}})])
store.commit(['kept'])
path = store.save_image(encode_png(Image.new('RGB', (4, 4), 'red')))
store.stage([StoredDocument('torn', 'new', {{}}, path)])
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[1])
    store = DocumentStore(tmp_path / "docstore.sqlite", tmp_path / "images")
    store.recover(index_contains=lambda doc_id: doc_id == "kept", index_delete=lambda ids: None)
    assert store.ids() == ["kept"]
    assert not store.contains("torn")
    assert list((tmp_path / "images").iterdir()) == []
    store.close()


def test_newer_schema_version_is_rejected(tmp_path: Path) -> None:
    DocumentStore(tmp_path / "d.sqlite", tmp_path / "images").close()
    connection = sqlite3.connect(tmp_path / "d.sqlite")
    connection.execute("UPDATE store_info SET value = '99' WHERE key = 'schema_version'")
    connection.commit()
    connection.close()
    with pytest.raises(ValueError, match="schema version 99"):
        DocumentStore(tmp_path / "d.sqlite", tmp_path / "images")


def test_many_ids_exceed_parameter_limit(store: DocumentStore) -> None:
    ids = [f"doc-{number}" for number in range(2500)]
    store.stage([StoredDocument(doc_id, "t", {}) for doc_id in ids])
    store.commit(ids)
    assert store.count() == 2500
    assert len(store.get_many(ids)) == 2500
    store.finish_delete(store.mark_deleting(ids[:1500]))
    assert store.count() == 1000


@pytest.mark.parametrize("keep_bytes", [0.5, 100])
def test_truncated_docstore_names_file_and_fix(tmp_path: Path, keep_bytes: float) -> None:
    path = tmp_path / "docstore.sqlite"
    with DocumentStore(path, tmp_path / "images") as filled:
        filled.stage([StoredDocument(f"d{number}", "x" * 2000) for number in range(50)])
        filled.commit([f"d{number}" for number in range(50)])
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep_bytes) if keep_bytes < 1 else int(keep_bytes)])

    with pytest.raises(DocumentStoreCorruptedError) as error:
        with DocumentStore(path, tmp_path / "images") as store:
            store.ids()

    assert str(path) in str(error.value)
    assert "restore it from a backup or rebuild the index" in str(error.value)
