"""A run killed with SIGKILL mid-way resumes without losing or duplicating a (question, variant) pair.

The runner runs in a subprocess whose fake answer model answers a few questions and then holds every later call,
so the kill lands mid-run however fast or busy the machine is; then it runs again to completion.
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
#: Answers before the first run's model holds: the kill comes once these results are on disk.
ANSWERED_BEFORE_KILL = 3
#: How long a step may take before the test gives up (a guard against a hang, not a speed requirement).
HANG_GUARD_S = 600
SCRIPT = """
import sys
import threading

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from zhrag.evaluation.datasets import load_questions
from zhrag.evaluation.runner import dataset_info, run_evaluation
from zhrag.graph.context import Context
from zhrag.models import LocalLLM, register_llm

dataset, kb, out, limit, hold_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
calls = []


class HoldingModel(FakeListChatModel):
    def _call(self, *args, **kwargs):
        calls.append(None)
        if hold_after and len(calls) > hold_after:
            threading.Event().wait()  # until the test kills this process
        return super()._call(*args, **kwargs)


model = HoldingModel(responses=["不知道", "北京"])
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


@pytest.mark.timeout(3 * HANG_GUARD_S)
def test_sigkill_mid_run_then_resume(tmp_path: Path, dataset: Path, kb_subset: Path) -> None:
    script = tmp_path / "evaluate.py"
    script.write_text(SCRIPT, encoding="utf-8")
    out = tmp_path / "run"
    command = [sys.executable, str(script), str(dataset), str(kb_subset), str(out), str(N_QUESTIONS)]
    results = out / "results.jsonl"

    process = subprocess.Popen([*command, str(ANSWERED_BEFORE_KILL)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + HANG_GUARD_S
    while len(complete_lines(results)) < ANSWERED_BEFORE_KILL:
        assert process.poll() is None, f"runner exited early: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"no results within {HANG_GUARD_S} s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=HANG_GUARD_S)
    process.stderr.close()
    before = complete_lines(results)
    assert len(before) == ANSWERED_BEFORE_KILL, "the kill lands mid-run, after the answers the model gave"

    finished = subprocess.run([*command, "0"], capture_output=True, text=True, timeout=HANG_GUARD_S)
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
    killed, resumed = json.loads((out / "run.json").read_text(encoding="utf-8"))["sessions"]
    assert "finished" not in killed and resumed["started"] <= resumed["finished"]  # the kill shows in run.json
