"""Micro-batching: concurrent ``generate`` calls from several threads share one forward pass.

The graph answers one question per run and each node asks for one completion; the evaluation runner
(or a server) runs several graphs on threads. A :class:`MicroBatcher` sits between ``LocalLLM`` and the
shared model and coalesces the calls that agree on everything but their prompts (same adapter, token
budget and stop strings: a *batch key*) into one batched call, left padded by the runtime.

Protocol (no background thread): the first caller of a key opens a batch and becomes its *leader*;
later callers of that key join it and block. The leader waits until the batch holds ``expected``
requests (see :func:`expected_callers`), holds ``max_batch`` prompts, or ``max_wait_s`` has passed;
then it takes the batcher's run lock (one batch on the model at a time) and closes the batch. Callers
that arrive while another batch occupies the model keep joining the waiting batch, so batches grow by
themselves under load. The leader runs the batch and hands each caller its own slice of the results;
an exception reaches every caller of the batch.

With one caller at a time (``expected`` 1, the default) nothing waits: a lone call runs at once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from zhrag import settings
from zhrag.errors import ConfigError

#: Prompts per forward pass by device type, when ``ZHRAG_GENERATION_BATCH`` does not set it.
DEFAULT_MAX_BATCH = {"cpu": 4, "mps": 16, "cuda": 32}
#: Concurrent questions of an evaluation run by device type, when neither ``--concurrency`` nor
#: ``ZHRAG_GENERATION_BATCH`` says otherwise. One on CPU: there, batched evaluation answered fewer questions/s
#: than one-at-a-time runs on 2 cores (benchmarks/results/eval_throughput.json, rendered in docs/PERFORMANCE.md):
#: long prompts make prefill compute-bound, and a batch decodes until its longest answer stops.
DEFAULT_CONCURRENCY = {"cpu": 1}
#: Longest wait (ms) of a batch's leader for companions, when ``ZHRAG_BATCH_WAIT_MS`` does not set it.
DEFAULT_MAX_WAIT_MS = 5.0

#: Runs one batch: ``(key, prompts) -> completions``, one per prompt.
BatchRunner = Callable[[Hashable, list[Any]], list[Any]]

_expected_lock = threading.Lock()
_expected = [1]


def max_batch_for(device: str) -> int:
    """Prompts per forward pass on ``device``: ``ZHRAG_GENERATION_BATCH`` if set, else :data:`DEFAULT_MAX_BATCH`.

    Raises:
        ConfigError: ``ZHRAG_GENERATION_BATCH`` is not a positive integer.
    """
    return settings.positive_env_int(
        "ZHRAG_GENERATION_BATCH", DEFAULT_MAX_BATCH.get(device.partition(":")[0], DEFAULT_MAX_BATCH["cpu"])
    )


def default_concurrency(device: str) -> int:
    """Questions an evaluation runs at once on ``device`` by default.

    :data:`DEFAULT_CONCURRENCY` for its type unless ``ZHRAG_GENERATION_BATCH`` is set, else the batch
    limit (:func:`max_batch_for`), so that concurrent questions fill the micro-batches.

    Raises:
        ConfigError: ``ZHRAG_GENERATION_BATCH`` is not a positive integer.
    """
    limit = max_batch_for(device)
    if os.environ.get("ZHRAG_GENERATION_BATCH", "").strip():
        return limit
    return DEFAULT_CONCURRENCY.get(device.partition(":")[0], limit)


def max_wait_s() -> float:
    """The leader's longest wait in seconds: ``ZHRAG_BATCH_WAIT_MS`` if set, else :data:`DEFAULT_MAX_WAIT_MS`.

    Raises:
        ConfigError: ``ZHRAG_BATCH_WAIT_MS`` is not a non-negative number.
    """
    value = os.environ.get("ZHRAG_BATCH_WAIT_MS", "").strip()
    try:
        milliseconds = float(value) if value else DEFAULT_MAX_WAIT_MS
    except ValueError:
        milliseconds = -1.0
    if milliseconds < 0:
        raise ConfigError(f"ZHRAG_BATCH_WAIT_MS must be a number of milliseconds >= 0, got {value!r}")
    return milliseconds / 1000.0


def expected_callers() -> int:
    """How many threads are expected to call ``generate`` together (1 unless inside :func:`concurrent_callers`)."""
    with _expected_lock:
        return _expected[0]


@contextmanager
def concurrent_callers(count: int) -> Iterator[None]:
    """Tell every batcher that ``count`` threads generate together for the block (the evaluation runner's workers).

    A leader then waits (up to ``max_wait_s``) for that many companions instead of running alone.
    """
    with _expected_lock:
        previous, _expected[0] = _expected[0], max(1, int(count))
    try:
        yield
    finally:
        with _expected_lock:
            _expected[0] = previous


class _Batch:
    """Requests gathered under one key: their prompts, where each caller's slice starts, and the outcome."""

    def __init__(self) -> None:
        self.prompts: list[Any] = []
        self.requests = 0
        self.closed = False
        self.done = threading.Event()
        self.results: list[Any] = []
        self.error: BaseException | None = None

    def add(self, prompts: Sequence[Any]) -> int:
        """Append a caller's prompts; return where its slice of the results starts."""
        start = len(self.prompts)
        self.prompts.extend(prompts)
        self.requests += 1
        return start


class MicroBatcher:
    """Coalesce concurrent calls with the same key into one call of ``run``.

    ``run_lock`` is held while a batch runs (one batch at a time); pass the model's own re-entrant lock,
    so a thread that already holds it (inside ``LocalLLM.hf_model``) can still generate.

    Attributes:
        max_batch: A batch stops taking companions once it holds this many prompts.
        max_wait_s: Longest time a leader waits for the expected companions.
        batches: Batches run so far (for tests and benchmarks).
        largest: Most prompts run in one batch so far.
    """

    def __init__(
        self, run: BatchRunner, *, max_batch: int, max_wait_s: float, run_lock: AbstractContextManager[Any] | None = None
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches = 0
        self.largest = 0
        self._run = run
        self._state = threading.Condition()
        self._open: dict[Hashable, _Batch] = {}
        self._run_lock = run_lock if run_lock is not None else threading.Lock()

    def submit(self, key: Hashable, prompts: Sequence[Any]) -> list[Any]:
        """Completions of ``prompts`` (in order), generated in one batch with any concurrent calls of ``key``.

        Raises:
            Whatever ``run`` raised for the batch this call was part of.
        """
        prompts = list(prompts)
        if not prompts:
            return []
        with self._state:
            current = self._open.get(key)
            leader = current is None or current.closed or len(current.prompts) >= self.max_batch
            batch = self._open[key] = _Batch() if leader or current is None else current
            start = batch.add(prompts)
            self._state.notify_all()
        if leader:
            self._lead(key, batch)
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results[start : start + len(prompts)]

    def _lead(self, key: Hashable, batch: _Batch) -> None:
        """Wait for companions, take the model, close the batch, run it and publish the outcome."""
        deadline = time.monotonic() + self.max_wait_s
        target = expected_callers()
        with self._state:
            while batch.requests < target and len(batch.prompts) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._state.wait(left)
        with self._run_lock:
            with self._state:
                batch.closed = True
                if self._open.get(key) is batch:
                    del self._open[key]
            try:
                results = self._run(key, batch.prompts)
                if len(results) != len(batch.prompts):
                    raise RuntimeError(f"batch runner returned {len(results)} completions for {len(batch.prompts)} prompts")
                batch.results = list(results)
            except BaseException as error:  # noqa: BLE001 - re-raised in every caller of the batch
                batch.error = error
            finally:
                self.batches += 1
                self.largest = max(self.largest, len(batch.prompts))
                batch.done.set()
