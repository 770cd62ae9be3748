"""Options and the answer generator shared by the commands that answer questions (``ask``, ``eval``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_generation_options(parser: argparse.ArgumentParser, selection_help: str) -> None:
    """Add --selection, --sum-log-probs, --num-beams and --max-new-tokens."""
    parser.add_argument("--selection", choices=("joint", "majority"), default="joint", help=selection_help)
    parser.add_argument("--sum-log-probs", action="store_true", help="score answers by summed instead of mean token log-probability")
    parser.add_argument("--num-beams", type=int, default=5, help="beam search width per passage (default: 5)")
    parser.add_argument("--max-new-tokens", type=int, default=10, help="maximum answer length in tokens (default: 10)")


def load_generator(args: argparse.Namespace) -> Any:
    """Load the :class:`flmr_rag.generation.AnswerGenerator` of ``args.generator`` with the generation options."""
    from flmr_rag.generation import AnswerGenerator

    return AnswerGenerator.from_pretrained(
        args.generator,
        device=args.device,
        dtype=args.dtype,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        length_normalize=not args.sum_log_probs,
        selection=args.selection,
    )
