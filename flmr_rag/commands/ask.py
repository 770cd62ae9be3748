"""``flmr-rag ask``: retrieve passages for an image and a question, then answer with a generator (RA-VQA)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flmr_rag.cli import UsageError
from flmr_rag.commands.common import INSTRUCTION_HELP, add_device_option, add_dtype_option, check_image_option
from flmr_rag.commands.generation_options import add_generation_options, load_generator


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ask",
        help="answer a question about an image from the passages of an index",
        description="Retrieve the top K passages, generate one answer per passage and pick the answer with the best "
        "joint retrieval and generation score (or by majority vote).",
    )
    parser.add_argument("index", metavar="DIR", help="the index directory")
    parser.add_argument("--question", required=True, help="the question text")
    parser.add_argument("--image", metavar="IMAGE", help="path of the query image")
    parser.add_argument("--generator", required=True, metavar="MODEL", help="generator hub id or local folder (T5, causal LM, BLIP-2, ...)")
    parser.add_argument("-k", type=int, default=5, help="passages to retrieve and answer from (default: 5)")
    parser.add_argument("--instruction", help=f"query instruction for the retriever, ending with ':'; {INSTRUCTION_HELP} (default: the index's)")
    add_generation_options(parser, selection_help="how to choose the final answer (default: joint)")
    parser.add_argument("--caption", help="an image caption to put in the prompt")
    parser.add_argument("--exact", action="store_true", help="score every document exactly instead of the approximate search")
    add_device_option(parser, help_text="device for both models: cpu, cuda or cuda:N (default: cuda when available)")
    add_dtype_option(parser)
    parser.add_argument("--json", action="store_true", help="print the answer and every candidate as JSON")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise UsageError(f"-k must be at least 1, got {args.k}")
    if not args.question.strip():
        raise UsageError("--question is empty; pass the question text")
    if args.image is not None:
        check_image_option(args.image)
    if not Path(args.index).is_dir():
        raise UsageError(f"index directory {args.index} does not exist; build one with `flmr-rag index`")

    from flmr_rag.generation import answer_question
    from flmr_rag.retriever import FLMRRetriever

    generator = load_generator(args)
    with FLMRRetriever.open(args.index, device=args.device, dtype=args.dtype) as retriever:
        answer = answer_question(
            retriever,
            question=args.question,
            image=args.image,
            k=args.k,
            generator=generator,
            instruction=args.instruction,
            exact=args.exact,
            caption=args.caption,
        )

    if args.json:
        print(json.dumps(answer.to_dict(), indent=2))
        return 0

    print(f"answer: {answer.answer}")
    print(f"from passage {answer.passage_index + 1} (id {answer.passage_id}, selection: {answer.selection})")
    print()
    generation_label = "sum log p(y)" if args.sum_log_probs else "mean log p(y)"
    print(f"{'rank':>4}  {'joint':>8}  {'log p(z|x)':>10}  {generation_label:>13}  answer / passage")
    for candidate in answer.candidates:
        marker = "*" if candidate.passage_index == answer.passage_index else " "
        passage = candidate.passage if len(candidate.passage) <= 60 else candidate.passage[:57] + "..."
        print(
            f"{candidate.passage_index + 1:>3}{marker}  {candidate.joint_score:>8.3f}  {candidate.retrieval_log_prob:>10.3f}  "
            f"{candidate.generation_score:>13.3f}  {candidate.answer!r} / {passage}"
        )
    return 0
