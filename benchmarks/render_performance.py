"""Render ``docs/PERFORMANCE.md`` from every ``benchmarks/results/*.json`` present (never edit the page by hand).

Generation, evaluation-throughput and lexical-ablation results get their own tables; any other result file
is rendered generically: every latency cell (an object with ``p50_ms``, ``p95_ms`` and ``qps``) becomes a
row of a latency table named by its path, and the remaining numbers and strings a settings table.

    python benchmarks/render_performance.py [--results DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "PERFORMANCE.md"
#: Sections come in this order; other result files follow alphabetically.
ORDER = (
    "llamacpp", "generation", "eval_throughput", "indexing", "ingestion_scale", "retrieval_latency", "retrieval_scale",
    "retrieval_engines", "retrieval_lexical",
)
#: Section titles that are not the benchmark name capitalised.
TITLES = {"llamacpp": "llama.cpp engine (the default model)", "generation": "Generation (transformers engine)"}
_LATENCY_KEYS = {"p50_ms", "p95_ms", "qps"}
_SKIP = {"benchmark", "created", "date", "smoke", "machine"}
#: Benchmarks whose older result files (without ``load_average_at_end``) took ``load_average_at_start`` only after
#: their work had run (they called ``machine_info`` last): that value is the load at the end.
_LOAD_TAKEN_AT_END = {"llamacpp", "generation", "eval_throughput", "tool_call_token"}
#: A run counts as busy when the 1-minute load at its start was at least this share of the CPUs (other work was
#: running before the benchmark began) ...
BUSY_START_PER_CPU = 0.5
#: ... or when the 1-minute load at its end exceeded the CPU count (more runnable threads than cores: a benchmark's
#: own threads use at most every core, so the CPUs were shared).
BUSY_END_PER_CPU = 1.0


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table."""
    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:,.1f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]


def load_label(document: dict[str, Any]) -> str | None:
    """``"quiet (…)"`` or ``"busy (…)"`` from the recorded 1-minute load averages, or ``None`` when none is recorded.

    The rule (``BUSY_START_PER_CPU``, ``BUSY_END_PER_CPU``): busy when the load at start was at least half the CPU
    count, or the load at the end exceeded the CPU count; otherwise quiet. The label names the loads it used.
    """
    machine = document.get("machine") or {}
    cpus = machine.get("cpus") or 1
    start, end = machine.get("load_average_at_start"), machine.get("load_average_at_end")
    if start and not end and str(document.get("benchmark")) in _LOAD_TAKEN_AT_END:
        start, end = None, start
    if not start and not end:
        return None
    busy = bool(start and start[0] >= BUSY_START_PER_CPU * cpus) or bool(end and end[0] > BUSY_END_PER_CPU * cpus)
    loads = [f"{start[0]} at start" if start else "", f"{end[0]} at end" if end else ""]
    return f"{'busy' if busy else 'quiet'} (1-minute load {', '.join(part for part in loads if part)})"


def machine_line(document: dict[str, Any]) -> str:
    """One line: when, where (device, GPU, CPUs, load) and whether it was a smoke run."""
    machine = document.get("machine") or {}
    parts = [f"created {document.get('created') or document.get('date') or 'unknown'}"]
    if machine.get("device"):
        parts.append(f"device {machine['device']}" + (f" ({machine['dtype']})" if machine.get("dtype") else ""))
    if machine.get("gpu"):
        parts.append(f"GPU {machine['gpu']}")
    if machine.get("cpus"):
        parts.append(f"{machine['cpus']} CPUs")
    label = load_label(document)
    parts.append(f"machine {label}" if label else "load not recorded")
    if document.get("smoke"):
        parts.append("**smoke run (plumbing check, not a measurement)**")
    line = "; ".join(parts) + "."
    return line + (f" The run's own note: \"{machine['note']}\"" if machine.get("note") else "")


