"""Inverted lists from centroid to documents in CSR form: ``offsets`` ``[K + 1]`` and ``docs`` ``[nnz]``.

List ``c`` is ``docs[offsets[c]:offsets[c + 1]]``: the sorted, unique rows of the documents that
have at least one token assigned to centroid ``c``. Nothing is padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OFFSETS_FILE = "offsets.npy"
DOCS_FILE = "docs.npy"
IVF_FILES = (OFFSETS_FILE, DOCS_FILE)


def ragged_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Return the concatenation of ``arange(s, s + n)`` for every pair, as int64, without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    shifts = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shifts


@dataclass(frozen=True)
class InvertedLists:
    """Centroid -> document rows, CSR.

    Attributes:
        offsets: ``[K + 1]`` int64, non-decreasing, ``offsets[0] == 0``.
        docs: ``[nnz]`` int32 document rows (global rows of the index).
    """

    offsets: np.ndarray
    docs: np.ndarray

    @property
    def num_centroids(self) -> int:
        """Number of lists K."""
        return len(self.offsets) - 1

    @classmethod
    def empty(cls, num_centroids: int) -> InvertedLists:
        """Return K empty lists."""
        return cls(np.zeros(num_centroids + 1, dtype=np.int64), np.zeros(0, dtype=np.int32))

    @classmethod
    def build(cls, codes: np.ndarray, doclens: np.ndarray, first_doc: int, num_centroids: int) -> InvertedLists:
        """Build the lists of documents ``first_doc .. first_doc + len(doclens) - 1``.

        Args:
            codes: ``[T]`` centroid id of every token, documents packed end to end.
            doclens: ``[N]`` token counts summing to ``T``.
            first_doc: global row of the first document.
            num_centroids: K.
        """
        doclens = np.asarray(doclens, dtype=np.int64)
        doc_rows = np.repeat(np.arange(first_doc, first_doc + len(doclens), dtype=np.int64), doclens)
        keys = np.unique((np.asarray(codes, dtype=np.int64) << 32) | doc_rows)
        list_ids = keys >> 32
        docs = (keys & 0xFFFFFFFF).astype(np.int32)
        counts = np.bincount(list_ids, minlength=num_centroids)
        offsets = np.zeros(num_centroids + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(offsets, docs)

    def merge(self, newer: InvertedLists) -> InvertedLists:
        """Append ``newer``'s lists to these; every row in ``newer`` must exceed every row here."""
        if newer.num_centroids != self.num_centroids:
            raise ValueError(f"cannot merge inverted lists over {newer.num_centroids} and {self.num_centroids} centroids")
        old_counts = np.diff(self.offsets)
        new_counts = np.diff(newer.offsets)
        offsets = np.zeros_like(self.offsets)
        np.cumsum(old_counts + new_counts, out=offsets[1:])
        docs = np.empty(len(self.docs) + len(newer.docs), dtype=np.int32)

        # Old entries keep their rank inside their list; new entries follow the old ones.
        list_of_old = np.repeat(np.arange(self.num_centroids), old_counts)
        old_positions = offsets[list_of_old] + (np.arange(len(self.docs)) - self.offsets[list_of_old])
        docs[old_positions] = self.docs
        list_of_new = np.repeat(np.arange(self.num_centroids), new_counts)
        new_positions = offsets[list_of_new] + old_counts[list_of_new] + (np.arange(len(newer.docs)) - newer.offsets[list_of_new])
        docs[new_positions] = newer.docs
        return InvertedLists(offsets, docs)

    def lookup(self, cells: np.ndarray) -> np.ndarray:
        """Return the concatenated lists of ``cells`` (int32 rows; a document may repeat)."""
        cells = np.asarray(cells, dtype=np.int64)
        starts = self.offsets[cells]
        lengths = self.offsets[cells + 1] - starts
        return self.docs[ragged_ranges(starts, lengths)]

    def arrays(self) -> dict[str, np.ndarray]:
        """Return the arrays keyed by their file names."""
        return {OFFSETS_FILE: self.offsets, DOCS_FILE: self.docs}
