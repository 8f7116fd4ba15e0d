"""Benchmark result files record the load at start and end, and PERFORMANCE.md labels runs busy or quiet by it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import render_performance

        import bench_common

        yield bench_common, render_performance
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_write_result_adds_the_load_at_the_end(modules, tmp_path: Path) -> None:
    bench_common, _ = modules
    machine = {"cpus": 2, "load_average_at_start": [0.1, 0.2, 0.3]}
    document = bench_common.write_result(tmp_path / "x.json", "x", True, machine, {"value": 1})
    written = json.loads((tmp_path / "x.json").read_text("utf-8"))
    assert written == document
    assert written["machine"]["load_average_at_start"] == [0.1, 0.2, 0.3]
    assert len(written["machine"]["load_average_at_end"]) == 3
    assert "load_average_at_end" not in machine  # the caller's dict is left as it was


@pytest.mark.parametrize(
    ("machine", "benchmark", "label"),
    [
        ({"cpus": 2, "load_average_at_start": [0.4], "load_average_at_end": [1.9]}, "x",
         "quiet (1-minute load 0.4 at start, 1.9 at end)"),
        ({"cpus": 2, "load_average_at_start": [1.0], "load_average_at_end": [1.9]}, "x",
         "busy (1-minute load 1.0 at start, 1.9 at end)"),
        ({"cpus": 2, "load_average_at_start": [0.2], "load_average_at_end": [2.6]}, "x",
         "busy (1-minute load 0.2 at start, 2.6 at end)"),
        # older files: one value, taken at the start ...
        ({"cpus": 2, "load_average_at_start": [6.41, 5.54, 3.97]}, "retrieval_engines", "busy (1-minute load 6.41 at start)"),
        # ... or, for benchmarks that called machine_info after their work, at the end
        ({"cpus": 2, "load_average_at_start": [1.23, 1.25, 1.22]}, "llamacpp", "quiet (1-minute load 1.23 at end)"),
        ({"cpus": 2}, "x", None),
    ],
)
def test_load_label(modules, machine: dict, benchmark: str, label: str | None) -> None:
    _, render_performance = modules
    assert render_performance.load_label({"benchmark": benchmark, "machine": machine}) == label


def test_the_page_states_the_rule_and_labels_each_run(modules, tmp_path: Path) -> None:
    _, render_performance = modules
    document = {"benchmark": "other", "created": "2026-12-01T00:00:00+00:00", "smoke": False,
                "machine": {"cpus": 2, "load_average_at_start": [2.04, 2.0, 2.0], "note": "quiet machine"}, "value": 1}
    (tmp_path / "other.json").write_text(json.dumps(document), encoding="utf-8")
    page = render_performance.render(tmp_path)
    assert "Load labels: a run is **busy**" in page
    assert 'machine busy (1-minute load 2.04 at start). The run\'s own note: "quiet machine"' in page