def generation(document: dict[str, Any]) -> list[str]:
    """Load (first vs cached) and generation (closed-book vs 3 passages) tables."""
    load = document["load"]
    lines = [f"Model `{document['model']}`, medians of {document['repeats']} repetitions.", ""]
    lines += table(
        ["load", "kind", "dequantized cache hit", "load_llm s", "process s"],
        [[name, load[name]["kind"], load[name]["cache_hit"], load[name]["load_s"], load[name]["process_s"]]
         for name in ("first", "cached")],
    )
    lines += ["", f"First load / cached load: **{load['cached_speedup']}×**.", ""]
    rows = document["generation"]
    lines += table(
        ["prompt", "prompt tokens", "time to first token ms", "ms / output token", "tokens/s (N forced)",
         "short answer ms", "short answer tokens"],
        [[name.replace("_", " "), row["prompt_tokens"], row["ttft_ms"], row["per_output_token_ms"],
          f"{row['tokens_per_s']} (N={row['forced_tokens']})", row["short_answer_ms"], row["short_answer_tokens"]]
         for name, row in rows.items()],
    )
    ratios = document["ratios"]
    summary = (
        f"3 passages vs closed-book: time to first token ×{ratios['ttft_three_passages_vs_closed_book']}, "
        f"short answer ×{ratios['short_answer_three_passages_vs_closed_book']}."
    )
    lines += ["", summary]
    batched = document.get("batched_decode")
    if batched:
        lines += ["", f"Batched decode ({batched['prompt'].replace('_', ' ')} prompt repeated, {batched['forced_tokens']} forced tokens):", ""]
        lines += table(
            ["batch", "prefill ms", "ms / decode step", "decode tokens/s", "decode speedup", "tokens/s (all)"],
            [[batch, row["prefill_ms"], row["decode_step_ms"], row["decode_tokens_per_s"], f"{row['decode_speedup']}×",
              row["tokens_per_s"]] for batch, row in batched["batches"].items()],
        )
    return lines


def llamacpp(document: dict[str, Any]) -> list[str]:
    """The default model on llama.cpp: load, prefill / decode per prompt, parallel slots, transformers comparison."""
    settings = document["settings"]
    lines = [
        f"Model `{document['model']}` on llama.cpp ({settings['threads']} threads, {settings['parallel_slots']} slots, "
        f"context {settings['n_ctx']}), medians of {document['repeats']} repetitions, prompt cache off.",
        "",
    ]
    load = document["load"]
    lines += table(
        ["load", "checked GGUF already there", "load_llm s", "process s (import + load + 1 token)", "peak RSS MiB"],
        [[name, load[name]["cache_hit"], load[name]["load_s"], load[name]["process_s"], load[name]["peak_rss_mib"]]
         for name in ("first", "cached")],
    )
    lines += ["", f"First process / cached process: **{load['cached_speedup']}×**.", ""]
    lines += table(
        ["prompt", "prompt tokens", "prefill ms", "prefill tokens/s", "ms / output token", "decode tokens/s",
         "short answer ms", "short answer tokens"],
        [[name.replace("_", " "), row["prompt_tokens"], row["prefill_ms"], row["prefill_tokens_per_s"],
          row["decode_ms_per_token"], row["decode_tokens_per_s"], row["short_answer_ms"], row["short_answer_tokens"]]
         for name, row in document["generation"].items()],
    )
    lines += ["", f"Parallel slots (different closed-book prompts at once, {document['forced_tokens']} forced tokens each):", ""]
    lines += table(
        ["requests at once", "wall s", "tokens/s (all)", "speedup"],
        [[count, row["wall_s"], row["tokens_per_s"], f"{row['speedup']}×"] for count, row in document["parallel_slots"].items()],
    )
    other = document.get("transformers")
    if other:
        lines += ["", "The same GGUF on the transformers engine (dequantized to float32 once, then cached):", ""]
        lines += table(
            ["load", "dequantized cache hit", "load_llm s", "process s", "peak RSS MiB"],
            [[name, other["load"][name]["cache_hit"], other["load"][name]["load_s"], other["load"][name]["process_s"],
              other["load"][name]["peak_rss_mib"]] for name in ("first", "cached")],
        )
        lines += ["", f"Closed-book short answer: {other['closed_book_short_answer_ms']} ms "
                      f"(**{other['short_answer_ratio']}×** the llama.cpp time)."]
    return lines


def eval_throughput(document: dict[str, Any]) -> list[str]:
    """Sequential vs batched questions/s and graph overhead per variant."""
    intro = (
        f"Model `{document['model']}`, {document['questions']} dev questions, batched side with "
        f"{document['concurrency']} concurrent questions (batch limit {document['max_batch']}: llama.cpp's parallel "
        "slots, or the transformers engine's micro-batch)."
    )
    lines = [intro, ""]
    rows = [
        [variant.upper(), cell["sequential"]["questions_per_s"], cell["batched"]["questions_per_s"],
         f"{cell['speedup']}×", cell["answers_identical"], f"{cell['graph_overhead']['overhead_pct']} %"]
        for variant, cell in document["variants"].items()
    ]
    return lines + table(
        ["variant", "sequential q/s", "batched q/s", "speedup", "same answers", "graph overhead (sequential)"], rows
    )


