"""Evaluation throughput: one question at a time vs concurrent questions with batched generation, for A0 and A1.

Both sides run the same compiled graphs on the same N dev questions with the runner's own machinery
(``zhrag.evaluation.runner.run_tasks`` / ``evaluate_one``, rules grader, no result files): the sequential
side with one worker, the batched side with ``--concurrency`` workers whose generation calls the
micro-batcher coalesces (``zhrag.models.batching``). A warm-up question loads the model and starts the
MCP session before any timing. Also reported per variant: how many answers agree between the two sides
(greedy decoding; left padding may change floating-point sums), and the graph overhead of the sequential
runs: graph wall time minus the sum of the node times (``timings_ms``), as a percentage of the wall time.

A1 retrieves from a private copy of the default store (embedded storage admits one process).

Both sides send the same prompts, so llama.cpp's prompt cache in RAM (which would hand the second side every
prompt's KV for free) is turned off for the benchmark (``ZHRAG_LLAMA_CACHE_MIB=0`` unless set), and the warm-up
question is one outside the measured set.

``python benchmarks/eval_throughput.py [--questions N] [--concurrency C]`` writes
``benchmarks/results/eval_throughput.json``; ``--smoke`` uses a tiny random model, a 60-passage index and
4 questions (for tests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zhrag import settings
from zhrag.evaluation.datasets import load_questions
from zhrag.evaluation.runner import evaluate_one, run_tasks
from zhrag.evaluation.scorers import metric_terminal_nodes
from zhrag.graph.builder import build_graph
from zhrag.graph.context import Context
from zhrag.models.batching import concurrent_callers
from zhrag.nodes.common import answer_llm

from bench_common import RESULTS_DIR, machine_info, ratio, tiny_model_dir, write_result
from retrieval_latency import prepare_store

RESULTS = RESULTS_DIR / "eval_throughput.json"
METRICS = ("grade",)


def run_side(graph: Any, variant: str, questions: list[Any], context: Context, workers: int) -> tuple[float, list[dict]]:
    """Wall seconds and records of evaluating ``questions`` with ``workers`` concurrent graph runs."""
    tasks = [
        (lambda question=question: evaluate_one(graph, variant, question, context, METRICS, None))
        for question in questions
    ]
    start = time.perf_counter()
    with concurrent_callers(workers):
        records = list(run_tasks(tasks, workers))
    return time.perf_counter() - start, records


def graph_overhead(records: list[dict]) -> dict[str, float]:
    """Graph wall time minus the sum of node times, summed over records, in ms and % of the wall time."""
    wall = sum(record["timings_ms"]["total"] for record in records)
    nodes = sum(ms for record in records for node, ms in record["timings_ms"].items() if node != "total")
    return {"wall_ms": round(wall, 1), "nodes_ms": round(nodes, 1), "overhead_ms": round(wall - nodes, 1),
            "overhead_pct": round(100.0 * (wall - nodes) / wall, 2) if wall > 0 else None}


def measure_variant(
    variant: str, questions: list[Any], context: Context, workers: int, warm_up: Any
) -> dict[str, Any]:
    """Sequential vs batched questions/s for one variant, answer agreement and graph overhead."""
    graph = build_graph(variant, terminal_nodes=metric_terminal_nodes(list(METRICS)))
    evaluate_one(graph, variant, warm_up, context, METRICS, None)  # loads the model, starts the MCP session
    sequential_s, sequential = run_side(graph, variant, questions, context, 1)
    batched_s, batched = run_side(graph, variant, questions, context, workers)
    by_id = {record["id"]: record["answer"] for record in sequential}
    same = sum(by_id[record["id"]] == record["answer"] for record in batched)
    return {
        "sequential": {"wall_s": round(sequential_s, 4), "questions_per_s": round(len(questions) / sequential_s, 3)},
        "batched": {"wall_s": round(batched_s, 4), "questions_per_s": round(len(questions) / batched_s, 3),
                    "concurrency": workers},
        "speedup": ratio(sequential_s, batched_s),
        "answers_identical": f"{same}/{len(questions)}",
        "graph_overhead": graph_overhead(sequential),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure both variants; write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32, help="first N dev questions")
    parser.add_argument("--concurrency", type=int, default=None, help="batched side's workers (default: per device)")
    parser.add_argument("--variants", nargs="+", default=["a0", "a1"])
    parser.add_argument("--model", default=settings.DEFAULT_LLM)
    parser.add_argument("--device", default=None)
    parser.add_argument("--note", default=None, help="free text recorded with the machine (e.g. CPU contention)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, small index, 4 questions")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    count = 4 if args.smoke else args.questions
    os.environ.setdefault("ZHRAG_LLAMA_CACHE_MIB", "0")
    *questions, warm_up = load_questions(None, limit=count + 1)
    with tempfile.TemporaryDirectory() as workdir:
        model = str(tiny_model_dir(Path(workdir) / "tiny")) if args.smoke else args.model
        # The packaged MiniLM, as when the results were measured: the model's throughput is what is compared here.
        embedder = settings.PACKAGED_EMBEDDER
        retrieval = set(args.variants) - {"a0"}
        store = prepare_store(Path(workdir), args.smoke, settings.qdrant_engine(), embedder) if retrieval else None
        context = Context(
            model=model, device=args.device, qdrant_path=str(store) if store else None, qdrant_url=None, embedder=embedder
        )
        llm = answer_llm(context)
        workers = 2 if args.smoke and args.concurrency is None else (args.concurrency or llm.batch_size)
        variants = {
            variant: measure_variant(variant, questions, context, workers, warm_up) for variant in args.variants
        }
    body = {
        "model": "tiny-random-llama" if args.smoke else args.model,
        "questions": len(questions),
        "concurrency": workers,
        "max_batch": llm.batch_size,
        "llama_prompt_cache_mib": os.environ["ZHRAG_LLAMA_CACHE_MIB"],
        "variants": variants,
    }
    machine = machine_info(llm.load_info["device"], llm.load_info["dtype"], args.note)
    document = write_result(args.out, "eval_throughput", args.smoke, machine, body)
    print(json.dumps(document, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
