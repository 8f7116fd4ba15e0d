"""Tool-use evaluation without a model: replay steps of a trace, scoring of turns, rates with Wilson intervals, the
a3 tool-use section of the eval report and the merging of runs for ``zhrag compare``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhrag.errors import DatasetError, TrainingDataError
from zhrag.evaluation.metrics import proportion, wilson_interval
from zhrag.evaluation.report import merged_results, tool_use, write_report
from zhrag.evaluation.tool_eval import score_step, summarize, tool_steps
from zhrag.models.tool_calls import ToolCall, ToolReply
from zhrag.prompts.agent import AGENT_SYSTEM

TOOLS = [{"type": "function", "function": {"name": "qdrant-find", "description": "search",
                                            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


def call_turn(query: str) -> dict[str, str]:
    return {"from": "function_call", "value": json.dumps({"name": "qdrant-find", "arguments": {"query": query}},
                                                         ensure_ascii=False)}


def trace(searches: int = 2) -> dict:
    turns = [{"from": "system", "value": AGENT_SYSTEM}, {"from": "human", "value": "《九命奇冤》是由哪位作者所著？"}]
    for number in range(searches):
        turns += [call_turn(f"检索{number}"), {"from": "tool", "value": f"[1] 结果{number}"}]
    turns.append({"from": "gpt", "value": "吴沃尧"})
    return {"id": "p1/tools", "task": "tools", "conversations": turns, "tools": json.dumps(TOOLS),
            "meta": {"answers": ["吴沃尧", "吴趼人"]}}


def test_a_trace_becomes_one_step_per_assistant_turn_with_the_reference_history_before_it() -> None:
    steps = tool_steps([trace(2), {"id": "x", "task": "answer", "conversations": [], "meta": {}}])
    assert [(s.id, s.kind, s.turn) for s in steps] == [
        ("p1/tools#1", "call", 1), ("p1/tools#2", "call", 2), ("p1/tools#3", "answer", 3)]
    assert [m["role"] for m in steps[0].messages] == ["system", "user"]
    assert [m["role"] for m in steps[2].messages] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    second_call = steps[2].messages[4]["tool_calls"][0]
    assert json.loads(second_call["function"]["arguments"]) == {"query": "检索1"}
    assert steps[2].messages[5] == {"role": "tool", "tool_call_id": second_call["id"], "content": "[1] 结果1"}
    assert steps[0].tools == TOOLS and steps[0].answers == ("吴沃尧", "吴趼人")


@pytest.mark.parametrize("broken", [
    {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    {"tools": "not json"},
    {"tools": "[]"},
])
def test_what_is_not_a_tool_trace_is_refused_by_name(broken: dict) -> None:
    with pytest.raises(TrainingDataError, match="p1/tools"):
        tool_steps([{**trace(1), **broken}])


def test_no_tool_examples_is_an_error() -> None:
    with pytest.raises(TrainingDataError, match="no tool-use examples"):
        tool_steps([])


def test_call_steps_count_only_template_calls_to_qdrant_find_with_a_query() -> None:
    call, answer = tool_steps([trace(1)])
    good = ToolReply("", (ToolCall("qdrant-find", {"query": "九命奇冤"}, True),))
    assert score_step(call, good)["well_formed"] is True
    bare = ToolReply('{"name": "qdrant-find"}', (ToolCall("qdrant-find", {"query": "九命奇冤"}, False),))
    assert score_step(call, bare) | {"calls": None} == {"called": True, "calls": None, "well_formed": False,
                                                          "recovered": True}
    for reply in (ToolReply("", (ToolCall("search", {"query": "x"}, True),)),
                  ToolReply("", (ToolCall("qdrant-find", {"query": " "}, True),)),
                  ToolReply("吴沃尧")):
        assert score_step(call, reply)["well_formed"] is False
    assert score_step(answer, ToolReply("答案：清吴沃尧。")) | {"calls": None} == {
        "called": False, "calls": None, "stopped": True, "answered": True, "answer": "清吴沃尧", "contains": True}
    assert score_step(answer, ToolReply(""))["answered"] is False  # an empty stop is no answer
    assert score_step(answer, good)["stopped"] is False and score_step(answer, good)["contains"] is False


def test_summary_rates_come_with_wilson_intervals_and_whole_traces_are_judged() -> None:
    records = [
        {"id": "a#1", "trace_id": "a", "kind": "call", "turn": 1, "well_formed": True, "recovered": False,
         "called": True, "ms": 10.0},
        {"id": "a#2", "trace_id": "a", "kind": "answer", "turn": 2, "stopped": True, "answered": True, "contains": True,
         "called": False, "ms": 20.0},
        {"id": "b#1", "trace_id": "b", "kind": "call", "turn": 1, "well_formed": False, "recovered": True,
         "called": True, "ms": 30.0},
        {"id": "b#2", "trace_id": "b", "kind": "answer", "turn": 2, "stopped": True, "answered": False,
         "contains": False, "called": False, "ms": 40.0},
    ]
    summary = summarize(records)
    assert summary["traces"] == 2 and summary["ms_mean"] == 25.0
    assert summary["call_steps"]["well_formed"] == {"count": 1, "n": 2, "pct": 50.0, "ci95": wilson_interval(1, 2)}
    assert summary["answer_steps"]["stopped"]["pct"] == 100.0 and summary["traces_right"]["count"] == 1


def test_wilson_interval_is_the_score_interval() -> None:
    assert wilson_interval(0, 0) is None
    assert wilson_interval(0, 10) == (0.0, 27.8)
    assert wilson_interval(10, 10) == (72.2, 100.0)
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(40.4, abs=0.1) and high == pytest.approx(59.6, abs=0.1)


def a3_record(question: str, calls: list[dict], reply: str | None, rounds: int, grade: str = "CORRECT") -> dict:
    return {"id": question, "variant": "a3", "grade": grade, "tool_calls": calls, "agent_reply": reply,
            "tool_rounds": rounds}


def test_the_report_summarises_the_agents_tool_use() -> None:
    good = {"round": 1, "name": "qdrant-find", "arguments": {"query": "x"}, "well_formed": True}
    records = [
        a3_record("q1", [good], "吴沃尧", 1),
        a3_record("q2", [good, {**good, "round": 2, "well_formed": False}], None, 2),
        a3_record("q3", [{**good, "name": "other", "error": "unknown tool 'other'"}], "x", 1),
        a3_record("q4", [], "不知道", 0),
    ]
    use = tool_use(records)
    assert use["n"] == 4 and use["calls"] == 4 and use["well_formed"] == proportion(2, 4)
    assert use["no_call"] == 1 and use["stopped_by_agent_pct"] == 75.0 and use["rounds"] == {"0": 1, "1": 2, "2": 1}
    assert tool_use([{"id": "q", "variant": "a1", "grade": "CORRECT"}]) is None


def test_report_and_compare_show_tool_use_and_keep_labelled_runs_apart(tmp_path: Path) -> None:
    good = {"round": 1, "name": "qdrant-find", "arguments": {"query": "x"}, "well_formed": True}
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    for folder, grades in ((base, ["CORRECT", "INCORRECT"]), (tuned, ["CORRECT", "CORRECT"])):
        folder.mkdir()
        lines = [json.dumps(a3_record(f"q{i}", [good], "答", 1, grade)) for i, grade in enumerate(grades)]
        (folder / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="label one run"):
        merged_results([(base, None), (tuned, None)])
    records = merged_results([(base, None), (tuned, "lora")])
    assert sorted({record["variant"] for record in records}) == ["a3", "lora:a3"]
    report = write_report(records, tmp_path / "out").read_text(encoding="utf-8")
    assert "## Tool use (agent variants)" in report and "| lora:a3 | 2 | 1.00 |" in report
    assert "| lora:a3 − a3 | 2 | +" in report  # paired on the shared questions


def test_untrained_traces_leave_out_the_adapters_sample_and_its_paragraphs(tmp_path: Path) -> None:
    from zhrag.training.card import CARD_FILE
    from zhrag.training.dataset import load_training_data, untrained_examples
    from zhrag.training.formats import export_examples

    examples = []
    for number in range(12):
        example = trace(1)
        example["id"] = f"q{number}/tools"
        example["meta"] = {**example["meta"], "passage_id": f"p{number // 2}"}  # two questions per paragraph
        examples.append(example)
    data = export_examples(examples, tmp_path / "zhrag_train.jsonl")
    trained = load_training_data(data, "tools", limit=3, seed=5)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    card = {"task": "tools", "hyperparameters": {"limit": 3, "seed": 5}, "data": {"sha256": trained.sha256}}
    (adapter / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")

    left = untrained_examples(data, "tools", adapter)
    trained_ids = {example["id"] for example in trained.examples}
    trained_paragraphs = {example["meta"]["passage_id"] for example in trained.examples}
    assert left.trained == 3
    assert not {example["id"] for example in left.examples} & trained_ids
    assert not {example["meta"]["passage_id"] for example in left.examples} & trained_paragraphs
    assert len(left.examples) + left.same_paragraph + 3 == 12
    assert len(left.examples) == 12 - 2 * len(trained_paragraphs)

    (adapter / CARD_FILE).write_text(json.dumps({**card, "hyperparameters": {"limit": 3, "seed": 6}}), "utf-8")
    with pytest.raises(TrainingDataError, match="not trained on"):
        untrained_examples(data, "tools", adapter)
    (adapter / CARD_FILE).write_text(json.dumps({**card, "task": "answer"}), "utf-8")
    with pytest.raises(TrainingDataError, match="trained for 'answer'"):
        untrained_examples(data, "tools", adapter)
    with pytest.raises(TrainingDataError, match="no training card"):
        untrained_examples(data, "tools", tmp_path)
