"""A run killed with SIGKILL mid-way resumes without losing or duplicating a (question, variant) pair.

The runner runs in a subprocess (a slow fake answer model keeps each question ~0.2 s), is killed
once a few results are on disk, then run again to completion.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zhrag import settings

pytestmark = pytest.mark.integration

N_QUESTIONS = 12
SCRIPT = """
import sys

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from zhrag.evaluation.datasets import load_questions
from zhrag.evaluation.runner import dataset_info, run_evaluation
from zhrag.graph.context import Context
from zhrag.models import LocalLLM, register_llm

dataset, kb, out, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = FakeListChatModel(responses=["不知道", "北京"], sleep=0.2)
register_llm("slow-fake", LocalLLM.from_langchain(model, is_chat=True))
run_evaluation(
    ["a0"], load_questions(dataset, limit=limit), out, context=Context(model="slow-fake"),
    metrics=["grade", "retrieval"], progress=False, data=dataset_info(dataset, limit=limit), kb_sources=[kb],
)
"""


@pytest.fixture
def dataset() -> Path:
    path = settings.default_dataset()
    if not path.is_file():
        pytest.skip(f"Chinese-SimpleQA dev set not found at {path}")
    return path


def complete_lines(path: Path) -> list[bytes]:
    content = path.read_bytes() if path.exists() else b""
    return content[: content.rfind(b"\n") + 1].splitlines(keepends=True)


@pytest.mark.timeout(180)
def test_sigkill_mid_run_then_resume(tmp_path: Path, dataset: Path, kb_subset: Path) -> None:
    script = tmp_path / "evaluate.py"
    script.write_text(SCRIPT, encoding="utf-8")
    out = tmp_path / "run"
    command = [sys.executable, str(script), str(dataset), str(kb_subset), str(out), str(N_QUESTIONS)]
    results = out / "results.jsonl"

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(complete_lines(results)) < 3:
        assert process.poll() is None, f"runner exited early: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "no results within 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()
    before = complete_lines(results)
    assert 3 <= len(before) < N_QUESTIONS, "the kill must land mid-run"

    finished = subprocess.run(command, capture_output=True, text=True, timeout=150)
    assert finished.returncode == 0, finished.stderr[-2000:]

    after = complete_lines(results)
    assert after[: len(before)] == before  # what was on disk is kept as it was
    records = [json.loads(line) for line in after]
    ids = [record["id"] for record in records]
    assert len(ids) == len(set(ids)) == N_QUESTIONS
    with dataset.open(encoding="utf-8") as handle:
        first = [json.loads(line)["id"] for line, _ in zip(handle, range(N_QUESTIONS), strict=False)]
    assert sorted(ids) == sorted(first)
    assert all(record["variant"] == "a0" and record["answer"] in ("不知道", "北京") for record in records)
    assert (out / "report.md").is_file() and (out / "summary.json").is_file()
