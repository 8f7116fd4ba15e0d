"""The CLI end to end: index a real KB subset, answer with a0/a1/a2 through the real MCP server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

QUESTION = "《九命奇冤》是由哪位作者所著？"


def zhrag(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "zhrag.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def indexed_path(kb_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embedded Qdrant storage holding the KB subset, built with ``zhrag index``."""
    path = tmp_path_factory.mktemp("qdrant")
    first = zhrag("index", str(kb_subset), "--qdrant-path", str(path))
    assert first.returncode == 0, first.stderr
    again = zhrag("index", str(kb_subset), "--qdrant-path", str(path))
    assert again.returncode == 0, again.stderr
    # Re-indexing the same source is idempotent: the collection size does not change.
    assert first.stdout.split("now holds")[1] == again.stdout.split("now holds")[1]
    return path


@pytest.mark.slow
def test_ask_a1_json_reads_the_answer_and_reuses_the_checked_model_file(indexed_path: Path):
    result = zhrag("ask", "--variant", "a1", "--json", "--qdrant-path", str(indexed_path), QUESTION)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert set(record) >= {"variant", "question", "answer", "contexts", "queries", "requeries", "timings_ms"}
    assert record["variant"] == "a1" and record["queries"] == [QUESTION]
    assert any("吴沃尧" in passage["text"] for passage in record["contexts"])
    assert {"id", "title", "text", "score"} <= set(record["contexts"][0])
    assert {"retrieve", "answer", "total"} <= set(record["timings_ms"])
    assert "吴沃尧" in record["answer"] and 0 < record["answer_confidence"] <= 1
    # The default model on llama.cpp; a later process finds the assembled, checked GGUF file.
    again = zhrag("ask", "--variant", "a0", "--json", "中国的首都是哪里？")
    assert again.returncode == 0, again.stderr
    [model] = json.loads(again.stdout)["models"]
    assert (model["model"], model["engine"], model["cache_hit"]) == ("qwen2.5-coder-1.5b", "llama.cpp", True)


@pytest.mark.slow
def test_ask_a2_json_judges_and_keeps_relevant_passages(indexed_path: Path):
    result = zhrag("ask", "--variant", "a2", "--json", "--qdrant-path", str(indexed_path), QUESTION)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["variant"] == "a2"
    assert 0 <= record["requeries"] <= 2
    assert len(record["queries"]) == record["requeries"] + 1
    assert len(set(record["queries"])) == len(record["queries"])
    assert "吴沃尧" in record["answer"]
    assert {"retrieve", "judge", "answer", "arbitrate"} <= set(record["timings_ms"])
    kept = [judgement for judgement in record["judgements"] if judgement["relevant"]]
    assert kept and all(0.0 <= judgement["score"] <= 1.0 for judgement in record["judgements"])
    assert record["contexts"][0]["id"] == max(kept, key=lambda j: j["score"])["id"]  # highest judge score first
    # The arbiter weighed the model's closed-book answer against the kept passages' and chose the passages, which
    # state 吴沃尧; its signals and reason are in the record.
    assert {"passages", "closed_book"} <= set(record["candidates"])
    assert all(0 < candidate["confidence"] <= 1 for candidate in record["candidates"].values())
    arbitration = record["arbitration"]
    assert (arbitration["arbiter"], arbitration["path"]) == ("rule", "passages")
    assert arbitration["features"]["stated"] is True and arbitration["features"]["kept"] == len(kept)
    assert record["knowledge"]["source"] == "passages" and "the arbiter (rule) chose passages" in \
        record["knowledge"]["reason"]


def test_ask_a3_json_shows_the_agents_qdrant_find_calls(indexed_path: Path):
    """The default model on llama.cpp calls qdrant-find in the chat template's format; the calls are recorded."""
    result = zhrag("ask", "--variant", "a3", "--json", "--max-tool-rounds", "1", "--qdrant-path", str(indexed_path),
                   QUESTION)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["variant"] == "a3" and record["tool_rounds"] == 1
    [call] = record["tool_calls"]
    assert call["name"] == "qdrant-find" and call["well_formed"] is True and call["arguments"]["query"].strip()
    assert len(call["passages"]) == 3 and record["queries"] == [call["arguments"]["query"].strip()]
    assert [p["id"] for p in record["contexts"]] == call["passages"] and "吴沃尧" in record["answer"]
    assert set(record["timings_ms"]) == {"agent", "tools", "answer", "total"}


