"""Late-interaction (MaxSim) scoring between query and document token embeddings.

The score of a query against a document is the sum, over the query's token vectors, of the
maximum dot product with any of the document's token vectors. FLMR adds no temperature,
scaling or averaging. Two layouts are supported:

- padded: documents as ``[N, Ld, dim]`` with a boolean token mask; masked tokens take the
  value -9999 before the max, as FLMR's reference scoring does;
- packed: the kept tokens of all documents concatenated as ``[T, dim]`` with per-document
  lengths, the layout of the index.

A query row that is all zeros (a masked instruction token) adds 0 to every document that has
at least one token.
"""

from __future__ import annotations

import numpy as np
import torch

# Value given to masked document tokens before the max, as in FLMR's reference scoring.
MASKED_TOKEN_SCORE = -9999.0

# Upper bound on the elements of one similarity block, to bound peak memory (~256 MB in float32).
_MAX_BLOCK_ELEMENTS = 1 << 26


def _compute_dtype(first: torch.Tensor, second: torch.Tensor) -> torch.dtype:
    """Return the dtype for the similarity matmul: float32 on CPU, the wider input dtype on GPU."""
    dtype = torch.promote_types(first.dtype, second.dtype)
    if first.device.type == "cpu" or not dtype.is_floating_point:
        return torch.float32
    return dtype


def _as_token_mask(mask: torch.Tensor, expected: tuple[int, int]) -> torch.Tensor:
    """Return ``mask`` as a ``[N, Ld]`` bool tensor; accepts ``[N, Ld]`` or ``[N, Ld, 1]``."""
    if mask.dim() == 3 and mask.shape[-1] == 1:
        mask = mask.squeeze(-1)
    if tuple(mask.shape) != expected:
        raise ValueError(f"document mask has shape {tuple(mask.shape)}, expected {expected} (or with a trailing 1)")
    return mask.bool()


