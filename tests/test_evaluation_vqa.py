"""VQA soft score, answer normalisation and exact match, checked on worked examples."""

from __future__ import annotations

import pytest

from flmr_rag.evaluation import exact_match, exact_match_at_k, normalize_answer, vqa_score
from flmr_rag.evaluation.vqa import process_digit_article, process_punctuation


def references(matching: str, count: int, other: str = "blue", total: int = 10) -> list[str]:
    return [matching] * count + [other] * (total - count)


# m annotators agree with the prediction. Leaving one annotator out, each of the m matching
# annotators counts m - 1 matches and each of the 10 - m others counts m. The score is the mean
# of min(matches / 3, 1).
# m=1: (1*0 + 9*1/3) / 10 = 0.3; m=2: (2*1/3 + 8*2/3) / 10 = 0.6; m=3: (3*2/3 + 7*1) / 10 = 0.9;
# m=4: (4*1 + 6*1) / 10 = 1.0.
@pytest.mark.parametrize(("matching", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0)])
def test_vqa_score_soft_steps(matching: int, expected: float) -> None:
    answers = references("red", matching, other="blue") if matching else references("green", 5, other="blue")
    assert vqa_score("red", answers) == pytest.approx(expected)


def test_vqa_score_with_five_references() -> None:
    # Each "red" counts 1 other "red" (1/3) and each of the 3 "blue" counts 2 (2/3): (2/3 + 6/3) / 5.
    answers = ["red", "red", "blue", "blue", "blue"]
    assert vqa_score("red", answers) == pytest.approx(8 / 15)


def test_vqa_score_single_reference_never_scores() -> None:
    # With one reference the leave-one-out set is empty, so even an exact match scores 0.
    assert vqa_score("red", ["red"]) == 0.0


def test_vqa_score_all_agree_skips_normalisation() -> None:
    answers = ["Red"] * 10
    assert vqa_score("red", answers) == 0.0


def test_vqa_score_all_agree_exact_string_scores_one() -> None:
    assert vqa_score("Red", ["Red"] * 10) == 1.0


def test_vqa_score_all_agree_keeps_whitespace_cleanup() -> None:
    assert vqa_score("\tRed \n", ["Red"] * 10) == 1.0


def test_vqa_score_all_agree_keeps_articles() -> None:
    assert vqa_score("a dog", ["dog"] * 10) == 0.0


def test_vqa_score_all_agree_keeps_number_words() -> None:
    assert vqa_score("2", ["two"] * 10) == 0.0


def test_vqa_score_all_agree_after_whitespace_cleanup() -> None:
    # " Red" and "Red" are one string after stripping, so the references all agree.
    assert vqa_score("red", [" Red", "Red", "Red\t"]) == 0.0


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("Red", "red"),  # lower-casing
        ("  red\n", "red"),  # whitespace clean-up
        ("two", "2"),  # number words to digits
        ("none", "0"),  # "none" counts as a number word
        ("a dog", "dog"),  # articles dropped
        ("the dog", "dog"),
        ("dont", "don't"),  # contractions restored
        ("hot-dog", "hot dog"),  # punctuation not next to a space becomes a space
        ("yes !", "yes"),  # punctuation next to a space is deleted
        ("1,000", "1000"),  # a digit-comma-digit pattern deletes punctuation
        ("st. louis", "st louis"),  # a period not followed by a digit is deleted
        ("3.5", "3.5"),  # a period before a digit is kept
    ],
)
def test_vqa_score_normalises_when_references_differ(prediction: str, reference: str) -> None:
    answers = [reference] * 4 + ["something else"] * 6
    assert vqa_score(prediction, answers) == 1.0


def test_vqa_score_decimal_period_is_not_dropped() -> None:
    answers = ["35"] * 4 + ["other"] * 6
    assert vqa_score("3.5", answers) == 0.0


def test_process_punctuation_deletes_mark_next_to_space() -> None:
    assert process_punctuation("hot - dog") == "hot  dog"


def test_process_punctuation_spaces_mark_without_space() -> None:
    assert process_punctuation("hot-dog") == "hot dog"


def test_process_punctuation_rule_applies_per_mark() -> None:
    # "?" touches a space, so every "?" is deleted; "-" never does, so it becomes a space.
    assert process_punctuation("a-b ?c?") == "a b c"


def test_process_punctuation_digit_comma_deletes_every_mark() -> None:
    assert process_punctuation("1,000-ish") == "1000ish"


def test_process_punctuation_keeps_apostrophes_and_colons() -> None:
    assert process_punctuation("it's 10:30") == "it's 10:30"


def test_process_punctuation_period_rule() -> None:
    assert process_punctuation("3.5 and 4.") == "3.5 and 4"


def test_process_punctuation_removes_at_most_32_periods() -> None:
    assert process_punctuation("." * 40) == "." * 8


def test_process_digit_article_full_example() -> None:
    assert process_digit_article("The  TWO dogs Dont  bark") == "2 dogs don't bark"


def test_process_digit_article_keeps_tool_quirk_entry() -> None:
    assert process_digit_article("somebody'd") == "somebodyd"


def test_process_digit_article_capitalised_keys_never_match() -> None:
    # The table has "Im" -> "I'm", but words are lower-cased first, so "im" stays.
    assert process_digit_article("Im") == "im"


def test_normalize_answer_combines_every_step() -> None:
    assert normalize_answer("  The Two hot-dogs!\n") == "2 hot dogs"


def test_vqa_score_rejects_single_string() -> None:
    with pytest.raises(TypeError, match="wrap it as"):
        vqa_score("red", "red")


def test_vqa_score_rejects_empty_answers() -> None:
    with pytest.raises(ValueError, match="answers is empty"):
        vqa_score("red", [])


def test_exact_match_one_annotator_is_enough() -> None:
    assert exact_match("red", ["red"] + ["blue"] * 9) == 1.0


def test_exact_match_normalises_even_when_references_agree() -> None:
    assert exact_match("The Red", ["red"] * 10) == 1.0


def test_exact_match_miss() -> None:
    assert exact_match("green", ["red", "blue"]) == 0.0


def test_exact_match_at_k_counts_distinct_answers() -> None:
    ranked = ["blue", "Blue", "the blue", "red"]
    assert exact_match_at_k(ranked, ["red"], k=2) == 1.0


def test_exact_match_at_k_miss_beyond_k() -> None:
    assert exact_match_at_k(["blue", "green", "red"], ["red"], k=2) == 0.0


def test_exact_match_at_k_rejects_zero_k() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        exact_match_at_k(["red"], ["red"], k=0)
