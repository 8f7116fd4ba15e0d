"""Helpers shared by the generation and evaluation benchmarks: machine/device info, result files, a tiny model.

Imported by the benchmark scripts as a sibling module (``python benchmarks/<name>.py`` puts this folder
on ``sys.path``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: The load average when the benchmark script imported this module, i.e. before its own work began (the
#: benchmarks call ``machine_info`` at different points, some only after they have run).
_LOAD_AT_IMPORT = [round(value, 2) for value in os.getloadavg()]


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages now, rounded to 2 decimals."""
    return [round(value, 2) for value in os.getloadavg()]


def machine_info(device: str | None = None, dtype: str | None = None, note: str | None = None) -> dict[str, Any]:
    """Platform, CPU count, load average, torch version and the accelerator used, plus a free-text ``note``.

    ``load_average_at_start`` is the load when the script started (this module's import), whenever this is called;
    :func:`write_result` adds ``load_average_at_end``.
    """
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(_LOAD_AT_IMPORT),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "dtype": dtype,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if note:
        info["note"] = note
    return info


def write_result(path: Path, benchmark: str, smoke: bool, machine: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Write ``{"benchmark", "created", "smoke", "machine", **body}`` to ``path`` as JSON; return the document.

    ``machine`` gets ``load_average_at_end`` (the load now, as the run ends) beside ``load_average_at_start``, so
    the rendered page can say whether other work shared the CPUs (``render_performance.load_label``).
    """
    machine = {**machine, "load_average_at_end": load_average()}
    document = {
        "benchmark": benchmark,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "smoke": smoke,
        "machine": machine,
        **body,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return document


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator`` rounded to 2 decimals, or ``None`` when the denominator is not positive."""
    return round(numerator / denominator, 2) if denominator > 0 else None


def median(values: Sequence[float]) -> float:
    """The median of measured values."""
    return statistics.median(values)


def tiny_model_dir(path: Path) -> Path:
    """Save a random two-layer Llama with a byte-level BPE tokenizer to ``path`` (the model of ``--smoke`` runs)."""
    tests_dir = str(Path(__file__).resolve().parent.parent / "tests")  # the test fixtures live there, not in zhrag
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from tiny_models import tiny_llama_dir

    return tiny_llama_dir(path, max_positions=8192)
