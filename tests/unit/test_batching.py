"""The micro-batcher on a fake runner: coalescing, per-key separation, waiting limits, shared failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from zhrag.errors import ConfigError
from zhrag.models.batching import (
    MicroBatcher,
    concurrent_callers,
    default_concurrency,
    expected_callers,
    max_batch_for,
    max_wait_s,
)


class FakeRuntime:
    """Records every batch it runs; answers ``<key>:<prompt>``; can fail or hold a batch until released."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[Hashable, list[Any]]] = []
        self.fail = fail
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.lock = threading.Lock()

    def run(self, key: Hashable, prompts: list[Any]) -> list[str]:
        with self.lock:
            self.batches.append((key, list(prompts)))
        self.started.set()
        self.release.wait(GUARD_S)
        if self.fail:
            raise RuntimeError("model exploded")
        return [f"{key}:{prompt}" for prompt in prompts]


#: A ``max_wait_s`` no run reaches: a batch of such a batcher that closes, closed on its callers, not on the clock.
NEVER_S = 600.0
#: How long a test waits for a thread before it fails (a guard against a hang, not a speed requirement).
GUARD_S = 60.0


class RecordingCondition(threading.Condition):
    """A condition that records each wait: ``(timeout, notified)``; ``notified`` is false when the timeout ran out.

    It also counts ``notify_all`` calls: the batcher makes one for each call it adds to a batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[float | None, bool]] = []
        self.notifications = 0

    def notify_all(self) -> None:
        self.notifications += 1
        super().notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        notified = super().wait(timeout)
        self.waits.append((timeout, notified))
        return notified


def recording(batcher: MicroBatcher) -> RecordingCondition:
    """Let ``batcher`` wait on a :class:`RecordingCondition` (before any call); return it."""
    batcher._state = state = RecordingCondition()
    return state


def submit_all(batcher: MicroBatcher, calls: list[tuple[Hashable, list[str]]]) -> list[Any]:
    """Submit every call from its own thread at once; each result, or the exception raised."""
    def one(call: tuple[Hashable, list[str]]) -> Any:
        try:
            return batcher.submit(*call)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def test_concurrent_calls_share_one_batch_and_get_their_own_results() -> None:
    runtime = FakeRuntime()
    batcher = MicroBatcher(runtime.run, max_batch=8, max_wait_s=NEVER_S)
    state = recording(batcher)
    calls = [("k", [f"p{n}"]) for n in range(4)]
    with concurrent_callers(4):
        results = submit_all(batcher, calls)
    assert all(notified for _, notified in state.waits)  # the batch closed when the 4 expected callers were in
    assert results == [[f"k:p{n}"] for n in range(4)]
    assert len(runtime.batches) == 1 and sorted(runtime.batches[0][1]) == ["p0", "p1", "p2", "p3"]
    assert batcher.batches == 1 and batcher.largest == 4


def test_multi_prompt_calls_get_their_slices_in_order() -> None:
    runtime = FakeRuntime()
    batcher = MicroBatcher(runtime.run, max_batch=8, max_wait_s=NEVER_S)
    with concurrent_callers(2):
        results = submit_all(batcher, [("k", ["a", "b", "c"]), ("k", ["d"])])
    assert results == [["k:a", "k:b", "k:c"], ["k:d"]]
    assert len(runtime.batches) == 1


def test_different_keys_never_share_a_batch() -> None:
    """Answer adapter and judge adapter (or other budgets / stop sets) are batched separately."""
    runtime = FakeRuntime()
    batcher = MicroBatcher(runtime.run, max_batch=8, max_wait_s=NEVER_S)
    keys = [("answer", 32, ("\n",)), ("judge", 4, ("\n",)), ("answer", 32, ("\n",)), ("judge", 4, ("\n",))]
    with concurrent_callers(2):
        results = submit_all(batcher, [(key, [f"p{n}"]) for n, key in enumerate(keys)])
    assert results == [[f"{key}:p{n}"] for n, key in enumerate(keys)]
    assert sorted((key[0], sorted(prompts)) for key, prompts in runtime.batches) == [
        ("answer", ["p0", "p2"]), ("judge", ["p1", "p3"])
    ]


def test_a_full_batch_runs_without_waiting_and_the_rest_forms_another() -> None:
    runtime = FakeRuntime()
    batcher = MicroBatcher(runtime.run, max_batch=3, max_wait_s=NEVER_S)
    state = recording(batcher)
    with concurrent_callers(5):
        results = submit_all(batcher, [("k", [f"p{n}"]) for n in range(6)])
    assert all(notified for _, notified in state.waits)  # each batch closed full, not on the clock
    assert results == [[f"k:p{n}"] for n in range(6)]
    assert sorted(len(prompts) for _, prompts in runtime.batches) == [3, 3]


def test_a_leader_waits_at_most_max_wait() -> None:
    runtime = FakeRuntime()
    batcher = MicroBatcher(runtime.run, max_batch=8, max_wait_s=0.05)
    state = recording(batcher)
    with concurrent_callers(4):  # expects companions that never come
        started = time.monotonic()
        assert batcher.submit("k", ["alone"]) == ["k:alone"]
        waited = time.monotonic() - started
    assert waited >= 0.04
    # it gave up when max_wait ran out: no wait asked for more, the last one timed out
    assert state.waits and all(timeout is not None and timeout <= 0.05 for timeout, _ in state.waits)
    assert state.waits[-1][1] is False


def test_a_lone_caller_does_not_wait() -> None:
    runtime = FakeRuntime()
    batcher = MicroBatcher(runtime.run, max_batch=8, max_wait_s=NEVER_S)
    state = recording(batcher)
    assert expected_callers() == 1
    assert batcher.submit("k", ["x"]) == ["k:x"]
    assert state.waits == []


def test_calls_arriving_while_the_model_is_busy_form_the_next_batch() -> None:
    runtime = FakeRuntime()
    runtime.release.clear()
    batcher = MicroBatcher(runtime.run, max_batch=8, max_wait_s=0.0)
    state = recording(batcher)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.submit, "k", ["first"])
        assert runtime.started.wait(GUARD_S)
        later = [pool.submit(batcher.submit, "k", [f"p{n}"]) for n in range(3)]
        deadline = time.monotonic() + GUARD_S
        while state.notifications < 4:  # the three queue up behind the running batch
            assert time.monotonic() < deadline, "the calls did not reach the batcher"
            time.sleep(0.01)
        runtime.release.set()
        assert first.result(GUARD_S) == ["k:first"]
        assert [future.result(GUARD_S) for future in later] == [[f"k:p{n}"] for n in range(3)]
    assert [len(prompts) for _, prompts in runtime.batches] == [1, 3]


def test_an_exception_reaches_every_caller_of_the_batch() -> None:
    runtime = FakeRuntime(fail=True)
    batcher = MicroBatcher(runtime.run, max_batch=8, max_wait_s=NEVER_S)
    with concurrent_callers(3):
        results = submit_all(batcher, [("k", [f"p{n}"]) for n in range(3)])
    assert len(runtime.batches) == 1
    assert all(isinstance(result, RuntimeError) and str(result) == "model exploded" for result in results)
    runtime.fail = False
    assert batcher.submit("k", ["again"]) == ["k:again"]  # the batcher is still usable


def test_a_runner_returning_the_wrong_count_is_an_error_for_everyone() -> None:
    batcher = MicroBatcher(lambda key, prompts: ["only one"], max_batch=8, max_wait_s=NEVER_S)
    with concurrent_callers(2):
        results = submit_all(batcher, [("k", ["a"]), ("k", ["b"])])
    assert all(isinstance(result, RuntimeError) and "1 completions for 2 prompts" in str(result) for result in results)


def test_empty_prompts_run_nothing() -> None:
    runtime = FakeRuntime()
    assert MicroBatcher(runtime.run, max_batch=2, max_wait_s=0).submit("k", []) == []
    assert runtime.batches == []


def test_batch_size_and_wait_follow_device_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHRAG_GENERATION_BATCH", raising=False)
    monkeypatch.delenv("ZHRAG_BATCH_WAIT_MS", raising=False)
    assert max_batch_for("cpu") < max_batch_for("cuda:1") == max_batch_for("cuda")
    assert max_wait_s() > 0
    monkeypatch.setenv("ZHRAG_GENERATION_BATCH", "3")
    monkeypatch.setenv("ZHRAG_BATCH_WAIT_MS", "20")
    assert max_batch_for("cuda") == 3 and max_wait_s() == pytest.approx(0.02)
    monkeypatch.setenv("ZHRAG_GENERATION_BATCH", "zero")
    with pytest.raises(ConfigError, match="ZHRAG_GENERATION_BATCH"):
        max_batch_for("cpu")
    monkeypatch.setenv("ZHRAG_BATCH_WAIT_MS", "-1")
    with pytest.raises(ConfigError, match="ZHRAG_BATCH_WAIT_MS"):
        max_wait_s()
    with pytest.raises(ConfigError, match="max_batch"):
        MicroBatcher(FakeRuntime().run, max_batch=0, max_wait_s=0)


def test_concurrent_callers_is_restored_after_the_block() -> None:
    with concurrent_callers(6):
        assert expected_callers() == 6
        with concurrent_callers(2):
            assert expected_callers() == 2
        assert expected_callers() == 6
    assert expected_callers() == 1


def test_default_concurrency_is_one_on_cpu_unless_a_batch_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHRAG_GENERATION_BATCH", raising=False)
    assert default_concurrency("cpu") == 1
    assert default_concurrency("cuda:0") == max_batch_for("cuda") > 1
    monkeypatch.setenv("ZHRAG_GENERATION_BATCH", "6")
    assert default_concurrency("cpu") == 6 == max_batch_for("cpu")
