"""Tests of the index, add, delete, search and info commands, end to end in subprocesses and in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flmr_rag.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY = "import sys; from flmr_rag.cli import main; sys.exit(main())"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``flmr-rag ARGS`` in a fresh interpreter, as the console script does."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FLMR_RAG_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", ENTRY, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory, preflmr_tiny_path: Path) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    images = sorted((preflmr_tiny_path / "images").glob("*.png"))
    for image in images[:2]:
        shutil.copy(image, folder / image.name)
    rows = [
        {"id": "paris", "text": "Paris is the capital of France.", "source": "wiki"},
        {"id": "red", "text": "A red circle.", "image": images[0].name},
        {"id": "blue", "text": "", "image": images[1].name},
        {"id": "nothing", "text": ""},
    ]
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built_index(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path, preflmr_tiny_path: Path) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "kb"
    completed = run_cli("index", str(corpus_file), "--index", str(directory), "--model", str(preflmr_tiny_path), "--batch-size", "2", "--nbits", "4")
    assert completed.returncode == 0, completed.stderr
    return directory


def test_index_command_builds_index(built_index: Path) -> None:
    assert (built_index / "flmr_rag.json").is_file()
    settings = json.loads((built_index / "flmr_rag.json").read_text())
    assert settings["nbits"] == 4


def test_search_command_prints_table(built_index: Path) -> None:
    completed = run_cli("search", str(built_index), "--question", "What is the capital of France?", "-k", "2")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "text", "image"]
    assert len(lines) == 3


def test_bad_usage_exits_2(built_index: Path) -> None:
    completed = run_cli("search", str(built_index), "--question", "x", "-k", "0")
    assert completed.returncode == 2
    assert "-k 0 must be at least 1" in completed.stderr


def test_failure_exits_1_with_one_line(tmp_path: Path, corpus_file: Path) -> None:
    not_a_model = tmp_path / "bert"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    completed = run_cli("index", str(corpus_file), "--index", str(tmp_path / "kb"), "--model", str(not_a_model))
    assert completed.returncode == 1
    errors = [line for line in completed.stderr.splitlines() if "error" in line]
    assert len(errors) == 1
    assert "not an FLMR checkpoint" in errors[0]
    assert not (tmp_path / "kb").exists()


# In-process runs of the same entry point (no interpreter start-up) for the other commands and errors.


def test_search_command_json_with_image(built_index: Path, preflmr_tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = preflmr_tiny_path / "images" / "img0_red_circle.png"
    status = main(["search", str(built_index), "--image", str(image), "--question", "Which shape?", "-k", "3", "--json", "--exact"])
    assert status == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert sorted(result["id"] for result in results) == ["blue", "paris", "red"]
    assert [result["rank"] for result in results] == [1, 2, 3]


def test_add_delete_info_sequence(built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "kb"
    shutil.copytree(built_index, directory)
    extra = tmp_path / "extra.csv"
    extra.write_text("id,text\nrome,Rome is the capital of Italy.\nberlin,Berlin is in Germany.\n", encoding="utf-8")
    assert main(["add", str(extra), "--index", str(directory), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 5

    assert main(["delete", str(directory), "rome", "unknown-id", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["deleted"] == 1
    assert summary["not_found"] == 1

    assert main(["info", str(directory), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["documents"] == 4
    assert described["deleted_not_compacted"] == 1
    assert described["nbits"] == 4


def test_search_without_question_or_image(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(built_index)]) == 2
    assert "--question" in capsys.readouterr().err


def test_search_missing_image(built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(built_index), "--image", str(tmp_path / "gone.png")]) == 2
    assert "gone.png does not exist" in capsys.readouterr().err


def test_search_not_an_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(tmp_path), "--question", "x"]) == 2
    assert "not an flmr-rag index directory" in capsys.readouterr().err


def test_index_missing_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(tmp_path / "missing.jsonl"), "--index", str(tmp_path / "kb")]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err


def test_index_existing_index(built_index: Path, corpus_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(corpus_file), "--index", str(built_index)]) == 2
    assert "already contains an index" in capsys.readouterr().err


def test_index_empty_corpus_leaves_nothing(tmp_path: Path, preflmr_tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text('{"id": "a", "text": ""}\n', encoding="utf-8")
    status = main(["-q", "index", str(corpus), "--index", str(tmp_path / "kb"), "--model", str(preflmr_tiny_path)])
    assert status == 1
    assert "contains no documents" in capsys.readouterr().err
    assert not (tmp_path / "kb").exists()


def test_index_strict_rejects_bad_row(tmp_path: Path, corpus_file: Path, preflmr_tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["index", str(corpus_file), "--index", str(tmp_path / "kb"), "--model", str(preflmr_tiny_path), "--strict"])
    assert status == 1
    assert "line 4: no text and no image" in capsys.readouterr().err


def test_add_duplicate_ids_fail(built_index: Path, corpus_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["add", str(corpus_file), "--index", str(built_index)]) == 1
    assert "'paris' is already in the index" in capsys.readouterr().err


def test_add_with_other_model_fails(built_index: Path, corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["add", str(corpus_file), "--index", str(built_index), "--model", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "was built with model" in error
    assert str(tmp_path) in error


def test_index_custom_columns(tmp_path: Path, preflmr_tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "custom.csv"
    corpus.write_text("key,body\nk1,First passage.\nk2,Second passage.\n", encoding="utf-8")
    directory = tmp_path / "kb"
    arguments = ["index", str(corpus), "--index", str(directory), "--model", str(preflmr_tiny_path), "--id-column", "key", "--text-column", "body", "--json"]
    assert main(arguments) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 2
    assert main(["search", str(directory), "--question", "passage", "--json"]) == 0
    ids = sorted(result["id"] for result in json.loads(capsys.readouterr().out)["results"])
    assert ids == ["k1", "k2"]


def test_delete_without_ids(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["delete", str(built_index)]) == 2
    assert "no ids given" in capsys.readouterr().err


def test_batch_size_must_be_positive(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(built_index), "--question", "x", "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_search_file_not_index_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "ok.jsonl"
    corpus.write_text('{"id": "a", "text": "x"}\n', encoding="utf-8")
    assert main(["search", str(corpus), "--question", "hi"]) == 2
    error = capsys.readouterr().err
    assert "is a file, not an flmr-rag index directory" in error
    assert f"--index {corpus}" not in error


def test_search_nonempty_folder_not_index_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    assert main(["search", str(tmp_path), "--question", "hi"]) == 2
    error = capsys.readouterr().err
    assert "has no flmr_rag.json" in error
    assert "flmr-rag index CORPUS" not in error


def test_info_missing_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nodir")]) == 2
    assert "nodir does not exist" in capsys.readouterr().err


def test_search_empty_question_exits_2(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(built_index), "--question", ""]) == 2
    assert "--question is empty; give --question, --image or both" in capsys.readouterr().err


def test_index_unknown_extension_names_format_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "notes.txt"
    corpus.write_text("hello\n", encoding="utf-8")
    assert main(["index", str(corpus), "--index", str(tmp_path / "kb")]) == 2
    error = capsys.readouterr().err
    assert "--format" in error
    assert "format=" not in error


def test_search_unreadable_image_exits_2(built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "bad.png"
    image.write_bytes(b"not an image at all")
    assert main(["search", str(built_index), "--image", str(image)]) == 2
    assert "is not a readable image file" in capsys.readouterr().err


def test_search_image_directory_exits_2(built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(built_index), "--image", str(tmp_path)]) == 2
    assert "is a directory, not an image file" in capsys.readouterr().err


def test_invalid_device_exits_2(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(built_index), "--question", "x", "--device", "tpu9"])
    assert exit_info.value.code == 2
    assert "invalid --device 'tpu9'; use cpu, cuda or cuda:N" in capsys.readouterr().err


def test_cuda_device_without_cuda_exits_2(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(built_index), "--question", "x", "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "CUDA is not available on this machine; use --device cpu" in capsys.readouterr().err


def test_search_instruction_without_colon_warns(built_index: Path, caplog: pytest.LogCaptureFixture) -> None:
    import flmr_rag.encoding

    flmr_rag.encoding._appended_separator_warned.discard("Retrieve documents")
    assert main(["search", str(built_index), "--question", "hi", "--instruction", "Retrieve documents", "-k", "1"]) == 0
    assert "'Retrieve documents:'" in caplog.text


@pytest.mark.parametrize("command", ["search", "index", "ask"])
def test_instruction_help_mentions_appended_colon(command: str) -> None:
    from flmr_rag.cli import build_parser

    subparser = build_parser()._subparsers._group_actions[0].choices[command]
    assert "appended" in subparser._option_string_actions["--instruction"].help


def test_index_summary_counts_skipped_rows(tmp_path: Path, corpus_file: Path, preflmr_tiny_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["index", str(corpus_file), "--index", str(tmp_path / "kb"), "--model", str(preflmr_tiny_path)]
    assert main([*arguments, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 1

    assert main(["index", str(corpus_file), "--index", str(tmp_path / "kb2"), "--model", str(preflmr_tiny_path)]) == 0
    assert "skipped 1 row " in capsys.readouterr().out


def test_add_summary_singular_document(built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "kb"
    shutil.copytree(built_index, directory)
    extra = tmp_path / "one.csv"
    extra.write_text("id,text\nrome,Rome is the capital of Italy.\n", encoding="utf-8")
    assert main(["add", str(extra), "--index", str(directory), "--chunk-size", "1"]) == 0
    assert "added 1 document to" in capsys.readouterr().out


def test_options_consistent_across_commands() -> None:
    from flmr_rag.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert "--chunk-size" in commands["add"]._option_string_actions
    for name in ("index", "search", "ask", "eval"):
        assert commands[name]._option_string_actions["--dtype"].choices == ("auto", "float32", "float16", "bfloat16")
    for name in ("search", "ask"):
        assert commands[name]._option_string_actions["--image"].metavar == "IMAGE"
