"""Calibrated abstention tuned on one run and applied to another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhrag.errors import DatasetError
from zhrag.evaluation.abstention import read_thresholds, tune_thresholds, with_abstention, write_thresholds
from zhrag.evaluation.report import write_report


def rec(qid: str, grade: str, confidence: float | None, variant: str = "a0", answer: str = "甲") -> dict:
    return {"id": qid, "variant": variant, "grade": grade, "answer": answer, "answer_confidence": confidence}


TUNING = [
    rec("q1", "CORRECT", 0.9), rec("q2", "CORRECT", 0.8), rec("q3", "INCORRECT", 0.3),
    rec("q4", "INCORRECT", 0.2), rec("q5", "INCORRECT", 0.6), rec("q6", "NOT_ATTEMPTED", 0.1, answer="不知道"),
]


def test_the_tuned_threshold_drops_the_unsure_wrong_answers() -> None:
    tuned = tune_thresholds(TUNING)["a0"]
    # CO 33.3, IN 50 → F 36.4 without; abstaining below 0.8 keeps the two correct answers only: CO 33.3, CGA 100.
    assert tuned["threshold"] == 0.8
    assert tuned["before"]["F"] == pytest.approx(36.36, abs=0.01)
    assert tuned["after"]["F"] == pytest.approx(50.0)
    regraded = with_abstention(TUNING, 0.8)
    assert [r["grade"] for r in regraded] == ["CORRECT", "CORRECT"] + ["NOT_ATTEMPTED"] * 4
    assert [r.get("abstained", False) for r in regraded] == [False, False, True, True, True, False]


def test_a_run_without_confidences_cannot_be_tuned() -> None:
    with pytest.raises(DatasetError, match="no a1 record has an answer confidence"):
        tune_thresholds([rec("q1", "CORRECT", None, variant="a1")])


def test_thresholds_round_trip_and_show_in_the_report(tmp_path: Path) -> None:
    path = write_thresholds(tune_thresholds(TUNING), tmp_path / "abstention.json", source="runs/tune")
    assert read_thresholds(path) == {"a0": 0.8}
    markdown = write_report(
        [rec("e1", "CORRECT", 0.95), rec("e2", "INCORRECT", 0.5), rec("e3", "INCORRECT", 0.85)], tmp_path / "r",
        abstention=read_thresholds(path), abstention_source="runs/tune/abstention.json",
    ).read_text(encoding="utf-8")
    section = markdown.split("## With calibrated abstention\n", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| a0 |")).strip("|").split("|")
    assert [cell.strip() for cell in row[:3]] == ["a0", "0.800", "1"]
    assert row[-1].strip() == "33.3"  # F without abstention: CO 33.3, CGA 33.3
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert summary["abstention"]["variants"]["a0"]["metrics"]["NA"] == pytest.approx(100 / 3)


def test_a_damaged_thresholds_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DatasetError, match="is not an abstention file"):
        read_thresholds(tmp_path / "a.json")
