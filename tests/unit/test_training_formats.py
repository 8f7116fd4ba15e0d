"""ShareGPT / Alpaca files and LLaMA-Factory dataset_info.json entries for fine-tuning examples."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from zhrag.errors import TrainingDataError
from zhrag.training.examples import Example, ExampleSplits
from zhrag.training.formats import (
    dataset_info_entry,
    export_examples,
    import_examples,
    to_alpaca,
    write_dataset_info,
    write_splits,
)

pytest.importorskip("datasets", reason="the optional 'datasets' package (zhrag[train]) writes training files")

ANSWER = Example(
    id="p1/answer",
    task="answer",
    conversations=[
        {"from": "human", "value": "资料：\n[1] 青溪镇以出产竹编工艺品闻名。\n问题：青溪镇以出产什么闻名？\n答案："},
        {"from": "gpt", "value": "竹编工艺品"},
    ],
    meta={"passage_ids": ["d1#0"], "gold_position": 1, "split": "train"},
)
JUDGE = Example(
    id="p1/judge/no",
    task="judge",
    conversations=[
        {"from": "system", "value": "只输出“是”或“否”。"},
        {"from": "human", "value": "问题：青溪镇以出产什么闻名？\n\n资料：白鹭湖是一座人工湖。"},
        {"from": "gpt", "value": "否"},
    ],
    meta={"relevant": False, "judged_passage_id": "d2#0", "note": None},
)
MULTI_TURN = Example(
    id="m1",
    task="answer",
    conversations=[
        {"from": "system", "value": "简短回答。"},
        {"from": "human", "value": "第一问"},
        {"from": "gpt", "value": "第一答"},
        {"from": "human", "value": "第二问"},
        {"from": "gpt", "value": "第二答"},
    ],
    meta={},
)
WITH_TOOL = Example(
    id="t1",
    task="answer",
    conversations=[
        {"from": "human", "value": "查天气"},
        {"from": "gpt", "value": "调用天气工具"},
        {"from": "tool", "value": "晴"},
        {"from": "gpt", "value": "晴天"},
    ],
    meta={},
)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_sharegpt_round_trip_keeps_every_field(tmp_path: Path, suffix: str) -> None:
    examples = [ANSWER, JUDGE, MULTI_TURN, WITH_TOOL]
    path = export_examples(examples, tmp_path / f"data{suffix}")
    text = path.read_text(encoding="utf-8")
    assert "竹编工艺品" in text  # written as UTF-8 text, not \\u escapes
    rows = [json.loads(line) for line in text.splitlines()] if suffix == ".jsonl" else json.loads(text)
    assert rows == examples
    assert import_examples(path) == examples


def test_alpaca_round_trip_maps_turns_to_instruction_output_and_history(tmp_path: Path) -> None:
    path = export_examples([ANSWER, JUDGE, MULTI_TURN], tmp_path / "alpaca.jsonl", format="alpaca")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[2] == {
        "id": "m1",
        "task": "answer",
        "instruction": "第二问",
        "input": "",
        "output": "第二答",
        "system": "简短回答。",
        "history": [["第一问", "第一答"]],
        "meta": {},
    }
    assert (rows[1]["system"], rows[1]["output"]) == ("只输出“是”或“否”。", "否")
    assert import_examples(path, format="alpaca") == [ANSWER, JUDGE, MULTI_TURN]


def test_alpaca_cannot_hold_tool_turns() -> None:
    with pytest.raises(TrainingDataError, match="'t1': Alpaca needs alternating human/gpt turns"):
        to_alpaca(WITH_TOOL)


def test_foreign_rows_are_read_with_llama_factory_conventions(tmp_path: Path) -> None:
    path = tmp_path / "foreign.jsonl"
    rows = [
        {"instruction": "翻译", "input": "你好", "output": "hello"},
        {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}], "task": "judge"},
        {
            "conversations": [
                {"from": "human", "value": "查"},
                {"from": "gpt", "value": "调用"},
                {"from": "observation", "value": "结果"},
                {"from": "gpt", "value": "好"},
            ],
            "system": "系统",
        },
    ]
    path.write_text(json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8")
    [alpaca] = import_examples(path)
    assert alpaca == Example(
        id="foreign.jsonl:1",
        task="answer",
        conversations=[{"from": "human", "value": "翻译\n你好"}, {"from": "gpt", "value": "hello"}],
        meta={},
    )
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows[1:]), encoding="utf-8")
    openai, sharegpt = import_examples(path)
    assert openai["task"] == "judge" and [t["from"] for t in openai["conversations"]] == ["human", "gpt"]
    assert [t["from"] for t in sharegpt["conversations"]] == ["system", "human", "gpt", "tool", "gpt"]
    assert sharegpt["id"] == "foreign.jsonl:2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "plain pretraining text"}\n', r":1: unknown data format"),
        ('{"conversations": [{"from": "human", "value": "问"}]}\n', r":1: conversation has no gpt"),
        ('{"conversations": [{"from": "bot", "value": "问"}]}\n', r":1: turn 1 has unknown speaker 'bot'"),
        ('{"instruction": "问", "output": "答"}\n{"instruction": "问", "output": \n', r":2: malformed JSON line"),
        ('{"instruction": "问", "output": "答", "task": "summarise"}\n', r":1: unknown task 'summarise'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TrainingDataError, match=message):
        import_examples(path)


def test_unknown_formats_and_file_types_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="unknown data format 'oasst'"):
        export_examples([ANSWER], tmp_path / "x.jsonl", format="oasst")
    with pytest.raises(TrainingDataError, match="unknown file type '.csv'"):
        export_examples([ANSWER], tmp_path / "x.csv")
    with pytest.raises(TrainingDataError, match="no examples"):
        export_examples([], tmp_path / "x.jsonl")
    no_answer = Example(id="e", task="answer", conversations=[{"from": "human", "value": "问"}], meta={})
    with pytest.raises(TrainingDataError, match="example 'e': conversation has no gpt"):
        export_examples([no_answer], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_dataset_info_entries_follow_llama_factory_schema(tmp_path: Path) -> None:
    sharegpt = dataset_info_entry("train.jsonl")
    assert sharegpt == {
        "file_name": "train.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations"},
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "observation_tag": "tool",
            "function_tag": "function_call",
            "system_tag": "system",
        },
    }
    alpaca = dataset_info_entry("train.json", format="alpaca")
    assert alpaca["formatting"] == "alpaca"
    assert alpaca["columns"] == {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "system": "system",
        "history": "history",
    }

    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}), encoding="utf-8")
    write_dataset_info(tmp_path, {"zhrag_train": sharegpt})
    assert json.loads(info.read_text(encoding="utf-8")) == {
        "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
        "zhrag_train": sharegpt,
    }
    info.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TrainingDataError, match="expected a JSON object"):
        write_dataset_info(tmp_path, {"zhrag_train": sharegpt})


def test_write_splits_writes_files_their_dataset_info_and_a_manifest(tmp_path: Path) -> None:
    splits = ExampleSplits(
        train=[ANSWER, JUDGE],
        eval=[MULTI_TURN],
        eval_groups=["d9"],
        excluded_ids=["q0", "q1"],
        skipped=Counter({"answer_not_visible": 2}),
    )
    written = write_splits(splits, tmp_path / "out", name="rc")
    info = json.loads(written["dataset_info"].read_text(encoding="utf-8"))
    assert set(info) == {"rc_train", "rc_eval"}
    assert import_examples(tmp_path / "out" / info["rc_train"]["file_name"]) == [ANSWER, JUDGE]
    assert import_examples(tmp_path / "out" / info["rc_eval"]["file_name"]) == [MULTI_TURN]
    manifest = json.loads(written["manifest"].read_text(encoding="utf-8"))
    assert manifest == {
        "format": "sharegpt",
        "counts": {"train": {"answer": 1, "judge": 1}, "eval": {"answer": 1}},
        "eval_groups": ["d9"],
        "excluded_ids": ["q0", "q1"],
        "skipped": {"answer_not_visible": 2},
    }
    with pytest.raises(TrainingDataError, match="no examples"):
        write_splits(ExampleSplits(), tmp_path / "empty")


def test_missing_datasets_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(TrainingDataError, match=r"pip install 'zhrag\[train\]'"):
        export_examples([ANSWER], tmp_path / "x.jsonl")


def test_training_package_imports_neither_datasets_nor_transformers() -> None:
    code = "import sys, zhrag.training; print(sorted({'datasets', 'transformers', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def test_tool_use_examples_round_trip_with_their_tools_column(tmp_path) -> None:
    import json

    from zhrag.training.formats import dataset_info_entry, export_examples, import_examples

    tools = json.dumps([{"type": "function", "function": {"name": "qdrant-find", "parameters": {}}}])
    trace = [
        {"from": "human", "value": "问题？"},
        {"from": "function_call", "value": '{"name": "qdrant-find", "arguments": {"query": "甲"}}'},
        {"from": "tool", "value": "[1] 甲：……"},
        {"from": "gpt", "value": "乙"},
    ]
    examples = [
        {"id": "t1", "task": "answer", "conversations": trace, "meta": {}, "tools": tools},
        {"id": "p1", "task": "answer", "conversations": [trace[0], trace[-1]], "meta": {}},
    ]
    path = export_examples(examples, tmp_path / "tools.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [row["tools"] for row in rows] == [tools, ""]  # every row has the column LLaMA-Factory maps
    back = import_examples(path)
    assert back[0]["tools"] == tools and back[0]["conversations"] == trace and "tools" not in back[1]
    entry = dataset_info_entry(path.name, tools=True)
    assert entry["columns"] == {"messages": "conversations", "tools": "tools"}
    assert entry["tags"]["function_tag"] == "function_call"
