"""The command-line entry point: exit codes and the -q/-v options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flmr_rag import cli


@pytest.mark.parametrize("argv", [["-q", "info"], ["info", "-q"]])
def test_quiet_option_either_position(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)

    assert args.quiet is True
    assert args.verbose is False


def test_verbose_option_after_subcommand() -> None:
    args = cli.build_parser().parse_args(["info", "--verbose"])

    assert args.verbose is True


def test_no_command_exits_2() -> None:
    assert cli.main([]) == 2


def test_module_entry_usage_error_exits_2() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "flmr_rag", "search"], capture_output=True, text=True, timeout=120
    )

    assert completed.returncode == 2
    assert "required" in completed.stderr


def test_info_json_lists_device() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "flmr_rag", "info", "--json"], capture_output=True, text=True, timeout=120
    )

    assert completed.returncode == 0
    assert '"device"' in completed.stdout
