"""Retrieval latency of the embedded Qdrant engines: Qdrant Edge (default) against qdrant-client local mode.

Two workloads, each searched sequentially by one client, in three modes (hybrid = BM25 + dense fused
with weighted RRF, dense only, BM25/sparse only):

- ``kb``: the shared knowledge base as indexed by ``zhrag index`` (default store, collection
  ``zhrag_kb``), queried with reading-comprehension questions. The store directory is copied to a
  temporary directory first (the user's store is never opened, so never locked); the engine that is
  missing there is filled with ``zhrag.kb.migration.copy_collection``. ``store`` timings are
  ``Retriever.search`` end to end (query embedding and tokenisation included); ``engine``
  timings run the backend alone on pre-encoded queries.
- ``synthetic``: random points (384-d unit dense vectors, sparse vectors of about 30 terms drawn from
  a Zipf-like 50k vocabulary) and random queries, engine only. Local mode scores BM25 in Python, so it
  gets fewer queries there (``--local-queries``), and it is built in memory: its search is the same
  as on disk, but writing 100k points through its SQLite persistence takes about half an hour here.

``python benchmarks/retrieval_engines.py`` writes ``benchmarks/results/retrieval_engines.json``;
``--smoke`` runs tiny sizes (a few KB passages indexed afresh) for tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from zhrag import settings
from zhrag.kb import lexical
from zhrag.kb.indexing import index_sources
from zhrag.kb.migration import copy_collection
from zhrag.kb.qdrant_backends import Backend, ClientBackend, PointData
from zhrag.kb.qdrant_edge_backend import EdgeBackend
from zhrag.kb.retrieval import Retriever
from zhrag.kb.store import PREFETCH_MIN, PREFETCH_PER_RESULT, SEARCH_MODES, KnowledgeStore, point_id

ENGINES = ("edge", "local")
RESULTS = Path(__file__).resolve().parent / "results" / "retrieval_engines.json"
WARMUP = 3
SYNTHETIC_DIM = 384
SYNTHETIC_VOCABULARY = 50_000
SYNTHETIC_TERMS = 30
QUERY_TERMS = 6


def latency(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean in milliseconds and sequential queries per second."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(p95 * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "qps": round(len(ordered) / sum(ordered), 1),
    }


def timed(call: Callable[[Any], Any], queries: Sequence[Any], desc: str) -> dict[str, float]:
    """Latency of ``call`` over ``queries`` after a few warm-up calls."""
    for query in queries[:WARMUP]:
        call(query)
    seconds = []
    for query in tqdm(queries, desc=desc, unit="q", leave=False):
        start = time.perf_counter()
        call(query)
        seconds.append(time.perf_counter() - start)
    return latency(seconds)


def encode_queries(embedder: Any, questions: Sequence[str]) -> list[tuple[list[float], tuple[list[int], list[float]]]]:
    """Questions encoded as the store encodes them: (dense vector, (sparse indices, values))."""
    dense = embedder.queries(questions).tolist()
    sparse = [lexical.query_vector(question) for question in questions]
    return [(d, (list(s.indices), list(s.values))) for d, s in zip(dense, sparse, strict=True)]


def backend_search(backend: Backend, mode: str, top_k: int, dense_weight: float) -> Callable[[Any], Any]:
    """A one-argument search of ``backend`` on a pre-encoded (dense, sparse) query in ``mode``."""
    prefetch = max(PREFETCH_MIN, PREFETCH_PER_RESULT * top_k)

    def search(query: tuple[list[float], tuple[list[int], list[float]]]) -> Any:
        dense, sparse = query
        return backend.search(
            None if mode == "sparse" else dense,
            None if mode == "dense" else sparse,
            limit=top_k,
            prefetch=prefetch,
            dense_weight=dense_weight,
        )

    return search


def open_backend(engine: str, path: Path | str, collection: str) -> Backend:
    """The backend of ``engine`` for ``collection`` at ``path`` (``":memory:"``: local mode in memory)."""
    return EdgeBackend(path, collection) if engine == "edge" else ClientBackend(collection, path=str(path))


def prepare_kb(args: argparse.Namespace, work: Path) -> Path:
    """A private copy of the KB store holding the collection in both engines; returns its path."""
    store_path = work / "kb"
    if args.kb_source:
        with KnowledgeStore(args.collection, path=store_path, engine="local", embedder=args.embedder) as local:
            index_sources(local, [args.kb_source], progress=True)
    else:
        source = Path(args.qdrant_path).expanduser()
        shutil.copytree(source, store_path, ignore=shutil.ignore_patterns(".lock"))
    with (
        KnowledgeStore(args.collection, path=store_path, engine="local", embedder=args.embedder) as local,
        KnowledgeStore(args.collection, path=store_path, engine="edge", embedder=args.embedder) as edge,
    ):
        if not local.exists() and not edge.exists():
            raise SystemExit(f"no collection {args.collection!r} in {args.qdrant_path}: run `zhrag index` first")
        if not edge.exists():
            copy_collection(local, edge, progress=True)
        elif not local.exists():
            copy_collection(edge, local, progress=True)
    return store_path


def kb_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Store and engine latencies of both engines on the KB, and how often their hybrid top-k agree."""
    store_path = prepare_kb(args, work)
    with Path(args.questions).open(encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in itertools.islice(handle, args.queries)]
    results: dict[str, Any] = {}
    rankings: dict[str, list[list[str]]] = {}
    for engine in ENGINES:
        with KnowledgeStore(args.collection, path=store_path, engine=engine, embedder=args.embedder) as store:
            points, dense_weight, embedder = store.count(), store.dense_weight, store.embedder
            retriever = Retriever(store)
            rankings[engine] = [[p["id"] for p in retriever.search(q, args.top_k)] for q in questions]
            results[engine] = {
                "store": {
                    mode: timed(lambda q, m=mode, r=retriever: r.search(q, args.top_k, mode=m), questions, f"kb {engine} {mode}")
                    for mode in SEARCH_MODES
                }
            }
    encoded = encode_queries(embedder, questions)
    for engine in ENGINES:
        backend = open_backend(engine, store_path, args.collection)
        try:
            results[engine]["engine"] = {
                mode: timed(backend_search(backend, mode, args.top_k, dense_weight), encoded, f"kb {engine} {mode}")
                for mode in SEARCH_MODES
            }
        finally:
            backend.close()
    same = sum(a == b for a, b in zip(rankings["edge"], rankings["local"], strict=True))
    return {
        "points": points,
        "queries": len(questions),
        "questions_file": str(args.questions),
        "hybrid_top_k_identical": f"{same}/{len(questions)}",
        "results": results,
    }


