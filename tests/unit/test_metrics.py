"""Chinese-SimpleQA metrics: CO / NA / IN / CGA / F and grouping by category."""

from __future__ import annotations

import pytest

from zhrag.evaluation.metrics import Grade, compute_metrics, metrics_by


def grades(correct: int, not_attempted: int, incorrect: int) -> list[str]:
    return ["CORRECT"] * correct + ["NOT_ATTEMPTED"] * not_attempted + ["INCORRECT"] * incorrect


def test_paper_o1_preview_row() -> None:
    # Chinese-SimpleQA paper, o1-preview: CO 63.8, NA 12.2, IN 24.0, CGA 72.7, F 67.9.
    metrics = compute_metrics(grades(638, 122, 240))
    assert metrics["n"] == 1000
    assert metrics["CO"] == pytest.approx(63.8)
    assert metrics["NA"] == pytest.approx(12.2)
    assert metrics["IN"] == pytest.approx(24.0)
    assert round(metrics["CGA"], 1) == 72.7
    assert round(metrics["F"], 1) == 67.9


def test_small_counts_follow_the_formulas() -> None:
    metrics = compute_metrics([Grade.CORRECT, Grade.INCORRECT, Grade.INCORRECT, Grade.NOT_ATTEMPTED])
    assert (metrics["CO"], metrics["NA"], metrics["IN"]) == (25.0, 25.0, 50.0)
    assert metrics["CGA"] == pytest.approx(100 / 3)
    assert metrics["F"] == pytest.approx(2 * (100 / 3) * 25 / (100 / 3 + 25))


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((0, 0, 0), {"n": 0, "CO": 0.0, "NA": 0.0, "IN": 0.0, "CGA": 0.0, "F": 0.0}),
        ((0, 5, 0), {"n": 5, "CO": 0.0, "NA": 100.0, "IN": 0.0, "CGA": 0.0, "F": 0.0}),
        ((0, 1, 3), {"n": 4, "CO": 0.0, "NA": 25.0, "IN": 75.0, "CGA": 0.0, "F": 0.0}),
        ((2, 0, 0), {"n": 2, "CO": 100.0, "NA": 0.0, "IN": 0.0, "CGA": 100.0, "F": 100.0}),
    ],
)
def test_zero_denominators_give_zero(counts: tuple[int, int, int], expected: dict[str, float]) -> None:
    assert compute_metrics(grades(*counts)) == expected


def test_unknown_grade_is_rejected() -> None:
    with pytest.raises(ValueError):
        compute_metrics(["CORRECT", "MAYBE"])


def test_metrics_by_groups_and_sorts() -> None:
    records = [
        {"primary_category": "社会", "grade": "CORRECT"},
        {"primary_category": "中华文化", "grade": "INCORRECT"},
        {"primary_category": "社会", "grade": "NOT_ATTEMPTED"},
        {"grade": "CORRECT"},
    ]
    by_category = metrics_by(records, "primary_category")
    assert list(by_category) == sorted(["社会", "中华文化", ""])
    assert by_category["社会"]["n"] == 2 and by_category["社会"]["CO"] == 50.0 and by_category["社会"]["NA"] == 50.0
    assert by_category["中华文化"]["IN"] == 100.0
    assert by_category[""]["CO"] == 100.0
