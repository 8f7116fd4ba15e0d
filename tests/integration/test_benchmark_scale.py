"""The indexing and retrieval-scale benchmarks in smoke mode: real KB text, real Edge store, real MCP server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zhrag import settings

from rounding import assert_rounded_quotient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
CELL_KEYS = {"n", "p50_ms", "p95_ms", "mean_ms", "qps"}


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed


def check_cell(cell: dict, queries: int) -> None:
    assert set(cell) == CELL_KEYS and cell["n"] == queries
    assert 0 < cell["p50_ms"] <= cell["p95_ms"] and cell["qps"] > 0


@pytest.fixture(scope="module")
def rc_questions() -> None:
    path = settings.shared_data_dir() / "rc" / "reading_comprehension.jsonl"
    if not path.is_file():
        pytest.skip(f"reading-comprehension questions not found at {path}")


def test_indexing_smoke_measures_each_part(tmp_path: Path, shared_kb: Path) -> None:
    out = tmp_path / "indexing.json"
    run_script("indexing.py", "--smoke", "--out", str(out))
    document = json.loads(out.read_text("utf-8"))
    assert document["benchmark"] == "indexing" and document["smoke"] is True
    assert document["documents"] == 30 and document["chunks"] >= 30 and document["engine"] == "edge"
    parts = document["parts"]
    assert set(parts) == {"sparse", "dense", "upsert", "total"}
    for part in parts.values():
        assert part["seconds"] > 0
        # chunks per second to one decimal, from the time that the part records to four
        assert_rounded_quotient(part["chunks_per_s"], 1, document["chunks"], None, part["seconds"], 4)
    # the parts are timed inside the whole run
    assert parts["sparse"]["seconds"] + parts["dense"]["seconds"] + parts["upsert"]["seconds"] <= parts["total"]["seconds"] + 0.02
    assert_rounded_quotient(document["sparse_vs_dense_speed"], 2, parts["dense"]["seconds"], 4, parts["sparse"]["seconds"], 4)
    assert document["sparse_target_met"] == (parts["sparse"]["chunks_per_s"] >= 1000)


def test_scale_smoke_grows_and_resumes(tmp_path: Path, shared_kb: Path, rc_questions: None) -> None:
    out, work = tmp_path / "scale.json", tmp_path / "work"
    run_script("retrieval_scale.py", "--smoke", "--work", str(work), "--out", str(out))
    document = json.loads(out.read_text("utf-8"))
    assert document["benchmark"] == "retrieval_scale" and document["queries"] == 5
    sizes = document["sizes"]
    assert list(sizes) == ["300", "600"]
    assert [cell["points"] for cell in sizes.values()] == [300, 600]
    assert [cell["build"]["points_added"] for cell in sizes.values()] == [300, 300]
    for cell in sizes.values():
        check_cell(cell["store"], 5)
        check_cell(cell["mcp"], 5)
        assert set(cell["engine"]) == {"hybrid", "dense", "sparse"}
        for engine_cell in cell["engine"].values():
            check_cell(engine_cell, 5)
        assert cell["mcp_overhead_ms_p50"] == pytest.approx(cell["mcp"]["p50_ms"] - cell["store"]["p50_ms"], abs=0.01)
    assert document["collection"]["vocabulary_terms"] > 100

    # a rerun on the same work directory reuses the measured steps instead of rebuilding
    again = tmp_path / "again.json"
    run_script("retrieval_scale.py", "--smoke", "--work", str(work), "--out", str(again))
    assert json.loads(again.read_text("utf-8"))["sizes"] == sizes

    # the synthetic collection is an ordinary zhrag collection: `zhrag search` reads it
    from zhrag.kb.retrieval import Retriever
    from zhrag.kb.store import KnowledgeStore

    with KnowledgeStore("synthetic_scale", path=work, engine="edge", embedder=settings.PACKAGED_EMBEDDER) as store:
        assert store.count() == 600
        hits = Retriever(store).search("《红楼梦》的作者是谁？", top_k=3)
    assert hits and all(hit["id"].startswith("synthetic-") for hit in hits)


def test_scale_refuses_a_work_directory_built_otherwise(tmp_path: Path, shared_kb: Path, rc_questions: None) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "scale_progress.json").write_text(json.dumps({"seed": 7, "queries": 5, "steps": {}}), encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "retrieval_scale.py"), "--smoke", "--work", str(work),
         "--out", str(tmp_path / "x.json")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode != 0
    assert "seed 7" in completed.stderr and not (tmp_path / "x.json").exists()


def test_performance_page_renders_indexing_and_scale(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    cell = {"n": 5, "p50_ms": 12.5, "p95_ms": 20.0, "mean_ms": 13.0, "qps": 76.9}
    (results / "indexing.json").write_text(json.dumps({
        "benchmark": "indexing", "smoke": False, "machine": {"cpus": 2, "device": "cpu"},
        "documents": 10, "chunks": 20, "engine": "edge", "embedder": "m", "batch_size": 8,
        "parts": {"sparse": {"seconds": 0.01, "chunks_per_s": 2000.0}, "dense": {"seconds": 1.0, "chunks_per_s": 20.0},
                  "upsert": {"seconds": 0.1, "chunks_per_s": 200.0}, "total": {"seconds": 1.2, "chunks_per_s": 16.7}},
        "sparse_vs_dense_speed": 100.0, "sparse_target_per_s": 1000, "sparse_target_met": True,
    }), encoding="utf-8")
    (results / "retrieval_scale.json").write_text(json.dumps({
        "benchmark": "retrieval_scale", "smoke": False, "machine": {"cpus": 2},
        "collection": {"vocabulary_terms": 900, "mean_terms_per_passage": 80.5, "dimension": 384},
        "queries": 5, "top_k": 5,
        "sizes": {"1000": {"points": 1000, "build": {"upsert_s": 1.5, "flush_optimize_s": 2.5}, "store": cell,
                           "mcp": {**cell, "p50_ms": 22.5}, "mcp_overhead_ms_p50": 10.0,
                           "engine": dict.fromkeys(("hybrid", "dense", "sparse"), cell)}},
    }), encoding="utf-8")
    page = tmp_path / "PERFORMANCE.md"
    run_script("render_performance.py", "--results", str(results), "--out", str(page))
    text = page.read_text("utf-8")
    assert text.index("## Indexing") < text.index("## Retrieval scale")
    assert "| sparse | 0.01 | 2,000.0 |" in text
    assert "target ≥ 1,000 chunks/s for the sparse part: met" in text
    assert "| 1,000 | 1.5 + 2.5 | 12.5 / 20.0 | 22.5 / 20.0 | 76.9 | 10.0 |" in text


def test_ingestion_scale_smoke_streams_and_resumes(tmp_path: Path, shared_kb: Path) -> None:
    out = tmp_path / "ingestion.json"
    run_script("ingestion_scale.py", "--smoke", "--out", str(out))
    document = json.loads(out.read_text("utf-8"))
    assert document["benchmark"] == "ingestion_scale" and document["smoke"] is True
    small, large = document["sizes"]
    assert (small["articles"], large["articles"]) == (300, 1200) and large["chunks"] > small["chunks"] > 300
    for row in (small, large):
        assert row["pipeline"]["chunks_per_s"] > 0 and row["index"]["chunks_per_s"] > 0
        assert 0 < row["pipeline"]["peak_rss_mib"] <= row["index"]["peak_rss_mib"]
    resume = document["kill_and_resume"]
    assert 0 < resume["checkpoint_documents"] == resume["skipped_documents"] < 1200
    assert resume["resumed_documents"] == 1200 - resume["skipped_documents"]
    projection = document["projection"]
    assert projection["chunks"] == round(1_000_000 * large["chunks"] / 1200)
    assert projection["sparse_hours"] > 0 and out.with_suffix(".png").stat().st_size > 0
