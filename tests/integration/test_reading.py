"""``zhrag eval-reading`` with the default model (Qwen2.5-Coder-1.5B on llama.cpp) on three examples: the same answers
as the graph's node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langgraph.runtime import Runtime

from zhrag.evaluation.reading import evaluate_reading, score_answer
from zhrag.graph.context import Context
from zhrag.kb.passage import Passage
from zhrag.models import load_llm
from zhrag.nodes.answer import answer
from zhrag.prompts import build_answer_prompt
from zhrag.training.examples import Example, conversation
from zhrag.training.formats import export_examples

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Invented passages and questions (no benchmark or KB text).
CASES = [
    ("《云港纪事》的作者是谁？", "《云港纪事》是作家顾明川所写的长篇小说，1994年出版。", "顾明川"),
    ("石岭水库建成于哪一年？", "石岭水库位于北川县西部，1972年建成，库容约三亿立方米。", "1972年"),
    ("蓝羽雀主要分布在哪个省？", "蓝羽雀是一种小型鸣禽，主要分布在云岭省的山地森林中。", "云岭省"),
]


def test_eval_reading_answers_as_the_answer_node_does(tmp_path: Path) -> None:
    passages = [[Passage(id=f"d{i}#0", title="", text=text, score=0.0)] for i, (_, text, _) in enumerate(CASES)]
    examples = [
        Example(
            id=f"q{i}/answer",
            task="answer",
            conversations=conversation(build_answer_prompt(question, passages[i], chat=True), gold),
            meta={"source": "rc:invented", "answers": [gold], "gold_position": 1},
        )
        for i, (question, _, gold) in enumerate(CASES)
    ]
    data = export_examples(examples, tmp_path / "invented_eval.jsonl")
    out = tmp_path / "reading"
    summary = evaluate_reading(load_llm(), data, out, model={"model": "qwen2.5-coder-1.5b"}, progress=False)

    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [record["id"] for record in records] == [example["id"] for example in examples]
    runtime = Runtime(context=Context())
    for record, (question, _, gold), shown in zip(records, CASES, passages, strict=True):
        node = answer({"question": question, "contexts": shown}, runtime)
        assert record["answer"] == node["answer"]  # batched evaluation == the graph's own answer node
        assert {name: record[name] for name in ("exact", "contains", "abstained")} == score_answer(
            node["answer"], [gold]
        )
    assert summary["overall"]["n"] == 3
    assert summary["overall"]["contains"] == sum(record["contains"] for record in records)
    assert (out / "report.md").is_file()
