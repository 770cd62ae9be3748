"""VQA answer normalisation, the VQA soft score and exact match.

The rules replicate the official VQA evaluation tool (``vqaEval.py`` of the VQA challenge, as
used by RA-VQA), quirks included:

* newlines and tabs become spaces and outer whitespace is stripped, for every answer;
* when the reference answers are not all the same string, the prediction and every reference go
  through punctuation clean-up and then digit / article / contraction clean-up; when they all
  agree, nothing else is normalised, so case and articles then matter;
* the period rule only checks the following character ("3.5" keeps its period, "3." loses it),
  and at most 32 periods are removed per string because the tool passes ``re.UNICODE`` (32)
  where ``re.sub`` expects its ``count`` argument;
* "none" maps to "0" like the number words, and the contraction table keeps the tool's odd
  entries ("somebody'd" -> "somebodyd", capitalised keys that never match lower-cased words).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Characters the punctuation step deletes or turns into spaces. Apostrophes, colons and periods
# are not in the list; periods have their own rule.
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Apostrophe-less spellings and the form the official tool restores, entry for entry.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip

# The tool's pattern "(?!<=\d)(\.)(?!\d)" opens with a lookahead, not a lookbehind, so only the
# character after the period matters.
_PERIOD = re.compile(r"\.(?!\d)")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_MAX_PERIODS_REMOVED = 32


def clean_whitespace(text: str) -> str:
    """Turn newlines and tabs into spaces and strip outer whitespace."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """Delete or space out punctuation the way the official VQA tool does.

    A character of ``PUNCTUATION`` is deleted when the input has it next to a space anywhere, or
    when the input contains a digit-comma-digit pattern; otherwise every occurrence becomes a
    space. Then periods not followed by a digit are deleted (at most 32 of them).
    """
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    output = text
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or has_digit_comma:
            output = output.replace(mark, "")
        else:
            output = output.replace(mark, " ")

    return _PERIOD.sub("", output, count=_MAX_PERIODS_REMOVED)


def process_digit_article(text: str) -> str:
    """Lower-case, map number words to digits, drop articles, restore contractions, re-join."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    words = [CONTRACTIONS.get(word, word) for word in words]
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """Apply every VQA normalisation step: whitespace, punctuation, digits, articles, contractions."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def _check_answers(answers: Sequence[str]) -> None:
    if isinstance(answers, str):
        raise TypeError(f"answers must be a list of reference strings, got the string {answers!r}; wrap it as [{answers!r}]")
    if len(answers) == 0:
        raise ValueError("answers is empty; give at least one reference answer (VQA datasets have 10)")


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """Return the VQA soft accuracy of ``prediction`` against the reference ``answers``, in [0, 1].

    For each reference i, count the other references equal to the prediction, divide by 3 and cap
    at 1; the score is the mean over i. With 10 references and m of them equal to the prediction
    that gives 0, 0.3, 0.6, 0.9 and 1.0 for m = 0, 1, 2, 3 and 4 or more.
    Normalisation follows the official tool (see the module docstring), including its rule that
    nothing but whitespace is normalised when every reference is the same string.

    Raises:
        TypeError: ``answers`` is a single string.
        ValueError: ``answers`` is empty.
    """
    _check_answers(answers)
    references = [clean_whitespace(answer) for answer in answers]
    predicted = clean_whitespace(prediction)

    if len(set(references)) > 1:
        references = [process_digit_article(process_punctuation(answer)) for answer in references]
        predicted = process_digit_article(process_punctuation(predicted))

    matches = sum(reference == predicted for reference in references)
    accuracies = []
    for reference in references:
        others_matching = matches - (reference == predicted)
        accuracies.append(min(1.0, others_matching / 3))
    return sum(accuracies) / len(accuracies)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """Return 1.0 when the normalised prediction equals any normalised reference, else 0.0.

    Both sides are always normalised (``normalize_answer``), even when all references agree,
    which is how RA-VQA computes EM. One matching annotator is enough, so EM is more lenient
    than ``vqa_score``.

    Raises:
        TypeError: ``answers`` is a single string.
        ValueError: ``answers`` is empty.
    """
    _check_answers(answers)
    predicted = normalize_answer(prediction)
    return float(any(normalize_answer(answer) == predicted for answer in answers))


def exact_match_at_k(ranked_predictions: Sequence[str], answers: Sequence[str], k: int) -> float:
    """Return 1.0 when any of the first ``k`` distinct normalised predictions matches a reference.

    ``ranked_predictions`` are the per-passage answers sorted best first (by joint score, highest
    first). Duplicate strings count once, so k counts distinct answers.

    Raises:
        ValueError: ``k`` is below 1 or ``answers`` is empty.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    _check_answers(answers)
    references = {normalize_answer(answer) for answer in answers}

    distinct: list[str] = []
    for prediction in ranked_predictions:
        normalized = normalize_answer(prediction)
        if normalized not in distinct:
            distinct.append(normalized)
    return float(any(prediction in references for prediction in distinct[:k]))