def synthetic_data(points: int, queries: int, seed: int) -> tuple[np.ndarray, list[np.ndarray], list[Any]]:
    """Unit dense vectors, sparse term ids (Zipf-like vocabulary) and encoded random queries."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((points, SYNTHETIC_DIM), dtype=np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    weights = 1.0 / (np.arange(SYNTHETIC_VOCABULARY) + 10.0)
    weights /= weights.sum()
    draws = rng.choice(SYNTHETIC_VOCABULARY, size=(points, SYNTHETIC_TERMS + 4), p=weights)
    terms = [np.unique(row)[:SYNTHETIC_TERMS] for row in draws]
    query_dense = rng.standard_normal((queries, SYNTHETIC_DIM), dtype=np.float32)
    query_dense /= np.linalg.norm(query_dense, axis=1, keepdims=True)
    query_terms = [np.unique(rng.choice(SYNTHETIC_VOCABULARY, size=QUERY_TERMS, p=weights)) for _ in range(queries)]
    encoded = [
        (vector.tolist(), ([int(t) for t in ids], [1.0] * len(ids)))
        for vector, ids in zip(query_dense, query_terms, strict=True)
    ]
    return dense, terms, encoded


def synthetic_points(dense: np.ndarray, terms: list[np.ndarray], first: int, last: int, seed: int) -> list[PointData]:
    """Points ``first..last-1`` of the synthetic collection (BM25-like weights in [0.3, 2))."""
    rng = np.random.default_rng(seed + first)
    return [
        PointData(
            id=point_id(f"synthetic-{i}"),
            dense=dense[i].tolist(),
            sparse_indices=[int(t) for t in terms[i]],
            sparse_values=rng.uniform(0.3, 2.0, len(terms[i])).round(4).tolist(),
            payload={"chunk_id": f"synthetic-{i}", "title": "", "text": f"point {i}"},
        )
        for i in range(first, last)
    ]


def synthetic_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Build the synthetic collection in each engine, then time the three modes."""
    dense, terms, queries = synthetic_data(args.synthetic_points, args.queries, args.seed)
    metadata = {"embedder": "synthetic", "dimension": SYNTHETIC_DIM, "bm25": {"avgdl": 1.0, "k1": 1.2, "b": 0.75}}
    build: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for engine in ENGINES:
        backend = open_backend(engine, work / "synthetic" if engine == "edge" else ":memory:", "synthetic")
        try:
            start = time.perf_counter()
            backend.create(SYNTHETIC_DIM, metadata)
            for first in tqdm(range(0, len(dense), args.batch), desc=f"synthetic {engine} upsert", leave=False):
                backend.upsert(synthetic_points(dense, terms, first, min(first + args.batch, len(dense)), args.seed))
            upserted = time.perf_counter()
            backend.flush(optimize=True)
            build[engine] = {
                "upsert_s": round(upserted - start, 1),
                "flush_optimize_s": round(time.perf_counter() - upserted, 1),
            }
            subset = queries if engine == "edge" else queries[: args.local_queries]
            results[engine] = {
                mode: timed(backend_search(backend, mode, args.top_k, 1.0), subset, f"synthetic {engine} {mode}")
                for mode in SEARCH_MODES
            }
        finally:
            backend.close()
    return {
        "points": len(dense),
        "dimension": SYNTHETIC_DIM,
        "vocabulary": SYNTHETIC_VOCABULARY,
        "mean_sparse_terms": round(float(np.mean([len(t) for t in terms])), 1),
        "query_terms": QUERY_TERMS,
        "local_mode_in_memory": True,
        "build": build,
        "results": results,
    }


