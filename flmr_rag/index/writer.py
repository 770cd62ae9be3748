"""Write operations that turn one committed manifest into the next: add, delete, compact.

Each function writes new immutable files named after the next generation and returns the new
manifest; the caller commits it. Files left behind by an interrupted writer are removed by
:func:`remove_unreferenced` under the writer lock.
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from flmr_rag.index.clustering import choose_num_centroids, sample_training_rows, train_codec
from flmr_rag.index.codec import ResidualCodec, code_dtype, packed_width
from flmr_rag.index.ivf import InvertedLists
from flmr_rag.index.manifest import MANIFEST_FILE, TEMP_SUFFIX, fsync_directory, listed_files, save_array
from flmr_rag.index.segment import SegmentWriter
from flmr_rag.index.snapshot import IndexSnapshot
from flmr_rag.progress import progress

logger = logging.getLogger(__name__)

LOCK_FILE = "writer.lock"

# Tokens compressed per step while writing a segment.
COMPRESS_CHUNK_TOKENS = 1 << 16

_OWNED_NAME = re.compile(r"^(?:(?:seg|codec|ivf)-\d{6}|deleted-\d{6}\.npy|" + re.escape(MANIFEST_FILE) + r"\.\d+" + re.escape(TEMP_SUFFIX) + ")$")


@contextmanager
def writer_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``directory/writer.lock`` (blocks until free)."""
    with open(directory / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_unreferenced(directory: Path, manifest: dict[str, Any]) -> None:
    """Delete index-owned entries (segments, codecs, lists, tombstones, temporary manifests) the manifest does not list.

    Only names this index creates are touched, so other files in the directory are safe.
    """
    referenced = {relative.split("/", 1)[0] for relative in listed_files(manifest)}
    for entry in directory.iterdir():
        if entry.name in referenced or not _OWNED_NAME.match(entry.name):
            continue
        logger.debug("removing unreferenced %s", entry)
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def next_manifest(snapshot: IndexSnapshot) -> dict[str, Any]:
    """Return a copy of the snapshot's manifest with the generation advanced."""
    manifest = dict(snapshot.manifest)
    manifest["generation"] = snapshot.generation + 1
    manifest["segments"] = list(manifest["segments"])
    return manifest


def write_add(snapshot: IndexSnapshot, embeddings: np.ndarray, doclens: np.ndarray, ids: list[str]) -> dict[str, Any]:
    """Write a segment for validated new documents (training the codec first if there is none); return the new manifest."""
    directory = snapshot.directory
    manifest = next_manifest(snapshot)
    generation = manifest["generation"]
    settings = manifest.get("settings", {})

    codec = snapshot.codec
    if codec is None and len(embeddings):
        codec = _train(embeddings, manifest["nbits"], settings)
        manifest["codec"] = _write_codec(directory, codec, generation, trained_on=len(embeddings))

    name = f"seg-{generation:06d}"
    new_codes, entry = _write_segment(directory / name, name, codec, manifest, [embeddings], doclens, ids)
    manifest["segments"].append(entry)

    if codec is not None:
        new_lists = InvertedLists.build(new_codes, doclens, snapshot.num_rows, codec.num_centroids)
        lists = snapshot.ivf.merge(new_lists) if snapshot.ivf is not None else new_lists
        manifest["ivf"] = _write_ivf(directory, lists, generation)
    return manifest


def write_delete(snapshot: IndexSnapshot, rows: np.ndarray) -> dict[str, Any]:
    """Write tombstones for ``rows`` in addition to the existing ones; return the new manifest."""
    manifest = next_manifest(snapshot)
    all_rows = np.union1d(np.flatnonzero(snapshot.deleted), rows).astype(np.int64)
    file_name = f"deleted-{manifest['generation']:06d}.npy"
    record = save_array(snapshot.directory / file_name, all_rows)
    manifest["deleted"] = {"file": file_name, "count": len(all_rows), "files": {file_name: record}}
    return manifest


def write_compaction(snapshot: IndexSnapshot, retrain: bool) -> dict[str, Any]:
    """Rewrite the live documents into one segment (retraining the codec when asked); return the new manifest."""
    directory = snapshot.directory
    manifest = next_manifest(snapshot)
    generation = manifest["generation"]
    settings = manifest.get("settings", {})
    live_rows = np.flatnonzero(~snapshot.deleted)
    doclens = snapshot.doclens[live_rows]
    ids = [snapshot.ids[row] for row in live_rows]
    token_rows = snapshot.token_rows(live_rows)

    codec = snapshot.codec
    if retrain and len(token_rows):
        num_centroids = choose_num_centroids(len(token_rows))
        train_rows, heldout_rows = sample_training_rows(len(token_rows), num_centroids, settings.get("seed", 0))
        use_originals = snapshot.has_originals
        train = snapshot.gather_tokens(token_rows[train_rows], exact=use_originals).numpy()
        heldout = snapshot.gather_tokens(token_rows[heldout_rows], exact=use_originals).numpy()
        codec = train_codec(train, heldout, num_centroids, manifest["nbits"], settings.get("kmeans_niter", 4), settings.get("seed", 0))
        manifest["codec"] = _write_codec(directory, codec, generation, trained_on=len(token_rows))

    name = f"seg-{generation:06d}"
    if retrain or snapshot.codec is None:
        source = _token_chunks(snapshot, token_rows)
        new_codes, entry = _write_segment(directory / name, name, codec, manifest, source, doclens, ids)
    else:
        new_codes, entry = _copy_segment(snapshot, directory / name, name, manifest, token_rows, doclens, ids)
    manifest["segments"] = [entry]
    manifest["deleted"] = None
    manifest["ivf"] = None
    if codec is not None:
        manifest["ivf"] = _write_ivf(directory, InvertedLists.build(new_codes, doclens, 0, codec.num_centroids), generation)
    return manifest


def _train(embeddings: np.ndarray, nbits: int, settings: dict[str, Any]) -> ResidualCodec:
    started = time.perf_counter()
    num_centroids = choose_num_centroids(len(embeddings))
    train_rows, heldout_rows = sample_training_rows(len(embeddings), num_centroids, settings.get("seed", 0))
    codec = train_codec(embeddings[train_rows], embeddings[heldout_rows], num_centroids, nbits, settings.get("kmeans_niter", 4), settings.get("seed", 0))
    logger.info("trained the codec (%d centroids) in %.1f s", num_centroids, time.perf_counter() - started)
    return codec


def _write_codec(directory: Path, codec: ResidualCodec, generation: int, trained_on: int) -> dict[str, Any]:
    name = f"codec-{generation:06d}"
    (directory / name).mkdir()
    arrays = {"centroids.npy": codec.centroids.astype(np.float16), "bucket_cutoffs.npy": codec.bucket_cutoffs, "bucket_weights.npy": codec.bucket_weights}
    files = {f"{name}/{file_name}": save_array(directory / name / file_name, array) for file_name, array in arrays.items()}
    fsync_directory(directory / name)
    return {"dir": name, "num_centroids": codec.num_centroids, "normalize": codec.normalize, "trained_on_tokens": trained_on, "files": files}


def _write_ivf(directory: Path, lists: InvertedLists, generation: int) -> dict[str, Any]:
    name = f"ivf-{generation:06d}"
    (directory / name).mkdir()
    files = {f"{name}/{file_name}": save_array(directory / name / file_name, array) for file_name, array in lists.arrays().items()}
    fsync_directory(directory / name)
    return {"dir": name, "num_entries": len(lists.docs), "files": files}


def _write_segment(
    path: Path,
    name: str,
    codec: ResidualCodec | None,
    manifest: dict[str, Any],
    chunks: Any,
    doclens: np.ndarray,
    ids: list[str],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Compress token chunks (an iterable of ``[n, dim]`` arrays, documents in order) into a new segment."""
    dim, nbits = manifest["dim"], manifest["nbits"]
    num_tokens = int(np.sum(doclens))
    dtype = code_dtype(codec.num_centroids) if codec is not None else np.dtype(np.uint16)
    writer = SegmentWriter(path, num_tokens, dim, packed_width(dim, nbits), dtype, manifest["keep_originals"])
    all_codes = np.zeros(num_tokens, dtype=dtype)
    start = 0
    steps = max(1, -(-num_tokens // COMPRESS_CHUNK_TOKENS))
    quiet = {"disable": True} if steps < 4 else {}
    bar = progress(total=num_tokens, desc="compressing tokens", unit="tok", leave=False, **quiet)
    for chunk in chunks:
        for offset in range(0, len(chunk), COMPRESS_CHUNK_TOKENS):
            block = chunk[offset : offset + COMPRESS_CHUNK_TOKENS]
            codes, residuals = codec.compress(block)  # type: ignore[union-attr]
            writer.write_tokens(start, codes, residuals, block)
            all_codes[start : start + len(block)] = codes
            start += len(block)
            bar.update(len(block))
    bar.close()
    return all_codes, writer.finish(doclens, ids, name)


def _copy_segment(
    snapshot: IndexSnapshot,
    path: Path,
    name: str,
    manifest: dict[str, Any],
    token_rows: np.ndarray,
    doclens: np.ndarray,
    ids: list[str],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Copy the stored codes, residuals and originals of ``token_rows`` into a new segment without re-encoding."""
    codec = snapshot.codec
    assert codec is not None
    writer = SegmentWriter(path, len(token_rows), manifest["dim"], packed_width(manifest["dim"], manifest["nbits"]), code_dtype(codec.num_centroids), manifest["keep_originals"])
    bounds = np.searchsorted(token_rows, snapshot.segment_token_starts)
    start = 0
    for index, segment in enumerate(progress(snapshot.segments, desc="compacting segments", unit="segment", leave=False)):
        local = token_rows[bounds[index] : bounds[index + 1]] - snapshot.segment_token_starts[index]
        for offset in range(0, len(local), COMPRESS_CHUNK_TOKENS):
            rows = local[offset : offset + COMPRESS_CHUNK_TOKENS]
            originals = segment.originals[rows] if segment.originals is not None else None
            writer.write_tokens(start, segment.codes[rows], segment.residuals[rows], originals)
            start += len(rows)
    new_codes = snapshot.codes[token_rows]
    return np.asarray(new_codes), writer.finish(doclens, ids, name)


def _token_chunks(snapshot: IndexSnapshot, token_rows: np.ndarray) -> Iterator[np.ndarray]:
    """Yield the tokens of ``token_rows`` in order (originals when kept, else decompressed)."""
    use_originals = snapshot.has_originals
    for offset in range(0, len(token_rows), COMPRESS_CHUNK_TOKENS):
        yield snapshot.gather_tokens(token_rows[offset : offset + COMPRESS_CHUNK_TOKENS], exact=use_originals).numpy()

