"""Residual codec: every token is stored as its nearest centroid plus a scalar-quantised residual.

A token ``x`` becomes ``code = argmax_c (x . C[c] - |C[c]|^2 / 2)`` (the nearest centroid in L2,
the most similar one for unit centroids) and the residual ``x - C[code]``, whose every component
is mapped to one of ``2**nbits`` buckets. The buckets are global: their cutoffs are the
``j / 2**nbits`` quantiles of all residual components of a held-out sample, and the value a bucket
decodes to is the ``(j + 0.5) / 2**nbits`` quantile.

Packing: ``8 // nbits`` bucket indices share one byte, the first in the most significant bits, so
decoding a byte is one row of a ``[256, 8 // nbits]`` table and a whole residual is one gather.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import torch

SUPPORTED_NBITS = (1, 2, 4, 8)

# Residual components used to estimate the bucket quantiles (sampled when there are more).
_MAX_QUANTILE_VALUES = 1 << 21

# Upper bound on tokens x centroids scores computed at once while assigning codes.
_MAX_ASSIGN_ELEMENTS = 1 << 24

# From this many centroids on, tokens are assigned through an inverted file over the centroids
# (faiss IndexIVFFlat over about sqrt(K) groups, probing ASSIGN_NPROBE of them) instead of
# scoring all K. A few tokens then miss their nearest centroid (about 5% on clustered synthetic
# data). Such a token is still decoded as centroid + residual of the centroid it was given.
ASSIGN_INDEX_MIN_CENTROIDS = 4096
ASSIGN_NPROBE = 8

# Token norms within this distance of 1 mark the data as unit vectors, which decode renormalises.
_UNIT_NORM_TOLERANCE = 1e-2

CENTROIDS_FILE = "centroids.npy"
CUTOFFS_FILE = "bucket_cutoffs.npy"
WEIGHTS_FILE = "bucket_weights.npy"
CODEC_FILES = (CENTROIDS_FILE, CUTOFFS_FILE, WEIGHTS_FILE)


def check_nbits(nbits: int) -> int:
    """Return ``nbits`` if it is one of 1, 2, 4, 8; raise ValueError otherwise."""
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)) or int(nbits) not in SUPPORTED_NBITS:
        raise ValueError(f"nbits={nbits!r} is not supported; use one of {SUPPORTED_NBITS}")
    return int(nbits)


def packed_width(dim: int, nbits: int) -> int:
    """Return the bytes one token's residual takes: ``ceil(dim * nbits / 8)``."""
    values_per_byte = 8 // nbits
    return -(-dim // values_per_byte)


def code_dtype(num_centroids: int) -> np.dtype:
    """Return the smallest dtype for centroid ids: uint16 up to 65,536 centroids, else int32."""
    return np.dtype(np.uint16) if num_centroids <= 1 << 16 else np.dtype(np.int32)


def looks_unit_norm(vectors: np.ndarray) -> bool:
    """Return True when every row of ``vectors`` has an L2 norm within 1e-2 of 1."""
    if len(vectors) == 0:
        return False
    norms = np.linalg.norm(vectors.astype(np.float32, copy=False), axis=1)
    return bool(np.all(np.abs(norms - 1.0) < _UNIT_NORM_TOLERANCE))


@dataclass
class ResidualCodec:
    """Centroids plus global residual buckets; compresses and decompresses token embeddings.

    Attributes:
        centroids: ``[K, dim]`` float32 (values exactly representable in float16, as stored).
        bucket_cutoffs: ``[2**nbits - 1]`` float32, increasing.
        bucket_weights: ``[2**nbits]`` float32, the value each bucket decodes to.
        nbits: bits per residual component, one of 1, 2, 4, 8.
        normalize: renormalise decoded tokens to unit length (set when the training tokens were unit vectors).
    """

    centroids: np.ndarray
    bucket_cutoffs: np.ndarray
    bucket_weights: np.ndarray
    nbits: int
    normalize: bool
    _decode_table: np.ndarray = field(init=False, repr=False)
    _centroids_torch: torch.Tensor = field(init=False, repr=False)
    _centroid_bias: torch.Tensor = field(init=False, repr=False)
    _centroids_bfloat16: torch.Tensor | None = field(init=False, repr=False, default=None)
    _assign_index: faiss.Index | None = field(init=False, repr=False, default=None)
    _assign_lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.nbits = check_nbits(self.nbits)
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        self.bucket_cutoffs = np.ascontiguousarray(self.bucket_cutoffs, dtype=np.float32)
        self.bucket_weights = np.ascontiguousarray(self.bucket_weights, dtype=np.float32)
        buckets = 1 << self.nbits
        if self.bucket_cutoffs.shape != (buckets - 1,) or self.bucket_weights.shape != (buckets,):
            raise ValueError(
                f"nbits={self.nbits} needs {buckets - 1} cutoffs and {buckets} weights, "
                f"got {self.bucket_cutoffs.shape} and {self.bucket_weights.shape}"
            )
        self._decode_table = self._build_decode_table()
        self._centroids_torch = torch.from_numpy(self.centroids)
        self._centroid_bias = 0.5 * (self._centroids_torch * self._centroids_torch).sum(dim=1)

    @property
    def num_centroids(self) -> int:
        """Number of centroids K."""
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.centroids.shape[1])

    @property
    def centroids_torch(self) -> torch.Tensor:
        """``[K, dim]`` float32 torch view of the centroids (shares memory; do not modify)."""
        return self._centroids_torch

    @property
    def centroids_bfloat16(self) -> torch.Tensor:
        """``[K, dim]`` bfloat16 copy of the centroids, made on first use (do not modify)."""
        if self._centroids_bfloat16 is None:
            self._centroids_bfloat16 = self._centroids_torch.bfloat16()
        return self._centroids_bfloat16

    @classmethod
    def fit(cls, centroids: np.ndarray, heldout: np.ndarray, nbits: int, normalize: bool, seed: int = 0) -> ResidualCodec:
        """Fit the residual buckets on held-out tokens for fixed centroids.

        Args:
            centroids: ``[K, dim]`` float; rounded to float16 precision, as they are stored.
            heldout: ``[n, dim]`` float tokens not used to train the centroids (any tokens work).
            nbits: bits per residual component.
            normalize: whether decoded tokens are renormalised to unit length.
            seed: seed of the quantile sub-sample.
        """
        nbits = check_nbits(nbits)
        centroids = np.asarray(centroids, dtype=np.float16).astype(np.float32)
        unfitted = cls(centroids, np.zeros((1 << nbits) - 1), np.zeros(1 << nbits), nbits, normalize)
        heldout = np.asarray(heldout, dtype=np.float32)
        codes = unfitted.assign(heldout)
        residual_values = (heldout - centroids[codes]).ravel()
        if residual_values.size > _MAX_QUANTILE_VALUES:
            rng = np.random.default_rng(seed)
            residual_values = rng.choice(residual_values, _MAX_QUANTILE_VALUES, replace=False)
        buckets = 1 << nbits
        if residual_values.size == 0:
            residual_values = np.zeros(1, dtype=np.float32)
        cutoffs = np.quantile(residual_values, np.arange(1, buckets) / buckets)
        weights = np.quantile(residual_values, (np.arange(buckets) + 0.5) / buckets)
        return cls(centroids, cutoffs, weights, nbits, normalize)

    def assign(self, tokens: np.ndarray) -> np.ndarray:
        """Return the centroid id of each token, ``[n]`` int64 (nearest centroid in L2, see ASSIGN_INDEX_MIN_CENTROIDS)."""
        if self.num_centroids >= ASSIGN_INDEX_MIN_CENTROIDS:
            _, labels = self._centroid_index().search(np.ascontiguousarray(tokens, dtype=np.float32), 1)
            return labels[:, 0].astype(np.int64)
        tokens_torch = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32))
        chunk = max(1, _MAX_ASSIGN_ELEMENTS // max(1, self.num_centroids))
        codes = torch.empty(tokens_torch.shape[0], dtype=torch.long)
        for start in range(0, tokens_torch.shape[0], chunk):
            scores = tokens_torch[start : start + chunk] @ self._centroids_torch.T
            scores -= self._centroid_bias
            codes[start : start + chunk] = scores.argmax(dim=1)
        return codes.numpy()

    def compress(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compress ``[n, dim]`` tokens into codes ``[n]`` (uint16 or int32) and packed residuals ``[n, width]`` uint8."""
        tokens = np.ascontiguousarray(tokens, dtype=np.float32)
        codes = self.assign(tokens)
        residuals = tokens - self.centroids[codes]
        buckets = np.searchsorted(self.bucket_cutoffs, residuals, side="right").astype(np.uint8)
        return codes.astype(code_dtype(self.num_centroids)), self._pack(buckets)

    def decompress(self, codes: np.ndarray, packed: np.ndarray) -> torch.Tensor:
        """Decode codes ``[n]`` and packed residuals ``[n, width]`` into ``[n, dim]`` float32 tokens."""
        codes = np.asarray(codes).astype(np.int64, copy=False)
        residuals = self._decode_table[np.asarray(packed)].reshape(len(codes), -1)[:, : self.dim]
        tokens = torch.from_numpy(self.centroids[codes] + residuals)
        if self.normalize:
            tokens = torch.nn.functional.normalize(tokens, dim=1)
        return tokens

    def save(self, directory: Path) -> None:
        """Write the three codec arrays into ``directory`` (which must exist)."""
        np.save(directory / CENTROIDS_FILE, self.centroids.astype(np.float16))
        np.save(directory / CUTOFFS_FILE, self.bucket_cutoffs)
        np.save(directory / WEIGHTS_FILE, self.bucket_weights)

    @classmethod
    def load(cls, arrays: dict[str, np.ndarray], nbits: int, normalize: bool) -> ResidualCodec:
        """Build a codec from the loaded arrays keyed by file name."""
        return cls(arrays[CENTROIDS_FILE].astype(np.float32), arrays[CUTOFFS_FILE], arrays[WEIGHTS_FILE], nbits, normalize)

    def _centroid_index(self) -> faiss.Index:
        """Return the inverted file over the centroids used by :meth:`assign` (built once, thread-safe)."""
        with self._assign_lock:
            if self._assign_index is None:
                num_groups = 2 ** round(math.log2(math.sqrt(self.num_centroids)))
                index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.dim), self.dim, num_groups, faiss.METRIC_L2)
                index.cp.seed = 0
                index.train(self.centroids)
                index.add(self.centroids)
                index.nprobe = ASSIGN_NPROBE
                self._assign_index = index
            return self._assign_index

    def _pack(self, buckets: np.ndarray) -> np.ndarray:
        values_per_byte = 8 // self.nbits
        width = packed_width(self.dim, self.nbits)
        padded = np.zeros((buckets.shape[0], width * values_per_byte), dtype=np.uint8)
        padded[:, : self.dim] = buckets
        grouped = padded.reshape(buckets.shape[0], width, values_per_byte)
        packed = np.zeros((buckets.shape[0], width), dtype=np.uint8)
        for position in range(values_per_byte):
            shift = self.nbits * (values_per_byte - 1 - position)
            packed |= grouped[:, :, position] << np.uint8(shift)
        return packed

    def _build_decode_table(self) -> np.ndarray:
        values_per_byte = 8 // self.nbits
        byte_values = np.arange(256, dtype=np.int64)[:, None]
        shifts = self.nbits * (values_per_byte - 1 - np.arange(values_per_byte))[None, :]
        bucket_ids = (byte_values >> shifts) & ((1 << self.nbits) - 1)
        return self.bucket_weights[bucket_ids]
