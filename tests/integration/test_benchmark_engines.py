"""The retrieval-engines benchmark in smoke mode: it runs end to end and writes well-formed JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zhrag import settings

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "retrieval_engines.py"
CELL_KEYS = {"n", "p50_ms", "p95_ms", "mean_ms", "qps"}
MODES = {"hybrid", "dense", "sparse"}


def check_cells(cells: dict, queries: int) -> None:
    assert set(cells) == MODES
    for cell in cells.values():
        assert set(cell) == CELL_KEYS and cell["n"] == queries
        assert 0 < cell["p50_ms"] <= cell["p95_ms"] and cell["qps"] > 0


def test_smoke_run_writes_both_engines_on_both_workloads(tmp_path: Path, shared_kb: Path):
    questions = settings.shared_data_dir() / "rc" / "reading_comprehension.jsonl"
    if not questions.is_file():
        pytest.skip(f"reading-comprehension questions not found at {questions}")
    out = tmp_path / "engines.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["smoke"] is True and report["versions"]["qdrant-edge-py"] == "0.9.0"
    kb, synthetic = report["kb"], report["synthetic"]
    assert kb["points"] >= 20 and kb["queries"] == 5
    same, total = map(int, kb["hybrid_top_k_identical"].split("/"))
    assert total == 5 and 0 <= same <= total
    for engine in ("edge", "local"):
        check_cells(kb["results"][engine]["store"], 5)
        check_cells(kb["results"][engine]["engine"], 5)
        check_cells(synthetic["results"][engine], 5)
        assert synthetic["build"][engine]["upsert_s"] >= 0
    assert synthetic["points"] == 300 and synthetic["dimension"] == 384
    assert 20 <= synthetic["mean_sparse_terms"] <= 30
