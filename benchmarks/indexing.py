"""Indexing throughput of the shared KB: the sparse part (jieba + BM25 weights) against the dense part (embedder).

One ``zhrag index`` run (``zhrag.kb.indexing.index_documents``, the code the CLI calls) into a fresh
temporary store, timed by its :class:`~zhrag.kb.indexing.IndexReport`: tokenising and BM25
weighting (sparse), embedding (dense) and writing to the engine (upsert, flush and optimisation). Rates
are chunks (the passages Qdrant stores) per second of each part; the issue's target is at least 1,000/s
for the sparse part.

The dense part is measured cold: the run embeds through a fresh, empty embedding cache unless ``--cache FILE``
names one (``embedded`` in the result says how many chunks were really embedded).

``python benchmarks/indexing.py [--embedder NAME]`` writes ``benchmarks/results/indexing_<embedder>.json``
(default embedder: the store's default); ``--smoke`` indexes the first 30 KB documents (for tests).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zhrag import settings
from zhrag.kb.embedding_cache import EmbeddingCache
from zhrag.kb.indexing import index_documents
from zhrag.kb.sources import iter_documents
from zhrag.kb.store import KnowledgeStore

from bench_common import RESULTS_DIR, machine_info, ratio, write_result

SPARSE_TARGET_PER_S = 1000
SMOKE_DOCUMENTS = 30


def rate(count: int, seconds: float) -> float | None:
    """``count`` per second, to one decimal (``None`` when no time was measured)."""
    return round(count / seconds, 1) if seconds > 0 else None


def main(argv: list[str] | None = None) -> int:
    """Index the KB once and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb-source", type=Path, default=None, help="KB source (default: the shared KB)")
    parser.add_argument("--engine", default=settings.qdrant_engine(), help="embedded engine (edge or local)")
    parser.add_argument("--batch-size", type=int, default=128, help="chunks per embedding/upsert batch")
    parser.add_argument("--embedder", default=settings.DEFAULT_EMBEDDER, help="dense embedder (packaged alias or path)")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache file (default: a fresh, empty one)")
    parser.add_argument("--note", default=None, help="free text recorded with the machine (e.g. CPU contention)")
    parser.add_argument("--smoke", action="store_true", help=f"only the first {SMOKE_DOCUMENTS} documents")
    parser.add_argument("--out", type=Path, default=None, help="default: results/indexing_<embedder>.json")
    args = parser.parse_args(argv)
    out = args.out or RESULTS_DIR / f"indexing_{Path(args.embedder).name}.json"
    source = args.kb_source or settings.default_kb_source()
    documents = iter_documents(source)
    if args.smoke:
        documents = itertools.islice(documents, SMOKE_DOCUMENTS)
    machine = machine_info(note=args.note)
    with tempfile.TemporaryDirectory(prefix="zhrag-index-bench-") as work:
        cache = EmbeddingCache(args.cache or Path(work) / "embeddings.sqlite")
        with KnowledgeStore(path=Path(work) / "qdrant", engine=args.engine, embedder=args.embedder) as store:
            clock = time.perf_counter()
            _ = store.embedder  # load the model outside the timed run
            load_s = time.perf_counter() - clock
            report = index_documents(store, documents, batch_size=args.batch_size, progress=True, cache=cache)
            machine["device"] = store.embedder.device
    chunks = report.chunks
    parts: dict[str, Any] = {
        name: {"seconds": round(seconds, 4), "chunks_per_s": rate(chunks, seconds)}
        for name, seconds in (
            ("sparse", report.sparse_seconds),
            ("dense", report.dense_seconds),
            ("upsert", report.upsert_seconds),
            ("total", report.seconds),
        )
    }
    body = {
        "kb_source": str(source),
        "engine": args.engine,
        "embedder": args.embedder,
        "embedder_load_s": round(load_s, 2),
        "embedded": report.embedded,
        "cache": "fresh" if args.cache is None else str(args.cache),
        "batch_size": args.batch_size,
        "documents": report.documents,
        "chunks": chunks,
        "parts": parts,
        "sparse_vs_dense_speed": ratio(report.dense_seconds, report.sparse_seconds),
        "sparse_target_per_s": SPARSE_TARGET_PER_S,
        "sparse_target_met": (parts["sparse"]["chunks_per_s"] or 0) >= SPARSE_TARGET_PER_S,
    }
    write_result(out, "indexing", args.smoke, machine, body)
    print(f"wrote {out}: {chunks} chunks in {report.seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