def test_ask_a4_json_shows_each_roles_handoff(indexed_path: Path):
    """The default model plays all four roles; every hand-off and the evaluator's verdict are in the record."""
    result = zhrag("ask", "--variant", "a4", "--json", "--qdrant-path", str(indexed_path), QUESTION)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["variant"] == "a4" and "吴沃尧" in record["answer"]
    assert record["plan"]["searches"][0] == QUESTION and record["queries"][: len(record["plan"]["searches"])] == \
        record["plan"]["searches"]
    handoffs = [(step["from"], step["to"]) for step in record["handoffs"]]
    assert handoffs[:3] == [("planner", "researcher"), ("researcher", "answerer"), ("answerer", "evaluator")]
    assert handoffs[-1] == ("evaluator", "end") and len(record["verdicts"]) == record["review_rounds"] + 1
    assert record["verdicts"][-1]["decision"] == "accept" and record["verdicts"][-1]["answer"] == record["answer"]
    quoted = [item["id"] for item in record["evidence"] if item["score"] >= 0.5]
    assert [p["id"] for p in record["contexts"]] == quoted[:3] and record["knowledge"]["source"] == "passages"
    assert any("吴沃尧" in p["evidence"] for p in record["contexts"])
    assert {"planner:propose", "researcher:search", "researcher:read", "answer", "evaluator:check"} <= set(
        record["timings_ms"])


def test_missing_kb_source_is_a_one_line_error(tmp_path: Path):
    result = zhrag("index", str(tmp_path / "nope.jsonl"), "--qdrant-path", str(tmp_path / "q"))
    assert result.returncode == 2
    assert "nope.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "第一段文字，内容足够长。"}\n{"text": 12,,}\n', encoding="utf-8")
    result = zhrag("index", str(source), "--qdrant-path", str(tmp_path / "q"))
    assert result.returncode == 2
    assert "bad.jsonl" in result.stderr and ":2" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_qdrant_url_is_a_one_line_error(kb_subset: Path):
    result = zhrag("index", str(kb_subset), "--qdrant-url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_path_is_a_one_line_error(tmp_path: Path):
    result = zhrag("ask", "--variant", "a0", "--model", str(tmp_path / "no-model"), "问题")
    assert result.returncode == 2
    assert "no-model" in result.stderr and "Traceback" not in result.stderr


def test_search_json_returns_the_passage_with_its_evidence_window(indexed_path: Path):
    result = zhrag("search", QUESTION, "--top-k", "3", "--json", "--qdrant-path", str(indexed_path))
    assert result.returncode == 0, result.stderr
    passages = json.loads(result.stdout)
    assert len(passages) == 3
    assert passages[0]["id"].startswith("cmrc2018-140#")
    assert "吴沃尧" in passages[0]["evidence"] and passages[0]["evidence"] in passages[0]["text"]
    assert [p["score"] for p in passages] == sorted((p["score"] for p in passages), reverse=True)
    # BM25 alone without reranking: raw BM25 scores, no evidence window
    sparse = zhrag(
        "search", QUESTION, "--top-k", "3", "--json", "--mode", "sparse", "--reranker", "none",
        "--qdrant-path", str(indexed_path),
    )
    assert sparse.returncode == 0, sparse.stderr
    assert all("evidence" not in p for p in json.loads(sparse.stdout))


def test_eval_retrieval_writes_a_resumable_report(indexed_path: Path, tmp_path: Path):
    args = ["eval-retrieval", "--sets", "rc", "--rc-limit", "12", "--no-ablation", "--out", str(tmp_path)]
    first = zhrag(*args, "--qdrant-path", str(indexed_path))
    assert first.returncode == 0, first.stderr
    document = json.loads((tmp_path / "retrieval.json").read_text("utf-8"))
    cell = document["rows"]["store default"]["sets"]["rc"]
    assert cell["n"] == 12
    assert 0 <= cell["recall@1"] <= cell["recall@5"] <= cell["recall@10"] <= 1
    assert "| store default |" in (tmp_path / "retrieval.md").read_text("utf-8")
    # other query sets make another run: refused without --force, nothing overwritten
    other_args = ["eval-retrieval", "--sets", "rc", "--rc-limit", "13", "--no-ablation", "--out", str(tmp_path)]
    other = zhrag(*other_args, "--qdrant-path", str(indexed_path))
    assert other.returncode == 2 and "--force" in other.stderr
    assert json.loads((tmp_path / "retrieval.json").read_text("utf-8")) == document


def test_index_sparse_only_then_dense_adds_the_dense_half(tmp_path: Path):
    from test_store import TINY_KB

    source = tmp_path / "tiny.jsonl"
    source.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in TINY_KB), encoding="utf-8")
    path = str(tmp_path / "q")
    sparse = zhrag("index", str(source), "--sparse-only", "--qdrant-path", path)
    assert sparse.returncode == 0, sparse.stderr
    assert "(BM25 only: `zhrag index --dense` adds the dense half)" in sparse.stdout
    dense = zhrag("index", "--dense", "--qdrant-path", path)
    assert dense.returncode == 0, dense.stderr
    assert f"as {len(TINY_KB)} chunks" in dense.stdout and "embedded" in dense.stdout
    done = zhrag("index", "--dense", "--qdrant-path", path)
    assert done.returncode == 0 and "already has its dense vector" in done.stdout
    both = zhrag("index", str(source), "--dense", "--qdrant-path", path)
    assert both.returncode == 2 and "--dense embeds an indexed collection" in both.stderr
    assert "Traceback" not in both.stderr
