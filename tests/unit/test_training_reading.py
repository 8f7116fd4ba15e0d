"""Reading accuracy (``zhrag eval-reading``) with a scripted base model: prompts, cleaning, scores, resume."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.llms import LLM
from pydantic import Field

from zhrag.cli import main
from zhrag.errors import ConfigError, TrainingDataError
from zhrag.evaluation.datasets import seeded_sample
from zhrag.evaluation.reading import evaluate_reading, passage_text, reading_items, score_answer
from zhrag.kb.passage import Passage
from zhrag.models import LocalLLM, register_llm, unregister_llm
from zhrag.prompts import build_answer_prompt
from zhrag.training.examples import Example, conversation
from zhrag.training.formats import export_examples


class ScriptedLLM(LLM):
    """Base (completion) model whose completion is ``reply(prompt)``; keeps every prompt it saw."""

    reply: Callable[[str], str]
    prompts: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-base"

    def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **_: Any) -> str:
        self.prompts.append(prompt)
        return self.reply(prompt)


# (question, passage, accepted answers, what the scripted model writes)
CASES = [
    ("蓝晶酮是谁合成的？", "化学家林慕远于1958年首次合成蓝晶酮。", ["林慕远"], "林慕远\n问题：下一题"),
    ("远山谣哪年首演？", "《远山谣》1987年在上海首演。", ["1987年", "1987"], "答案：1987年。在上海首演"),
    ("青溪镇以什么闻名？", "青溪镇以出产竹编工艺品闻名。", ["竹编工艺品"], "竹编"),
    ("白鹭湖面积多大？", "白鹭湖湖面面积约十二平方公里。", ["十二平方公里"], "不知道"),
]


def _example(index: int, chat: bool = False) -> Example:
    question, text, answers, _ = CASES[index]
    passage = Passage(id=f"doc{index}#0", title="", text=text, score=0.0)
    prompt = build_answer_prompt(question, [passage], chat=chat)
    return Example(
        id=f"q{index}/answer",
        task="answer",
        conversations=conversation(prompt, answers[0]),
        meta={"source": "rc:test", "answers": answers, "gold_position": 1, "split": "eval"},
    )


def _scripted(prompt: str) -> str:
    return next(reply for question, _, _, reply in CASES if f"问题：{question}\n答案：" in prompt)


@pytest.fixture
def eval_file(tmp_path: Path) -> Path:
    judge = Example(
        id="j", task="judge", conversations=[{"from": "human", "value": "x"}, {"from": "gpt", "value": "是"}], meta={}
    )
    return export_examples([_example(i) for i in range(len(CASES))] + [judge], tmp_path / "rc_eval.jsonl")


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[str], str]], tuple[str, ScriptedLLM]]]:
    names: list[str] = []

    def register(reply: Callable[[str], str]) -> tuple[str, ScriptedLLM]:
        model = ScriptedLLM(reply=reply)
        names.append(f"scripted-{uuid.uuid4().hex[:8]}")
        register_llm(names[-1], LocalLLM.from_langchain(model, is_chat=False))
        return names[-1], model

    yield register
    for name in names:
        unregister_llm(name)


def test_score_answer_exact_contains_and_abstained() -> None:
    assert score_answer("林慕远", ["林慕远"]) == {"exact": True, "contains": True, "abstained": False}
    assert score_answer("化学家林慕远", ["林慕远"]) == {"exact": False, "contains": True, "abstained": False}
    assert score_answer("一九八七年", ["1987年"])["exact"]  # Chinese numerals normalised
    assert not score_answer("19870", ["1987"])["contains"]  # numbers match as whole numbers
    assert score_answer("不知道", ["林慕远"]) == {"exact": False, "contains": False, "abstained": True}


def test_reading_items_take_the_node_prompt_question_and_answers() -> None:
    [item] = reading_items([_example(1)], chat=False)
    assert item.prompt == _example(1)["conversations"][0]["value"]
    assert item.question == "远山谣哪年首演？"
    assert item.answers == ("1987年", "1987")
    [chat_item] = reading_items([_example(1, chat=True)], chat=True)
    assert [message.type for message in chat_item.prompt] == ["system", "human"]
    with pytest.raises(TrainingDataError, match="completion"):
        reading_items([_example(1, chat=True)], chat=False)
    with pytest.raises(TrainingDataError, match="chat"):
        reading_items([_example(1)], chat=True)


def test_evaluate_reading_scores_cleaned_answers_and_resumes(tmp_path: Path, eval_file: Path, scripted) -> None:
    name, model = scripted(_scripted)
    out = tmp_path / "run"
    summary = evaluate_reading(
        LocalLLM.from_langchain(model, is_chat=False),
        eval_file,
        out,
        model={"model": name},
        limit=3,
        batch_size=2,
        progress=False,
    )
    assert model.prompts == [_example(i)["conversations"][0]["value"] for i in range(3)]  # exactly the node prompts
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["answer"] for r in records] == ["林慕远", "1987年", "竹编"]  # the node's clean_answer
    assert [(r["exact"], r["contains"]) for r in records] == [(True, True), (True, True), (False, False)]
    assert summary["overall"] == {**summary["overall"], "n": 3, "exact": 2, "contains": 2, "abstained": 0}

    # resume: nothing is regenerated; a larger limit only answers the new example
    model.prompts.clear()
    summary = evaluate_reading(
        LocalLLM.from_langchain(model, is_chat=False), eval_file, out, model={"model": name}, progress=False
    )
    assert len(model.prompts) == 1 and "白鹭湖" in model.prompts[0]
    assert summary["overall"]["n"] == 4 and summary["overall"]["abstained"] == 1
    assert summary["overall"]["contains_pct"] == 50.0
    assert "| rc:test | 4 |" in (out / "report.md").read_text(encoding="utf-8")
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["overall"]["n"] == 4

    # a kill mid-write leaves a partial line: it is dropped and that example redone
    with (out / "results.jsonl").open("ab") as handle:
        handle.write(b'{"id": "q9')
    evaluate_reading(
        LocalLLM.from_langchain(model, is_chat=False), eval_file, out, model={"model": name}, progress=False
    )
    assert (out / "results.jsonl").read_bytes().endswith(b"\n")

    with pytest.raises(ConfigError, match="other settings"):
        evaluate_reading(LocalLLM.from_langchain(model, is_chat=False), eval_file, out, model={"model": "other"})


def test_cli_eval_reading(tmp_path: Path, eval_file: Path, scripted, capsys: pytest.CaptureFixture[str]) -> None:
    name, _ = scripted(_scripted)
    out = tmp_path / "cli"
    assert main(["eval-reading", "--data", str(eval_file.parent), "--out", str(out), "--model", name]) == 0
    assert "4 examples: exact 50.0 %, contains 50.0 %, abstained 25.0 %" in capsys.readouterr().out
    assert main(["eval-reading", "--data", str(tmp_path / "missing"), "--out", str(out), "--model", name]) == 2
    assert "evaluation data not found" in capsys.readouterr().err


def test_evaluate_reading_draws_a_seeded_sample_and_records_it(tmp_path: Path, eval_file: Path, scripted) -> None:
    name, model = scripted(_scripted)
    out = tmp_path / "sampled"
    llm = LocalLLM.from_langchain(model, is_chat=False)
    summary = evaluate_reading(llm, eval_file, out, model={"model": name}, sample=2, seed=3, progress=False)
    items = reading_items([_example(i) for i in range(len(CASES))], chat=False)
    expected = [item.id for item in seeded_sample(items, 2, 3, keep_order=False)]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [record["id"] for record in records] == expected  # the seeded draw, in the order drawn
    assert all(record["raw"] == _scripted(prompt) for record, prompt in zip(records, model.prompts, strict=True))  # raw kept
    assert summary["settings"]["sample"] == {"size": 2, "seed": 3, "of": 4}
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["settings"]["sample"]["seed"] == 3
    with pytest.raises(ConfigError, match="other settings"):  # another draw is another run
        evaluate_reading(llm, eval_file, out, model={"model": name}, sample=2, seed=4, progress=False)
    with pytest.raises(ConfigError, match="sample"):
        evaluate_reading(llm, eval_file, tmp_path / "bad", model={"model": name}, sample=0, progress=False)


def test_seeded_sample_depends_only_on_seed_and_size() -> None:
    items = list(range(100))
    assert seeded_sample(items, 10, 0) == seeded_sample(items, 10, 0) == sorted(seeded_sample(items, 10, 0))
    assert seeded_sample(items, 10, 0) != seeded_sample(items, 10, 1)
    assert seeded_sample(items, 200, 0) == items
    assert sorted(seeded_sample(items, 10, 0, keep_order=False)) == seeded_sample(items, 10, 0)  # the same draw


def test_passage_text_is_what_the_prompt_shows_before_its_question() -> None:
    passage = Passage(id="d#0", title="", text="该镇人口14355人。", score=0.0)
    for chat in (False, True):
        shown = passage_text(build_answer_prompt("该镇人口多少？", [passage], chat=chat))
        assert "14355人" in shown and "该镇人口多少" not in shown and "林慕远" not in shown  # no few-shot passages
