"""MultiVectorIndex durability: crashes mid-write, damaged files, format versions, reader snapshots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from flmr_rag.index import IndexCorruptedError, IndexFormatError, MultiVectorIndex

REPO_ROOT = Path(__file__).resolve().parents[1]
DIM = 16


def documents(seed: int, num_docs: int, doclen: int = 6) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    tokens = rng.standard_normal((num_docs * doclen, DIM)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    return tokens, np.full(num_docs, doclen), [f"s{seed}-{i}" for i in range(num_docs)]


@pytest.fixture
def committed(tmp_path: Path) -> Path:
    """An index with 20 committed documents (ids s0-0 .. s0-19)."""
    path = tmp_path / "index"
    index = MultiVectorIndex.create(path, dim=DIM)
    index.add(*documents(0, 20))
    index.close()
    return path


def run_writer(path: Path, patch: str) -> subprocess.CompletedProcess:
    """Run, in a subprocess, an add of 10 documents after ``patch`` (Python code) has been executed."""
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from flmr_rag.index import MultiVectorIndex
        import flmr_rag.index.multivector_index as multivector_index
        import flmr_rag.index.writer as writer
        import flmr_rag.index.segment as segment
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        {patch}
        rng = np.random.default_rng(1)
        tokens = rng.standard_normal((60, {DIM})).astype(np.float32)
        tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
        index = MultiVectorIndex.open({str(path)!r})
        index.add(tokens, [6] * 10, [f"new-{{i}}" for i in range(10)])
        """
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FLMR_RAG_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "patch",
    [
        "segment.SegmentWriter.write_tokens = die",
        "multivector_index.write_manifest = die",
        "import flmr_rag.index.manifest as manifest; manifest.os.replace = die",
    ],
    ids=["writing-tokens", "before-commit", "during-rename"],
)
def test_writer_killed_mid_add_leaves_last_commit(committed: Path, patch: str) -> None:
    completed = run_writer(committed, patch)
    assert completed.returncode == -signal.SIGKILL, completed.stderr

    reopened = MultiVectorIndex.open(committed, verify="full")
    assert len(reopened) == 20
    assert not reopened.contains("new-0")
    assert len(reopened.search(documents(0, 20)[0][:3], k=5)[0][0]) == 5

    reopened.add(*documents(2, 4))
    assert len(MultiVectorIndex.open(committed, verify="full")) == 24
    leftovers = sorted(p.name for p in committed.iterdir() if p.name.endswith(".tmp"))
    assert leftovers == []


def test_writer_killed_at_random_moment(committed: Path) -> None:
    script = textwrap.dedent(
        f"""
        import numpy as np
        from flmr_rag.index import MultiVectorIndex
        index = MultiVectorIndex.open({str(committed)!r})
        rng = np.random.default_rng(3)
        for batch in range(1000):
            tokens = rng.standard_normal((60, {DIM})).astype(np.float32)
            index.add(tokens / np.linalg.norm(tokens, axis=1, keepdims=True), [6] * 10, [f"b{{batch}}-{{i}}" for i in range(10)])
            if batch % 3 == 2:
                index.delete([f"b{{batch}}-0"])
            print(batch, flush=True)
        """
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FLMR_RAG_PROGRESS": "0"}
    process = subprocess.Popen([sys.executable, "-c", script], env=environment, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.readline()  # at least one add has committed
    time.sleep(0.3)
    process.kill()
    process.wait()

    reopened = MultiVectorIndex.open(committed, verify="full")
    per_batch: dict[int, int] = {}
    for document_id in reopened.ids():
        if document_id.startswith("b"):
            batch = int(document_id[1:].split("-")[0])
            per_batch[batch] = per_batch.get(batch, 0) + 1
    last = max(per_batch)
    assert sorted(per_batch) == list(range(last + 1))
    assert all(per_batch[batch] == (9 if batch % 3 == 2 else 10) for batch in range(last))
    assert per_batch[last] in (9, 10)
    reopened.add(*documents(4, 2))
    assert reopened.contains("s4-1")


def test_truncated_segment_file(committed: Path) -> None:
    residuals = committed / "seg-000001" / "residuals.npy"
    residuals.write_bytes(residuals.read_bytes()[:-10])
    with pytest.raises(IndexCorruptedError, match="residuals.npy.*size"):
        MultiVectorIndex.open(committed)


def test_corrupted_small_file_fails_checksum(committed: Path) -> None:
    doclens = committed / "seg-000001" / "doclens.npy"
    data = bytearray(doclens.read_bytes())
    data[-1] ^= 0xFF
    doclens.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptedError, match="doclens.npy.*SHA-256"):
        MultiVectorIndex.open(committed)


def test_corrupted_bulk_file_fails_full_verification(committed: Path) -> None:
    codes = committed / "seg-000001" / "codes.npy"
    data = bytearray(codes.read_bytes())
    data[-1] ^= 0xFF
    codes.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptedError, match="codes.npy.*SHA-256"):
        MultiVectorIndex.open(committed, verify="full")


