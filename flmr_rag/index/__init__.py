"""PLAID-style multi-vector index: compressed token embeddings, inverted lists, late-interaction search."""

from flmr_rag.index.errors import (
    DuplicateIdError,
    IndexClosedError,
    IndexCorruptedError,
    IndexExistsError,
    IndexFormatError,
    IndexNotFoundError,
    MultiVectorIndexError,
)
from flmr_rag.index.multivector_index import EXACT_SEARCH_MAX_TOKENS, MultiVectorIndex
from flmr_rag.index.search import SearchParameters, default_parameters

__all__ = [
    "EXACT_SEARCH_MAX_TOKENS",
    "DuplicateIdError",
    "IndexClosedError",
    "IndexCorruptedError",
    "IndexExistsError",
    "IndexFormatError",
    "IndexNotFoundError",
    "MultiVectorIndex",
    "MultiVectorIndexError",
    "SearchParameters",
    "default_parameters",
]