def retrieval_lexical(document: dict[str, Any]) -> list[str]:
    """Recall@k and MRR per index configuration and query set."""
    sets = list(document["sets"])
    lines = [f"KB `{document.get('kb')}`; query sets: " + ", ".join(f"{name} ({n})" for name, n in document["sets"].items()), ""]
    rows = [
        [row["row"]["name"], row.get("chunks"), row.get("index_seconds")]
        + [f"{row['sets'][name]['recall@5']:.3f} / {row['sets'][name]['mrr']:.3f}" for name in sets]
        for row in document["rows"]
    ]
    return lines + table(["configuration", "chunks", "index s", *[f"{name} R@5 / MRR" for name in sets]], rows)


def indexing(document: dict[str, Any]) -> list[str]:
    """Seconds and chunks/s of each indexing part (sparse, dense, upsert) and of the whole run."""
    intro = (
        f"{document['documents']:,} documents → {document['chunks']:,} chunks into the `{document['engine']}` engine, "
        f"embedder `{document['embedder']}` on {document['machine'].get('device')}, batches of {document['batch_size']}"
        + (f"; {document['embedded']:,} chunks embedded (cold cache)." if "embedded" in document else ".")
    )
    rows = [[name, part["seconds"], part["chunks_per_s"]] for name, part in document["parts"].items()]
    met = "met" if document["sparse_target_met"] else "**not met**"
    summary = (
        f"Sparse part {document['sparse_vs_dense_speed']}× as fast as the dense part; "
        f"target ≥ {document['sparse_target_per_s']:,} chunks/s for the sparse part: {met}."
    )
    return [intro, ""] + table(["part", "seconds", "chunks/s"], rows) + ["", summary]


def ingestion_scale(document: dict[str, Any]) -> list[str]:
    """Streaming ingestion per dump size, the kill and resume, and the projection to a full zhwiki dump."""
    intro = (
        "Synthetic WikiExtractor dumps of KB paragraphs (seed "
        f"{document['seed']}); `pipeline` reads, chunks and BM25-weights every document without a store, `index` is "
        "`zhrag index DUMP --sparse-only` into a fresh embedded Qdrant Edge store; each in a fresh process."
    )
    rows = [
        [f"{row['articles']:,}", row["dump_mib"], f"{row['chunks']:,}", row["pipeline"]["chunks_per_s"],
         row["pipeline"]["peak_rss_mib"], row["index"]["chunks_per_s"], row["index"]["seconds"],
         row["index"]["peak_rss_mib"]]
        for row in document["sizes"]
    ]
    header = ["articles", "dump MiB", "chunks", "pipeline chunks/s", "pipeline peak MiB", "index chunks/s",
              "index s", "index peak MiB"]
    resume = document["kill_and_resume"]
    projection = document["projection"]
    dense = ", ".join(f"{name} {hours:,} h" for name, hours in projection["dense_hours"].items())
    summary = [
        f"Killed (SIGKILL) after {resume['killed_after_s']} s with {resume['checkpoint_documents']:,} documents "
        f"checkpointed; the next run skipped {resume['skipped_documents']:,} and wrote the other "
        f"{resume['resumed_documents']:,} ({resume['resumed_chunks']:,} chunks) in {resume['resumed_wall_s']} s.",
        "",
        f"Projected to {projection['articles']:,} articles ({projection['chunks_per_article']} chunks each, "
        f"{projection['chunks']:,} chunks): the sparse half {projection['sparse_hours']} h; the dense half at the "
        f"cold rates of the indexing benchmark: {dense}.",
    ]
    return [intro, ""] + table(header, rows) + [""] + summary


