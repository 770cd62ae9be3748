"""``flmr-rag train``: contrastive fine-tuning of an FLMR / PreFLMR checkpoint on JSONL rows."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a retriever on query rows (question, image, positive passage ids) against a passage file",
        description=(
            "Fine-tunes FLMRModelForRetrieval with the FLMR contrastive loss. TRAIN is a JSONL file of rows "
            "{question, image, instruction, positive_ids, negative_ids}; --passages is a JSONL file of "
            "{id, text, image}. The result in --output loads with FLMRModelForRetrieval.from_pretrained."
        ),
    )
    parser.add_argument("train", help="JSONL training rows")
    parser.add_argument("--passages", required=True, help="JSONL passage file the rows' ids point into")
    parser.add_argument("--model", default="LinWeizheDragon/PreFLMR_ViT-L", help="checkpoint folder or hub id to start from")
    parser.add_argument("--output", required=True, help="folder for checkpoints and the final model")
    parser.add_argument("--eval", dest="eval_file", help="JSONL held-out rows for Recall@K")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    parser.add_argument("--batch-size", type=int, default=8, help="queries per forward pass (default 8)")
    parser.add_argument("--grad-accum", type=int, default=1, help="forward passes per optimizer step (default 1)")
    parser.add_argument("--num-negatives", type=int, default=1, help="negatives per query (default 1)")
    parser.add_argument("--no-in-batch-negatives", action="store_true", help="train on each query's own passages only")
    parser.add_argument("--distinct-positives", action="store_true", help="no two queries of a batch share a positive passage")
    parser.add_argument("--train-text-encoders", action="store_true", help="also train the BERT text encoders")
    parser.add_argument("--train-vision-encoder", action="store_true", help="also train the ViT (frozen by default)")
    parser.add_argument("--freeze-mapping-networks", action="store_true", help="do not train the mapping networks")
    parser.add_argument("--mapping-lr", type=float, default=1e-4, help="learning rate of the mapping networks (default 1e-4)")
    parser.add_argument("--encoder-lr", type=float, default=1e-5, help="learning rate of the encoders (default 1e-5)")
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps (default 100)")
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="bfloat16 autocast (auto: on CUDA GPUs that support it)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    parser.add_argument("--eval-every", type=int, default=0, help="steps between evaluations (0: only at the end)")
    parser.add_argument("--save-every", type=int, default=0, help="steps between resumable checkpoints (0: only the final model)")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="a checkpoint-<step> folder, or 'latest' in --output")
    parser.add_argument("--instruction", help="instruction for rows without one (default: the retriever's default)")
    parser.add_argument("--skip-bad-rows", action="store_true", help="skip and count invalid rows instead of stopping at the first")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from flmr_rag.cli import UsageError

    for name in ("steps", "batch_size", "grad_accum"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")

    from flmr_rag.encoding import resolve_device
    from flmr_rag.models import FLMRModelForRetrieval, load_image_processor
    from flmr_rag.training import ContrastiveTrainer, TrainingConfig, read_examples, read_passages

    on_error = "skip" if args.skip_bad_rows else "raise"
    passages = read_passages(args.passages)
    train_rows = read_examples(args.train, passages, on_error=on_error)
    eval_rows = read_examples(args.eval_file, passages, on_error=on_error) if args.eval_file else None
    if train_rows.skipped:
        print(f"skipped {len(train_rows.skipped)} invalid training rows (first: {train_rows.skipped[0].reason})")

    config = TrainingConfig(
        output_dir=args.output,
        max_steps=args.steps,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        num_negatives=args.num_negatives,
        distinct_positives=args.distinct_positives,
        use_in_batch_negatives=not args.no_in_batch_negatives,
        train_mapping_networks=not args.freeze_mapping_networks,
        train_text_encoders=args.train_text_encoders,
        train_vision_encoder=args.train_vision_encoder,
        mapping_learning_rate=args.mapping_lr,
        encoder_learning_rate=args.encoder_lr,
        warmup_steps=args.warmup_steps,
        bf16={"auto": "auto", "on": True, "off": False}[args.bf16],
        gradient_checkpointing=args.gradient_checkpointing,
        eval_every=args.eval_every,
        save_every=args.save_every,
        default_instruction=args.instruction,
        seed=args.seed,
    )
    model = FLMRModelForRetrieval.from_pretrained(args.model, device=str(resolve_device(args.device)))
    processor = model.image_processor or load_image_processor(args.model, model.config)
    trainer = ContrastiveTrainer(model, passages, train_rows.examples, config, eval_examples=eval_rows.examples if eval_rows else None, image_processor=processor)
    result = trainer.train(resume_from=args.resume)

    print(f"trained to step {result.step} in {result.seconds:.1f} s; model saved in {result.output_dir}")
    if result.evaluations:
        print(json.dumps(result.evaluations[-1]))
    return 0