def versions() -> dict[str, str]:
    """Versions of the engines' packages."""
    return {name: importlib.metadata.version(name) for name in ("qdrant-edge-py", "qdrant-client")}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--smoke`` shrinks every size)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="result JSON file")
    parser.add_argument("--qdrant-path", default=str(settings.qdrant_path()), help="store holding the KB (copied)")
    parser.add_argument("--embedder", default=settings.PACKAGED_EMBEDDER, help="dense embedder of the KB collection")
    parser.add_argument("--collection", default=None, help="default: the embedder's (zhrag_kb for MiniLM)")
    parser.add_argument("--kb-source", type=Path, help="index this KB source afresh instead of copying a store")
    parser.add_argument(
        "--questions", type=Path, default=settings.shared_data_dir() / "rc" / "reading_comprehension.jsonl"
    )
    parser.add_argument("--queries", type=int, default=200, help="queries per cell")
    parser.add_argument("--local-queries", type=int, default=20, help="queries of local mode on synthetic data")
    parser.add_argument("--synthetic-points", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000, help="synthetic upsert batch")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-kb", action="store_true", help="only the synthetic collection")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a few KB passages indexed afresh")
    args = parser.parse_args(argv)
    args.collection = args.collection or settings.default_collection(args.embedder)
    if args.smoke:
        args.queries, args.local_queries, args.synthetic_points, args.batch = 5, 5, 300, 100
    return args


def smoke_kb(work: Path) -> Path:
    """The first 20 passages of the shared KB as a source file in ``work``."""
    path = work / "smoke_kb.jsonl"
    with settings.default_kb_source().open(encoding="utf-8") as source:
        path.write_text("".join(itertools.islice(source, 20)), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the JSON report."""
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "retrieval_engines",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": versions(),
        "settings": {"top_k": args.top_k, "prefetch": max(PREFETCH_MIN, PREFETCH_PER_RESULT * args.top_k)},
    }
    with tempfile.TemporaryDirectory(prefix="zhrag-bench-") as scratch:
        work = Path(scratch)
        if args.smoke and not args.kb_source:
            args.kb_source = smoke_kb(work)
        if not args.skip_kb:
            report["kb"] = kb_benchmark(args, work)
        report["synthetic"] = synthetic_benchmark(args, work)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {report['wall_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
