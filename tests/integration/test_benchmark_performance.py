"""The generation and evaluation-throughput benchmarks run in smoke mode, and PERFORMANCE.md renders from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rounding import assert_rounded_quotient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def run_benchmark(script: str, out: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(out.read_text("utf-8"))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, shared_kb: Path) -> Path:
    folder = tmp_path_factory.mktemp("results")
    run_benchmark("llamacpp.py", folder / "llamacpp.json")
    run_benchmark("generation.py", folder / "generation.json")
    run_benchmark("eval_throughput.py", folder / "eval_throughput.json")
    return folder


def test_llamacpp_smoke_results_are_measured(results: Path) -> None:
    document = json.loads((results / "llamacpp.json").read_text("utf-8"))
    assert document["benchmark"] == "llamacpp" and document["smoke"] is True and document["engine"] == "llama.cpp"
    load = document["load"]
    assert load["first"]["cache_hit"] is False and load["cached"]["cache_hit"] is True
    assert load["first"]["peak_rss_mib"] > 0 and load["cached"]["process_s"] > 0
    rows = document["generation"]
    assert rows["three_passages"]["prompt_tokens"] > rows["closed_book"]["prompt_tokens"]
    for row in rows.values():
        assert row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0 and row["short_answer_ms"] > 0
    slots = document["parallel_slots"]
    assert list(slots) == ["1", "2"] and slots["1"]["speedup"] == 1.0
    assert_rounded_quotient(slots["2"]["tokens_per_s"], 1, 2 * document["forced_tokens"], None, slots["2"]["wall_s"], 3)


def test_generation_smoke_results_are_measured(results: Path) -> None:
    document = json.loads((results / "generation.json").read_text("utf-8"))
    assert document["benchmark"] == "generation" and document["smoke"] is True
    assert document["machine"]["device"] == "cpu" and document["machine"]["cpus"] >= 1
    load = document["load"]
    assert load["first"]["load_s"] > 0 and load["cached"]["load_s"] > 0
    assert load["cached_speedup"] == pytest.approx(load["first"]["load_s"] / load["cached"]["load_s"], abs=0.006)
    rows = document["generation"]
    assert set(rows) == {"closed_book", "three_passages"}
    assert rows["three_passages"]["prompt_tokens"] > rows["closed_book"]["prompt_tokens"]
    for row in rows.values():
        assert row["ttft_ms"] > 0 and row["short_answer_ms"] > 0 and row["tokens_per_s"] > 0
    batched = document["batched_decode"]["batches"]
    assert list(batched) == ["1", "2"]
    # The decode rate is derived: (median time to N tokens - median time to the first) / (N - 1). On a busy
    # machine that difference can come out at zero or below, and the benchmark then records no rate.
    base = batched["1"]["decode_tokens_per_s"]
    for size, row in batched.items():
        assert row["prefill_ms"] > 0
        if row["decode_tokens_per_s"] is None:
            assert row["decode_step_ms"] <= 0
        else:
            assert row["decode_tokens_per_s"] > 0
            assert_rounded_quotient(row["decode_tokens_per_s"], 1, int(size) * 1000, None, row["decode_step_ms"], 2)
        if base:
            assert row["decode_speedup"] == pytest.approx((row["decode_tokens_per_s"] or 0) / base, abs=0.01)
        else:
            assert row["decode_speedup"] is None
    ratios = document["ratios"]
    assert ratios["ttft_three_passages_vs_closed_book"] == pytest.approx(
        rows["three_passages"]["ttft_ms"] / rows["closed_book"]["ttft_ms"], abs=0.006
    )


def test_eval_throughput_smoke_results_are_measured(results: Path) -> None:
    document = json.loads((results / "eval_throughput.json").read_text("utf-8"))
    assert document["benchmark"] == "eval_throughput" and document["questions"] == 4
    assert set(document["variants"]) == {"a0", "a1"}
    for cell in document["variants"].values():
        sequential, batched = cell["sequential"], cell["batched"]
        assert sequential["wall_s"] > 0 and batched["wall_s"] > 0 and batched["concurrency"] == document["concurrency"]
        # ratios and rates of the unrounded times: rounded to 2 (bench_common.ratio) and 3 decimals, times to 4
        assert_rounded_quotient(cell["speedup"], 2, sequential["wall_s"], 4, batched["wall_s"], 4)
        assert_rounded_quotient(sequential["questions_per_s"], 3, 4, None, sequential["wall_s"], 4)
        same, total = map(int, cell["answers_identical"].split("/"))
        assert total == 4 and 0 <= same <= 4
        overhead = cell["graph_overhead"]
        assert overhead["overhead_ms"] == pytest.approx(overhead["wall_ms"] - overhead["nodes_ms"], abs=0.2)
        assert 0 < overhead["nodes_ms"] <= overhead["wall_ms"]


def test_performance_page_renders_from_the_smoke_results(results: Path, tmp_path: Path) -> None:
    page = tmp_path / "PERFORMANCE.md"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "render_performance.py"), "--results", str(results), "--out", str(page)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    text = page.read_text("utf-8")
    assert text.index("## llama.cpp engine") < text.index("## Generation") < text.index("## Eval throughput")
    assert text.count("smoke run") == 3
    throughput = json.loads((results / "eval_throughput.json").read_text("utf-8"))
    a1 = throughput["variants"]["a1"]
    [row] = [line for line in text.splitlines() if line.startswith("| A1 |")]
    assert f"| {a1['speedup']}× | {a1['answers_identical']} | {a1['graph_overhead']['overhead_pct']} % |" in row
    generation = json.loads((results / "generation.json").read_text("utf-8"))
    assert f"First load / cached load: **{generation['load']['cached_speedup']}×**" in text
