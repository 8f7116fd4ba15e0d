"""``zhrag generate-data`` with the packaged Gemma-3-270M on two real KB passages: the file layout, not the content.

The 270M base model writes weak pairs and many are rejected; what matters here is that every passage gets its
records with a status and, when rejected, a known reason, that the sidecar records model, prompts and settings,
and that ``export-pairs`` turns the accepted ones into reading-comprehension pairs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zhrag.prompts import normalize_text
from zhrag.rc_pairs import load_rc_pairs
from zhrag.training.generate import REASONS, load_generated, meta_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Short passages keep the prompts (and the test) small.
PASSAGE_CHARS = (100, 200)


@pytest.fixture
def two_passages(shared_kb: Path, tmp_path: Path) -> Path:
    rows = []
    with shared_kb.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if PASSAGE_CHARS[0] <= len(row["text"]) <= PASSAGE_CHARS[1]:
                rows.append(row)
            if len(rows) == 2:
                break
    path = tmp_path / "kb.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def zhrag(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zhrag.cli", *args],
        check=False, capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )


def test_generate_data_writes_checked_pairs_and_their_sidecar(two_passages: Path, tmp_path: Path) -> None:
    out = tmp_path / "generated.jsonl"
    result = zhrag(
        "generate-data", "--kb", str(two_passages), "--out", str(out), "--batch-size", "2", "--model", "gemma3-270m"
    )
    assert result.returncode == 0, result.stderr
    assert "2 passages processed" in result.stdout

    records = load_generated(out)
    passage_ids = {json.loads(line)["id"] for line in two_passages.read_text(encoding="utf-8").splitlines()}
    assert {r["passage_id"] for r in records} == passage_ids
    for record in records:
        assert record["status"] in ("accepted", "rejected")
        assert (record["reason"] is None) == (record["status"] == "accepted")
        assert record["reason"] is None or record["reason"] in REASONS
        assert record["passage"] and isinstance(record["generation"], str)
        if record["status"] == "accepted":
            assert normalize_text(record["answer"]) in normalize_text(record["passage"])
            assert record["llm_check"] is not None

    meta = json.loads(meta_path(out).read_text(encoding="utf-8"))
    assert meta["model"]["model"] == "gemma3-270m" and meta["model"]["is_chat"] is False
    for prompt in meta["prompts"].values():
        assert prompt["sha256"] == hashlib.sha256(prompt["text"].encode("utf-8")).hexdigest()
    assert meta["counts"]["passages"] == 2 and meta["settings"]["per_passage"] == 1

    rc_file = tmp_path / "rc.jsonl"
    exported = zhrag("export-pairs", str(out), "--out", str(rc_file))
    accepted = [r for r in records if r["status"] == "accepted"]
    if accepted:
        assert exported.returncode == 0, exported.stderr
        assert [p.question for p in load_rc_pairs(rc_file)] == [r["question"] for r in accepted]
    else:  # the weak base model may get nothing past the checks
        assert exported.returncode == 2 and "no accepted pairs" in exported.stderr
