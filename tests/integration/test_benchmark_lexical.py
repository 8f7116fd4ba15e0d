"""The lexical ablation benchmark runs end to end in smoke mode and writes well-formed results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_lexical_ablation_smoke(tmp_path: Path, shared_kb: Path) -> None:
    out = tmp_path / "lexical.json"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "retrieval_lexical.py"), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    document = json.loads(out.read_text("utf-8"))
    assert document["sets"] == {"rc": 40}
    assert len(document["rows"]) == 2
    for row in document["rows"]:
        cell = row["sets"]["rc"]
        assert cell["n"] == 40
        recalls = [cell[f"recall@{k}"] for k in (1, 3, 5, 10)]
        assert recalls == sorted(recalls) and 0 < recalls[-1] <= 1  # measured, monotone in k
        assert 0 < cell["mrr"] <= 1
        assert row["chunks"] > 0
    assert "| tuned BM25 (k1 0.9, b 0.4) — default |" in out.with_suffix(".md").read_text("utf-8")
