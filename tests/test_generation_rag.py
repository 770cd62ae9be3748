"""answer_question, FLMRRetriever.ask and ``flmr-rag ask`` over a real index of the tiny PreFLMR fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizer, T5Config, T5ForConditionalGeneration

from flmr_rag.cli import main
from flmr_rag.generation import AnswerGenerator, answer_question
from flmr_rag.types import Document

PASSAGES = {
    "circle": "A circle is a round shape; this one is red.",
    "square": "A square has four equal sides and is often blue.",
    "triangle": "A triangle has three sides and is green.",
    "star": "A star shape with five points, painted purple.",
}
QUESTION = "What colour is the circle?"


@pytest.fixture(scope="module")
def index_dir(preflmr_tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flmr_rag.retriever import FLMRRetriever

    directory = tmp_path_factory.mktemp("rag") / "index"
    with FLMRRetriever.create(directory, model=str(preflmr_tiny_path), device="cpu") as retriever:
        retriever.add([Document(id=key, text=text) for key, text in PASSAGES.items()], show_progress=False)
    return directory


@pytest.fixture(scope="module")
def retriever(index_dir: Path):
    from flmr_rag.retriever import FLMRRetriever

    with FLMRRetriever.open(index_dir, device="cpu") as opened:
        yield opened


@pytest.fixture(scope="module")
def generator_folder(preflmr_tiny_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = BertTokenizer.from_pretrained(str(preflmr_tiny_path / "query_tokenizer"))
    torch.manual_seed(4)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        decoder_start_token_id=0, eos_token_id=tokenizer.sep_token_id, pad_token_id=0,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("reader") / "t5"
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def generator(generator_folder: Path) -> AnswerGenerator:
    return AnswerGenerator.from_pretrained(generator_folder, device="cpu", num_beams=2, max_new_tokens=4)


@pytest.fixture(scope="module")
def image_path(preflmr_tiny_path: Path) -> Path:
    return preflmr_tiny_path / "images" / "img0_red_circle.png"


def test_answer_question_uses_search_results(retriever, generator: AnswerGenerator, image_path: Path) -> None:
    results = retriever.search(question=QUESTION, image=image_path, k=3)
    answer = answer_question(retriever, question=QUESTION, image=image_path, k=3, generator=generator)

    assert [candidate.passage_id for candidate in answer.candidates] == [result.id for result in results]
    assert [candidate.retrieval_score for candidate in answer.candidates] == pytest.approx([result.score for result in results])
    assert answer.passage_id == results[answer.passage_index].id


def test_answer_question_matches_direct_generation(retriever, generator: AnswerGenerator, image_path: Path) -> None:
    results = retriever.search(question=QUESTION, image=image_path, k=3)
    direct = generator.generate(QUESTION, [result.text for result in results], retrieval_scores=[result.score for result in results])

    answer = answer_question(retriever, question=QUESTION, image=image_path, k=3, generator=generator)

    assert answer.answer == direct.answer
    assert answer.passage_index == direct.passage_index


def test_retriever_ask_delegates(retriever, generator: AnswerGenerator, image_path: Path) -> None:
    expected = answer_question(retriever, question=QUESTION, image=image_path, k=2, generator=generator)

    answer = retriever.ask(QUESTION, image_path, k=2, generator=generator)

    assert answer.answer == expected.answer
    assert answer.passage_id == expected.passage_id


def test_answer_question_majority_selection(retriever, generator: AnswerGenerator) -> None:
    answer = answer_question(retriever, question=QUESTION, k=4, generator=generator, selection="majority")

    assert answer.selection == "majority"


def test_answer_question_without_generator_raises(retriever) -> None:
    with pytest.raises(ValueError, match="generator is missing"):
        answer_question(retriever, question=QUESTION, k=2)


def test_answer_question_empty_question_raises(retriever, generator: AnswerGenerator, image_path: Path) -> None:
    with pytest.raises(ValueError, match="question is empty"):
        answer_question(retriever, question="", image=image_path, generator=generator)


def test_ask_command_prints_json(index_dir: Path, generator_folder: Path, image_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([
        "ask", str(index_dir), "--question", QUESTION, "--image", str(image_path), "--generator", str(generator_folder),
        "-k", "3", "--num-beams", "2", "--max-new-tokens", "4", "--device", "cpu", "--json", "--quiet",
    ])  # fmt: skip

    printed = json.loads(capsys.readouterr().out)
    assert status == 0
    assert len(printed["candidates"]) == 3
    assert printed["passage_id"] in PASSAGES


def test_ask_command_prints_candidates(index_dir: Path, generator_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([
        "ask", str(index_dir), "--question", QUESTION, "--generator", str(generator_folder),
        "-k", "2", "--num-beams", "1", "--device", "cpu", "--quiet",
    ])  # fmt: skip

    printed = capsys.readouterr().out
    assert status == 0
    assert printed.startswith("answer: ")
    assert "log p(z|x)" in printed


def test_ask_command_missing_image_is_usage_error(index_dir: Path, generator_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([
        "ask", str(index_dir), "--question", QUESTION, "--image", str(tmp_path / "none.png"),
        "--generator", str(generator_folder), "--quiet",
    ])  # fmt: skip

    assert status == 2
    assert "none.png does not exist" in capsys.readouterr().err


def test_ask_command_missing_generator_folder_fails(index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["ask", str(index_dir), "--question", QUESTION, "--generator", str(tmp_path / "no-reader"), "--quiet"])

    assert status == 1
    assert "no-reader does not exist" in capsys.readouterr().err
