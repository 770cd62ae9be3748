"""Recall@K of a model on held-out training rows, by exact late-interaction search."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flmr_rag.encoding import FLMREncoder, Query
from flmr_rag.scoring import late_interaction_scores
from flmr_rag.training.data import Passage, TrainingExample


def encode_passages_padded(encoder: FLMREncoder, passages: Sequence[Passage]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode passages into padded ``[N, Ld, dim]`` float32 embeddings and a ``[N, Ld]`` bool mask."""
    packed, doclens = encoder.encode_documents([p.text for p in passages], [p.image for p in passages])
    width = max(doclens)
    embeddings = torch.zeros(len(passages), width, packed.shape[-1], dtype=torch.float32)
    mask = torch.zeros(len(passages), width, dtype=torch.bool)
    start = 0
    for row, length in enumerate(doclens):
        embeddings[row, :length] = packed[start : start + length].float()
        mask[row, :length] = True
        start += length
    return embeddings, mask


def recall_at_k(
    encoder: FLMREncoder,
    examples: Sequence[TrainingExample],
    passages: dict[str, Passage],
    ks: Sequence[int] = (1, 5, 10),
    default_instruction: str | None = None,
) -> dict[str, float]:
    """Return ``{"recall@K": share of examples with a positive among the top K}`` for each K.

    Every passage is scored exactly against every query (no index); a K above the number of
    passages counts all of them. Raises ValueError for an empty example list.
    """
    if not examples:
        raise ValueError("recall_at_k needs at least one example")
    passage_list = list(passages.values())
    documents, mask = encode_passages_padded(encoder, passage_list)
    ids = [passage.id for passage in passage_list]

    max_k = min(max(ks), len(ids))
    hits = {k: 0 for k in ks}
    for start in range(0, len(examples), encoder.batch_size):
        batch = examples[start : start + encoder.batch_size]
        queries = [
            Query(question=example.question, image=example.image, instruction=example.instruction if example.instruction is not None else default_instruction)
            for example in batch
        ]
        scores = late_interaction_scores(encoder.encode_queries(queries), documents, mask)
        top = scores.topk(max_k, dim=1).indices.tolist()
        for example, ranked in zip(batch, top):
            positives = set(example.positive_ids)
            for k in ks:
                if any(ids[index] in positives for index in ranked[:k]):
                    hits[k] += 1
    return {f"recall@{k}": hits[k] / len(examples) for k in ks}
