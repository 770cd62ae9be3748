"""The command-line entry point: exit codes and the -q/-v options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_verbose_logging_hides_library_debug_and_duplicates() -> None:
    script = (
        "import logging; from flmr_rag.cli import configure_logging; configure_logging(False, True); "
        "from huggingface_hub.utils import logging as hub_logging; "
        "hub_logging.get_logger('huggingface_hub.utils._http').warning('retry 1 of 5'); "
        "logging.getLogger('PIL.PngImagePlugin').debug('STREAM b\"IHDR\"'); "
        "logging.getLogger('flmr_rag.retriever').debug('own debug line')"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    assert completed.stderr.count("retry 1 of 5") == 1
    assert "STREAM" not in completed.stderr
    assert "own debug line" in completed.stderr


def test_quiet_help_mentions_warnings() -> None:
    assert "warnings" in cli.build_parser()._option_string_actions["--quiet"].help


def test_broken_pipe_exits_quietly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from flmr_rag.commands import info

    def write_to_closed_pipe(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(info, "run", write_to_closed_pipe)

    assert cli.main(["info"]) == 141
    assert "Broken pipe" not in capsys.readouterr().err


def test_broken_pipe_in_shell_pipeline(tmp_path: Path) -> None:
    command = f"{sys.executable} -m flmr_rag info --json | head -c 0; exit ${{PIPESTATUS[0]}}"
    completed = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)

    assert "Broken pipe" not in completed.stderr
    assert completed.returncode in (0, 141)
