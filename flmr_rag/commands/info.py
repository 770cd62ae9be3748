"""``flmr-rag info``: library version, device and dtype support, or an index's summary."""

from __future__ import annotations

import argparse
import json
import platform


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("info", help="show versions and devices, or describe an index directory")
    parser.add_argument("index", nargs="?", help="an index directory to describe")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def environment_info() -> dict[str, object]:
    """Return versions, the default device and which dtypes it supports."""
    import torch
    import transformers

    import flmr_rag

    cuda = torch.cuda.is_available()
    dtypes = ["float32", "bfloat16"]
    if cuda:
        dtypes.append("float16")
    return {
        "flmr_rag": flmr_rag.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": "cuda" if cuda else "cpu",
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "dtypes": dtypes,
        "cpu_threads": torch.get_num_threads(),
    }


def run(args: argparse.Namespace) -> int:
    if args.index:
        from flmr_rag.commands.common import require_index_dir
        from flmr_rag.commands.index_info import describe_index

        info = describe_index(require_index_dir(args.index))
    else:
        info = environment_info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        width = max(len(key) for key in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0