def retrieval_scale(document: dict[str, Any]) -> list[str]:
    """Direct store vs MCP latency, and the engine alone per mode, at each collection size."""
    collection = document["collection"]
    intro = (
        f"Synthetic Qdrant Edge collections: passages of KB-distributed jieba terms "
        f"({collection['vocabulary_terms']:,}-term vocabulary, {collection['mean_terms_per_passage']} terms each, "
        f"BM25 weights as indexed) and random {collection['dimension']}-d unit vectors; "
        f"{document['queries']} reading-comprehension questions, top {document['top_k']}, one at a time."
    )
    rows = []
    for cell in document["sizes"].values():
        build = cell["build"]
        engine = cell["engine"]
        rows.append([
            f"{cell['points']:,}",
            f"{build['upsert_s']} + {build['flush_optimize_s']}",
            f"{cell['store']['p50_ms']} / {cell['store']['p95_ms']}",
            f"{cell['mcp']['p50_ms']} / {cell['mcp']['p95_ms']}",
            cell["mcp"]["qps"],
            cell["mcp_overhead_ms_p50"],
            *[f"{engine[mode]['p50_ms']} / {engine[mode]['p95_ms']}" for mode in ("hybrid", "dense", "sparse")],
        ])
    header = [
        "points", "build s (upsert + optimise)", "direct store p50 / p95 ms", "MCP qdrant-find p50 / p95 ms",
        "MCP queries/s", "MCP overhead p50 ms", "engine hybrid p50 / p95 ms", "engine dense", "engine sparse",
    ]
    return [intro, ""] + table(header, rows)


def latency_cells(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every latency cell (``p50_ms``, ``p95_ms``, ``qps``) under ``value``, with its dotted path."""
    if isinstance(value, dict):
        if set(value) >= _LATENCY_KEYS:
            yield path, value
            return
        for key, inner in value.items():
            yield from latency_cells(inner, f"{path}.{key}" if path else str(key))


def scalars(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every number, string or boolean under ``value`` outside latency cells, with its dotted path."""
    if isinstance(value, dict):
        if set(value) >= _LATENCY_KEYS:
            return
        for key, inner in value.items():
            if not path and key in _SKIP:
                continue
            yield from scalars(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (int, float, str, bool)):
        yield path, value


def generic(document: dict[str, Any]) -> list[str]:
    """A latency table and a table of the other values, for result files without their own renderer."""
    lines: list[str] = []
    cells = list(latency_cells({k: v for k, v in document.items() if k not in _SKIP}))
    if cells:
        lines += table(["path", "n", "p50 ms", "p95 ms", "mean ms", "queries/s"],
                       [[path, cell.get("n"), cell["p50_ms"], cell["p95_ms"], cell.get("mean_ms"), cell["qps"]]
                        for path, cell in cells])
        lines.append("")
    values = list(scalars(document))
    if values:
        lines += table(["setting / result", "value"], [[path, value] for path, value in values])
    return lines


RENDERERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "llamacpp": llamacpp,
    "generation": generation,
    "eval_throughput": eval_throughput,
    "retrieval_lexical": retrieval_lexical,
    "indexing": indexing,
    "ingestion_scale": ingestion_scale,
    "retrieval_scale": retrieval_scale,
}


def render(results_dir: Path) -> str:
    """The Markdown page for every ``*.json`` in ``results_dir``."""
    def place(path: Path) -> tuple[int, str]:  # indexing_<embedder>.json sorts with indexing
        ranks = [rank for rank, name in enumerate(ORDER) if path.stem == name or path.stem.startswith(f"{name}_")]
        return (max(ranks) if ranks else len(ORDER), path.stem)

    files = sorted(results_dir.glob("*.json"), key=place)
    lines = [
        "# Performance",
        "",
        "Generated by `python benchmarks/render_performance.py` from `benchmarks/results/*.json`; do not edit by hand.",
        "Each benchmark compares two things in one run, so ratios stay fair on a noisy machine.",
        "",
        (
            f"Load labels: a run is **busy** when the 1-minute load average at its start was at least "
            f"{BUSY_START_PER_CPU:g} × the CPU count (other work was running) or at its end above "
            f"{BUSY_END_PER_CPU:g} × the CPU count (more runnable threads than cores), else **quiet**. Older result "
            "files recorded one load average only (at the start, or for llama.cpp, generation, eval throughput and "
            "tool-call token at the end); files that recorded none say so. On a busy run absolute times are upper "
            "bounds."
        ),
    ]
    for path in files:
        document = json.loads(path.read_text(encoding="utf-8"))
        name = str(document.get("benchmark") or path.stem)
        title = TITLES.get(name, name.replace("_", " ").capitalize())
        if name == "indexing" and document.get("embedder"):
            title += f" ({document['embedder']})"
        lines += ["", f"## {title}", "", f"From `{path.name}`. " + machine_line(document), ""]
        lines += RENDERERS.get(name, generic)(document)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of result JSON files")
    parser.add_argument("--out", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args.results), encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