def late_interaction_scores(
    queries: torch.Tensor,
    documents: torch.Tensor,
    document_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score every query against every padded document.

    Args:
        queries: ``[B, Lq, dim]`` query token embeddings.
        documents: ``[N, Ld, dim]`` document token embeddings.
        document_mask: ``[N, Ld]`` or ``[N, Ld, 1]`` bool, True for real tokens; None keeps all.

    Returns:
        ``[B, N]`` float32 scores on the documents' device.

    Raises:
        ValueError: if the shapes disagree.
    """
    if queries.dim() != 3 or documents.dim() != 3:
        raise ValueError(f"expected queries [B, Lq, dim] and documents [N, Ld, dim], got {tuple(queries.shape)} and {tuple(documents.shape)}")
    if queries.shape[-1] != documents.shape[-1]:
        raise ValueError(f"query dim {queries.shape[-1]} differs from document dim {documents.shape[-1]}")
    num_documents, doc_length, _ = documents.shape
    mask = None if document_mask is None else _as_token_mask(document_mask, (num_documents, doc_length))

    dtype = _compute_dtype(queries, documents)
    queries = queries.to(device=documents.device, dtype=dtype)
    batch, query_length, _ = queries.shape
    per_document = max(1, batch * query_length * doc_length)
    chunk = max(1, _MAX_BLOCK_ELEMENTS // per_document)

    blocks = []
    for start in range(0, num_documents, chunk):
        block = documents[start : start + chunk].to(dtype)
        # [B, n, Ld, Lq]: every query token against every token of each document in the block.
        similarity = torch.einsum("bqd,nld->bnlq", queries, block)
        if mask is not None:
            block_mask = mask[start : start + chunk].to(similarity.device)
            similarity = similarity.masked_fill(~block_mask[None, :, :, None], MASKED_TOKEN_SCORE)
        blocks.append(similarity.amax(dim=2).sum(dim=-1))
    if not blocks:
        return torch.zeros(batch, 0, dtype=torch.float32, device=documents.device)
    return torch.cat(blocks, dim=1).float()


def pairwise_late_interaction_scores(
    queries: torch.Tensor,
    documents: torch.Tensor,
    document_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score query ``i`` against document ``i`` only.

    Args:
        queries: ``[N, Lq, dim]``.
        documents: ``[N, Ld, dim]``.
        document_mask: ``[N, Ld]`` or ``[N, Ld, 1]`` bool, True for real tokens; None keeps all.

    Returns:
        ``[N]`` float32 scores.
    """
    if queries.dim() != 3 or documents.dim() != 3 or queries.shape[0] != documents.shape[0]:
        raise ValueError(f"expected queries [N, Lq, dim] and documents [N, Ld, dim], got {tuple(queries.shape)} and {tuple(documents.shape)}")
    num_documents, doc_length, _ = documents.shape
    dtype = _compute_dtype(queries, documents)

    # [N, Ld, Lq]
    similarity = torch.bmm(documents.to(dtype), queries.to(device=documents.device, dtype=dtype).transpose(1, 2))
    if document_mask is not None:
        mask = _as_token_mask(document_mask, (num_documents, doc_length)).to(similarity.device)
        similarity = similarity.masked_fill(~mask[:, :, None], MASKED_TOKEN_SCORE)
    return similarity.amax(dim=1).sum(dim=-1).float()


def packed_late_interaction_scores(
    queries: torch.Tensor,
    tokens: torch.Tensor,
    doclens: torch.Tensor,
) -> torch.Tensor:
    """Score queries against documents whose kept tokens are packed end to end.

    Args:
        queries: ``[Lq, dim]`` for one query or ``[B, Lq, dim]`` for a batch padded with zero rows.
        tokens: ``[T, dim]``, the tokens of document 0, then document 1, and so on.
        doclens: ``[N]`` integer token counts summing to ``T``; zero-length documents are allowed.

    Returns:
        ``[N]`` (one query) or ``[B, N]`` float32 scores. A zero-length document scores -inf.

    Raises:
        ValueError: if the shapes disagree or ``doclens`` does not sum to ``T``.
    """
    single = queries.dim() == 2
    if single:
        queries = queries.unsqueeze(0)
    if queries.dim() != 3 or tokens.dim() != 2 or queries.shape[-1] != tokens.shape[-1]:
        raise ValueError(f"expected queries [(B,) Lq, dim] and tokens [T, dim], got {tuple(queries.shape)} and {tuple(tokens.shape)}")
    doclens = torch.as_tensor(doclens, dtype=torch.long, device=tokens.device)
    if doclens.dim() != 1 or (doclens < 0).any() or int(doclens.sum()) != tokens.shape[0]:
        raise ValueError(f"doclens must be a 1-D non-negative vector summing to {tokens.shape[0]} tokens, got sum {int(doclens.sum())}")

    batch, query_length, dim = queries.shape
    num_documents = doclens.shape[0]
    dtype = _compute_dtype(queries, tokens)
    flat_queries = queries.reshape(batch * query_length, dim).to(device=tokens.device, dtype=dtype)
    best = torch.full((num_documents, batch * query_length), float("-inf"), dtype=dtype, device=tokens.device)

    # Documents are processed in groups whose similarity block stays under the memory bound.
    offsets = torch.cumsum(doclens, dim=0) - doclens
    tokens_per_block = max(1, _MAX_BLOCK_ELEMENTS // max(1, batch * query_length))
    on_cpu = tokens.device.type == "cpu"
    document_index = None if on_cpu else torch.repeat_interleave(torch.arange(num_documents, device=tokens.device), doclens)
    start_doc = 0
    while start_doc < num_documents:
        first_token = int(offsets[start_doc])
        end_doc = int(torch.searchsorted(offsets, first_token + tokens_per_block, right=False))
        end_doc = max(end_doc, start_doc + 1)
        last_token = first_token + int(doclens[start_doc:end_doc].sum())
        if last_token > first_token:
            similarity = tokens[first_token:last_token].to(dtype) @ flat_queries.T
            if on_cpu:
                _segment_max_into(best[start_doc:end_doc], similarity, doclens[start_doc:end_doc])
            else:
                assert document_index is not None
                rows = document_index[first_token:last_token] - start_doc
                best[start_doc:end_doc].scatter_reduce_(0, rows[:, None].expand_as(similarity), similarity, "amax", include_self=True)
        start_doc = end_doc

    scores = best.reshape(num_documents, batch, query_length).sum(dim=-1).T.float()
    return scores[0] if single else scores


def _segment_max_into(best: torch.Tensor, similarity: torch.Tensor, doclens: torch.Tensor) -> None:
    """Write into ``best`` ``[n, R]`` the maxima of ``similarity`` ``[sum(doclens), R]`` per document (CPU only).

    Rows of zero-length documents are left unchanged. ``np.maximum.reduceat`` over the groups of
    consecutive rows took 5.8 ms where ``scatter_reduce_`` with "amax" took 15.4 ms (2,000
    documents of about 64 tokens, 32 query rows, 2-core CPU).
    """
    lengths = doclens.numpy()
    nonempty = np.flatnonzero(lengths > 0)
    starts = (np.cumsum(lengths) - lengths)[nonempty]
    maxima = np.maximum.reduceat(similarity.numpy(), starts, axis=0)
    best[torch.from_numpy(nonempty)] = torch.from_numpy(maxima).to(best.dtype)
