"""Judge calibration (``zhrag eval-judge``) with a model that gives probabilities: threshold, held-out metrics, resume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import ScoringLLM

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.evaluation.judge_eval import best_threshold, classification, evaluate_judge, roc_auc
from zhrag.kb.passage import Passage
from zhrag.prompts import build_judge_prompt
from zhrag.training.examples import Example, conversation
from zhrag.training.formats import export_examples

# Each passage text says how relevant the fake judge finds it: "分数0.97" → P(是) = 0.97.
TRAIN = [(True, 0.97), (True, 0.9), (True, 0.6), (False, 0.92), (False, 0.3), (False, 0.1)]
HELD_OUT = [(True, 0.99), (True, 0.8), (False, 0.95), (False, 0.2)]


def _examples(rows: list[tuple[bool, float]], split: str) -> list[Example]:
    examples = []
    for index, (relevant, score) in enumerate(rows):
        passage = Passage(id=f"{split}{index}#0", title="", text=f"资料分数{score}。", score=0.0)
        prompt = build_judge_prompt("甲城在哪个省？", passage, chat=True)
        examples.append(Example(
            id=f"{split}{index}/judge", task="judge", conversations=conversation(prompt, "是" if relevant else "否"),
            meta={"relevant": relevant, "split": split},
        ))
    return examples


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    export_examples(_examples(TRAIN, "train"), folder / "x_train.jsonl")
    export_examples(_examples(HELD_OUT, "eval"), folder / "x_eval.jsonl")
    return folder


@pytest.fixture
def judge() -> Iterator[ScoringLLM]:
    yield ScoringLLM(lambda text: float(text.split("资料分数")[1].split("。")[0]))


def test_metrics_of_a_threshold() -> None:
    records = [{"relevant": r, "score": s} for r, s in TRAIN]
    assert classification(records, 0.9) == {
        "n": 6, "tp": 2, "fp": 1, "fn": 1, "tn": 2, "precision": 66.7, "recall": 66.7, "f1": 66.7, "accuracy": 66.7,
    }
    assert roc_auc(records) == pytest.approx(7 / 9, abs=1e-4)  # 7 of the 9 relevant/irrelevant pairs ordered right
    assert best_threshold(records) == 0.6  # F1 0.75 at 0.6; the lowest of the best


def test_calibrates_on_training_and_reports_held_out(data: Path, judge: ScoringLLM, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = evaluate_judge(judge, data, out, model={"model": "scoring-fake"}, limit=10, progress=False)
    assert summary["threshold"] == 0.6
    assert summary["eval"]["at_threshold"] == {
        "n": 4, "tp": 2, "fp": 1, "fn": 0, "tn": 1, "precision": 66.7, "recall": 100.0, "f1": 80.0, "accuracy": 75.0,
    }
    assert summary["eval"]["auc"] == 0.75
    for name in ("results.jsonl", "summary.json", "report.md", "judge.png"):
        assert (out / name).is_file(), name
    assert "**0.6000**" in (out / "report.md").read_text(encoding="utf-8")
    assert len((out / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 10
    again = evaluate_judge(judge, data, out, model={"model": "scoring-fake"}, limit=10, progress=False)
    assert again == summary and len((out / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 10  # resumed
    with pytest.raises(ConfigError, match="holds a judge run with other settings"):
        evaluate_judge(judge, data, out, model={"model": "other"}, limit=10, progress=False)


def test_a_folder_without_both_splits_is_refused(data: Path, judge: ScoringLLM, tmp_path: Path) -> None:
    (data / "x_eval.jsonl").unlink()
    with pytest.raises(TrainingDataError, match="expected one \\*_eval.jsonl file, found 0"):
        evaluate_judge(judge, data, tmp_path / "run", model={"model": "m"}, progress=False)


def test_summary_is_json(data: Path, judge: ScoringLLM, tmp_path: Path) -> None:
    evaluate_judge(judge, data, tmp_path / "run", model={"model": "m"}, limit=10, progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary) == {"settings", "threshold", "train", "eval"}
