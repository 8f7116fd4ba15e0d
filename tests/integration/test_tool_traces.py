"""A3 tool-use traces built from reading pairs through the real qdrant-find (a spawned MCP server over embedded
Qdrant), exported for LLaMA-Factory, and masked on Qwen2.5's real chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhrag import cli
from zhrag.kb.indexing import index_sources
from zhrag.kb.store import KnowledgeStore
from zhrag.mcp.client import KnowledgeClient, ServerConfig
from zhrag.nodes.agent import find_tool_spec
from zhrag.rc_pairs import RCPair
from zhrag.training.examples import check_conversation
from zhrag.training.tool_traces import build_tool_traces

pytestmark = pytest.mark.integration

KB = [
    {"id": "jiuming", "title": "九命奇冤", "text": "九命奇冤，清吴沃尧所著的小说。最初发表于梁启超主办的《新小说》杂志。"},
    {"id": "changjiang", "title": "长江", "text": "长江是亚洲第一长河，全长约6300公里，在上海注入东海。"},
    {"id": "gugong", "title": "故宫", "text": "北京故宫是明清两代的皇家宫殿，旧称紫禁城，始建于明成祖永乐四年。"},
    {"id": "xiongmao", "title": "大熊猫", "text": "大熊猫是中国特有的熊科动物，主要以竹子为食。"},
]
PAIRS = [
    RCPair("q1", "test", "《九命奇冤》是由哪位作者所著？", ("吴沃尧",), "jiuming"),
    RCPair("q2", "test", "长江在哪里注入东海？", ("上海",), "changjiang"),
    RCPair("q3", "test", "故宫旧称什么？", ("紫禁城",), "gugong"),
    RCPair("q4", "test", "大熊猫主要吃什么？", ("熊猫饼干",), "xiongmao"),  # the answer is in no passage
    RCPair("q5", "test", "", ("x",), "xiongmao"),
]


@pytest.fixture(scope="module")
def knowledge(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("traces")
    kb = root / "kb.jsonl"
    kb.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in KB), encoding="utf-8")
    with KnowledgeStore("traces", path=root / "qdrant") as store:
        index_sources(store, [kb], progress=False)
    pairs = root / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"id": p.id, "source": p.source, "question": p.question, "answers": list(p.answers),
                            "passage_id": p.passage_id}, ensure_ascii=False) + "\n" for p in PAIRS),
        encoding="utf-8",
    )
    config = ServerConfig(collection="traces", qdrant_path=str(root / "qdrant"))
    return kb, pairs, config


def test_traces_search_through_qdrant_find_and_keep_the_rejected_with_reasons(knowledge):
    from zhrag.training.examples import load_documents

    kb, _, config = knowledge
    judged: list[tuple[str, str]] = []

    def check(question, passages):  # stands in for the judge model: only the wiring of its verdict is tested here
        judged.extend((question, passage["id"]) for passage in passages)
        return [0.1 if "故宫" in question else 0.9 for _ in passages]

    with KnowledgeClient(config) as client:
        spec = find_tool_spec(client)
        splits, rejected = build_tool_traces(
            PAIRS, load_documents(kb), client.find, spec, check=check, threshold=0.5, eval_fraction=0.0
        )
    accepted = {example["id"]: example for example in splits.train}
    assert set(accepted) == {"q1/tools", "q2/tools"} and not splits.eval
    assert {record["id"]: record["reason"] for record in rejected} == {
        "q3/tools": "judge_rejected", "q4/tools": "answer_not_visible",
    }
    assert splits.skipped["empty_question_or_answer"] == 1
    trace = accepted["q1/tools"]["conversations"]
    check_conversation(trace)
    assert [turn["from"] for turn in trace] == ["system", "human", "function_call", "tool", "gpt"]
    call = json.loads(trace[2]["value"])
    assert call == {"name": "qdrant-find", "arguments": {"query": "《九命奇冤》是由哪位作者所著？"}}
    assert "吴沃尧" in trace[3]["value"] and trace[4]["value"] == "吴沃尧"
    assert json.loads(accepted["q1/tools"]["tools"]) == [spec]
    assert accepted["q1/tools"]["meta"]["found_passage_id"] == "jiuming#0"
    assert ("《九命奇冤》是由哪位作者所著？", "jiuming#0") in judged


def test_a_missed_first_search_is_followed_by_a_rewritten_query(knowledge):
    from zhrag.training.examples import load_documents

    kb, _, config = knowledge
    calls: list[str] = []
    with KnowledgeClient(config) as client:

        def first_search_misses(query, top_k):
            calls.append(query)
            found = client.find(query, top_k)
            return [] if len(calls) == 1 else found

        splits, rejected = build_tool_traces(
            PAIRS[:1], load_documents(kb), first_search_misses, find_tool_spec(client), eval_fraction=0.0
        )
    assert not rejected
    (example,) = splits.train
    turns = example["conversations"]
    assert [turn["from"] for turn in turns] == ["system", "human", "function_call", "tool", "function_call", "tool", "gpt"]
    assert turns[3]["value"] == "没有找到相关资料。"
    assert json.loads(turns[4]["value"])["arguments"]["query"] == calls[1] != calls[0]
    assert example["meta"]["queries"] == calls


def test_cli_build_data_tools_writes_llama_factory_files(knowledge, tmp_path: Path, capsys):
    kb, pairs, config = knowledge
    out = tmp_path / "tools"
    code = cli.main([
        "build-data", "--task", "tools", "--source", f"rc:{pairs}", "--kb", str(kb), "--out", str(out),
        "--collection", config.collection, "--qdrant-path", config.qdrant_path, "--no-judge-check", "--name", "agent",
    ])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    rows = []
    for split in ("train", "eval"):
        if (out / f"agent_{split}.jsonl").exists():
            assert info[f"agent_{split}"]["columns"]["tools"] == "tools"
            rows += [json.loads(line) for line in (out / f"agent_{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(json.loads(row["tools"])[0]["function"]["name"] == "qdrant-find" for row in rows)
    assert {json.loads(row["conversations"][2]["value"])["arguments"]["query"] for row in rows} == {
        pair.question for pair in PAIRS[:3]
    }
    rejected = [json.loads(line) for line in (out / "agent_rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["reason"] for row in rejected] == ["answer_not_visible"]
    manifest = json.loads((out / "agent_manifest.json").read_text(encoding="utf-8"))
    assert manifest["rejected"] == {"answer_not_visible": 1}
    assert "tool traces, 1 rejected (" in capsys.readouterr().out


@pytest.mark.parametrize("model", ["qwen2.5-coder-0.5b", "gemma3-270m"])
def test_eval_tools_replays_held_out_traces_on_a_real_model_and_resumes(knowledge, tmp_path: Path, capsys, model):
    """The chat model calls through its own template (llama.cpp), the base model through ChatML text; every
    held-out turn is scored from what the model wrote, and a second run resumes with nothing left to do."""
    from zhrag.models.tool_calls import parse_tool_calls

    kb, pairs, config = knowledge
    data = tmp_path / "tools"
    assert cli.main(["build-data", "--task", "tools", "--source", f"rc:{pairs}", "--kb", str(kb), "--out", str(data),
                     "--collection", config.collection, "--qdrant-path", config.qdrant_path, "--no-judge-check"]) == 0
    held_out = [json.loads(line) for line in (data / "zhrag_eval.jsonl").read_text(encoding="utf-8").splitlines()]
    out = tmp_path / "run"
    argv = ["eval-tools", "--data", str(data), "--model", model, "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["trace_id"], r["kind"]) for r in records] == [
        (trace["id"], kind) for trace in held_out for kind in ("call", "answer")]
    for record in records:
        if record["kind"] == "call":
            tagged = [c for c in record["calls"] if c["well_formed"]]
            assert record["well_formed"] == bool(
                tagged and len(tagged) == len(record["calls"]) and tagged[0]["name"] == "qdrant-find"
                and str(tagged[0]["arguments"].get("query") or "").strip())
        else:
            assert record["stopped"] == (not record["calls"])
        if model == "gemma3-270m":  # the text path: what was parsed is what the model wrote
            assert [c["name"] for c in record["calls"]] == [c.name for c in parse_tool_calls(record["raw"])]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["traces"] == len(held_out) and summary["call_steps"]["well_formed"]["n"] == len(held_out)
    assert "# Tool use on held-out traces" in (out / "report.md").read_text(encoding="utf-8")
    assert cli.main(argv) == 0  # resumes: every turn is done
    assert len((out / "results.jsonl").read_text(encoding="utf-8").splitlines()) == len(records)