def test_corrupted_npy_header(committed: Path) -> None:
    codes = committed / "seg-000001" / "codes.npy"
    data = bytearray(codes.read_bytes())
    data[:6] = b"garbag"
    codes.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptedError, match="codes.npy.*npy"):
        MultiVectorIndex.open(committed, verify="sizes")


def test_missing_segment_file(committed: Path) -> None:
    (committed / "seg-000001" / "ids.npy").unlink()
    with pytest.raises(IndexCorruptedError, match="ids.npy.*missing"):
        MultiVectorIndex.open(committed)


def test_truncated_manifest(committed: Path) -> None:
    manifest = committed / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    with pytest.raises(IndexCorruptedError, match="manifest.json.*JSON"):
        MultiVectorIndex.open(committed)


def test_newer_format_version(committed: Path) -> None:
    manifest_path = committed / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="version 99.*upgrade"):
        MultiVectorIndex.open(committed)


def test_foreign_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"name": "something else"}')
    with pytest.raises(IndexFormatError, match="not a flmr-rag index"):
        MultiVectorIndex.open(tmp_path)


def test_no_pickles_on_disk(committed: Path) -> None:
    for path in committed.rglob("*.npy"):
        array = np.load(path, allow_pickle=False)
        assert array.dtype != object


def test_reader_keeps_snapshot_across_commits(committed: Path) -> None:
    tokens, _, ids = documents(0, 20)
    reader = MultiVectorIndex.open(committed)
    before = reader.search(tokens[:4], k=20)[0]

    writer = MultiVectorIndex.open(committed)
    writer.add(*documents(5, 8))
    writer.delete(ids[:10])
    writer.compact(retrain=True)

    after = reader.search(tokens[:4], k=20)[0]
    assert len(reader) == 20
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])
    assert reader.reload()
    assert len(reader) == 18


def test_two_writers_serialise_through_the_lock(committed: Path) -> None:
    first = MultiVectorIndex.open(committed)
    second = MultiVectorIndex.open(committed)
    first.add(*documents(6, 3))
    second.add(*documents(7, 3))
    with pytest.raises(ValueError, match="already in the index"):
        second.add(*documents(6, 1))
    reopened = MultiVectorIndex.open(committed)
    assert len(reopened) == 26
    assert reopened.contains("s6-2")
    assert reopened.contains("s7-2")


@pytest.mark.parametrize("mmap", [True, False])
def test_overwritten_header_error_omits_pickle_advice(tmp_path: Path, mmap: bool) -> None:
    from flmr_rag.index.segment import load_array

    path = tmp_path / "codes.npy"
    np.save(path, np.arange(100, dtype=np.int32))
    content = bytearray(path.read_bytes())
    content[:10] = b"garbage!!!"
    path.write_bytes(bytes(content))

    with pytest.raises(IndexCorruptedError) as caught:
        load_array(path, mmap=mmap)

    assert "does not start with a .npy header" in str(caught.value)
    assert "pickle" not in str(caught.value)
    assert "\n" not in str(caught.value)
