"""The ``flmr-rag`` command line.

Each subcommand lives in ``flmr_rag/commands/<name>.py`` and exposes
``register(subparsers) -> argparse.ArgumentParser``; the returned parser gets ``func`` set to a
callable ``(args) -> int``. Heavy imports (torch, transformers) happen inside those callables.
Exit status: 0 on success, 1 on a failure, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)

# Subcommand modules in help order; a module that is missing is skipped.
COMMAND_MODULES = ("info", "index", "add", "delete", "search", "ask", "eval", "train", "demo")


class UsageError(Exception):
    """Bad command-line usage detected after parsing (exit status 2)."""


def _add_common_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # Subcommands repeat -q/-v without defaults, so `flmr-rag -q index ...` and
    # `flmr-rag index ... -q` both work: a missing option never overwrites the top-level value.
    default = False if top_level else argparse.SUPPRESS
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", default=default, help="print only results and errors; hide progress bars")
    verbosity.add_argument("-v", "--verbose", action="store_true", default=default, help="print debug logs")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="flmr-rag", description="FLMR / PreFLMR multimodal retrieval for RAG.")
    _add_common_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"flmr_rag.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"flmr_rag.commands.{name}":
                raise
            continue
        subparser = module.register(subparsers)
        _add_common_options(subparser, top_level=False)
    return parser


def configure_logging(quiet: bool, verbose: bool) -> None:
    """Set the root log level and silence tqdm bars when quiet."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if quiet:
        from flmr_rag.progress import set_progress_enabled

        set_progress_enabled(False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    configure_logging(args.quiet, args.verbose)
    try:
        return int(args.func(args) or 0)
    except UsageError as error:
        print(f"flmr-rag {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flmr-rag: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the command line turns every failure into one line
        if args.verbose:
            logger.exception("command %s failed", args.command)
        print(f"flmr-rag {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # Run through the imported module so that `python -m flmr_rag.cli` raises and catches the
    # same UsageError class as the commands.
    from flmr_rag.cli import main as package_main

    sys.exit(package_main())
