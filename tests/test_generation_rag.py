"""answer_question, FLMRRetriever.ask and ``flmr-rag ask`` over a real index of the tiny PreFLMR fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flmr_rag.cli import main
from flmr_rag.generation import AnswerGenerator, answer_question

PASSAGES = {
    "circle": "A circle is a round shape; this one is red.",
    "square": "A square has four equal sides and is often blue.",
    "triangle": "A triangle has three sides and is green.",
    "star": "A star shape with five points, painted purple.",
}
QUESTION = "What colour is the circle?"


@pytest.fixture(scope="module")
def index_dir(build_text_index) -> Path:
    return build_text_index("rag", PASSAGES)


@pytest.fixture(scope="module")
def generator_folder(build_tiny_t5) -> Path:
    return build_tiny_t5("t5", seed=4)


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
