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
import os
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
    verbosity.add_argument("-q", "--quiet", action="store_true", default=default, help="print only results, warnings and errors; hide progress bars")
    verbosity.add_argument("-v", "--verbose", action="store_true", default=default, help="print debug logs of flmr-rag")


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


# Libraries whose debug logs flood -v output (PIL logs every PNG chunk it reads); -v keeps them at INFO.
THIRD_PARTY_LOGGERS = ("PIL", "urllib3", "huggingface_hub", "filelock", "faiss", "httpx", "httpcore", "fsspec")


def configure_logging(quiet: bool, verbose: bool) -> None:
    """Set the root log level and silence tqdm bars when quiet."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if verbose:
        for name in THIRD_PARTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
    # huggingface_hub prints through a handler of its own, so passing its records on to the root
    # handler as well would print every retry warning twice.
    logging.getLogger("huggingface_hub").propagate = False
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
        status = int(args.func(args) or 0)
        # Flushing here lets a closed pipe surface as BrokenPipeError below, not at interpreter exit.
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader of stdout (e.g. `| head`) exited: stop quietly, as Unix tools do.
        _discard_stdout()
        return 141
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


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        # stdout is not a file descriptor (e.g. captured by a test harness).
        pass


if __name__ == "__main__":
    # Run through the imported module so that `python -m flmr_rag.cli` raises and catches the
    # same UsageError class as the commands.
    from flmr_rag.cli import main as package_main

    sys.exit(package_main())
