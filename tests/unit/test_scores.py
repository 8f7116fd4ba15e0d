"""Scores read from model probabilities: answer confidence, the judge's yes score, abstention."""

from __future__ import annotations

import math

import pytest

from zhrag.models import ScoredText
from zhrag.nodes.answer import abstains
from zhrag.prompts import UNKNOWN_ANSWER, verdict_score, yes_score


def test_confidence_is_the_geometric_mean_over_the_answer_tokens_only() -> None:
    scored = ScoredText(text="北京市", tokens=("北京", "市", "<|im_end|>"), logprobs=(math.log(0.9), math.log(0.4), -9.0))
    assert scored.confidence() == pytest.approx(math.sqrt(0.9 * 0.4))
    assert ScoredText(text="", tokens=(), logprobs=()).confidence() is None


def test_confidence_of_an_empty_answer_counts_its_first_token() -> None:
    assert ScoredText(text="", tokens=("\n",), logprobs=(math.log(0.5),)).confidence() == pytest.approx(0.5)


def test_yes_score_normalises_the_two_verdict_probabilities() -> None:
    assert yes_score({"是": 0.6, "否": 0.2}) == pytest.approx(0.75)
    assert yes_score({"是": 0.0, "否": 0.3}) == 0.0
    assert yes_score({"是": 0.0, "否": 0.0}) == 0.5


def test_verdict_text_scores() -> None:
    assert verdict_score("是的，资料写了") == 1.0
    assert verdict_score("不相关") == 0.0
    assert verdict_score("嗯……") == 0.0


@pytest.mark.parametrize(
    ("answer", "confidence", "threshold", "expected"),
    [
        ("北京", 0.3, 0.5, True),
        ("北京", 0.5, 0.5, False),
        ("北京", 0.3, None, False),
        ("北京", None, 0.5, False),
        (UNKNOWN_ANSWER, 0.1, 0.5, False),
    ],
)
def test_abstention(answer: str, confidence: float | None, threshold: float | None, expected: bool) -> None:
    assert abstains(answer, confidence, threshold) is expected
