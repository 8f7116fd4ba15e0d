"""Retrieval latency as the graph sees it: ``qdrant-find`` over one MCP stdio session vs the store called directly.

Both paths run the same default retrieval (hybrid BM25 + dense, evidence reranking) on the same
reading-comprehension questions, one query at a time; the MCP path adds JSON-RPC over the server's stdio
pipes. The store directory is copied to a temporary directory first, so the user's store is never opened
(embedded storage admits one process at a time).

``python benchmarks/retrieval_latency.py`` writes ``benchmarks/results/retrieval_latency.json``;
``--smoke`` indexes a few KB passages afresh and runs a handful of queries (for tests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from zhrag import settings
from zhrag.evaluation.retrieval_sets import rc_set
from zhrag.kb.indexing import index_documents
from zhrag.kb.retrieval import Retriever
from zhrag.kb.sources import iter_documents
from zhrag.kb.store import KnowledgeStore
from zhrag.mcp.client import KnowledgeClient, ServerConfig

from retrieval_engines import timed  # sibling script: p50/p95/mean/qps after a warm-up, as there

RESULTS = Path(__file__).resolve().parent / "results" / "retrieval_latency.json"
TOP_K = 5


def prepare_store(workdir: Path, smoke: bool, engine: str, embedder: str = settings.DEFAULT_EMBEDDER) -> Path:
    """A private copy of the default store, or (smoke) a few KB passages indexed afresh."""
    target = workdir / "qdrant"
    if smoke:
        documents = list(iter_documents(settings.default_kb_source()))[:60]
        with KnowledgeStore(path=target, engine=engine, embedder=embedder) as store:
            index_documents(store, documents)
        return target
    source = settings.qdrant_path()
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock"))
    with KnowledgeStore(path=target, engine=engine, embedder=embedder) as store:
        if not store.count() or not store.dense_ready():
            raise SystemExit(
                f"no collection {store.collection!r} with dense vectors at {source} for engine {engine}: run "
                f"`zhrag index --embedder {embedder} --dense` first"
            )
    return target


def direct_and_mcp(
    path: Path,
    engine: str,
    queries: list[str],
    collection: str | None = None,
    label: str = "",
    embedder: str = settings.DEFAULT_EMBEDDER,
) -> dict[str, dict[str, float]]:
    """Latency of the reranked search (``Retriever.search``) called directly, then of ``qdrant-find`` over MCP
    (``collection``: default the embedder's)."""
    with KnowledgeStore(collection, path=path, engine=engine, embedder=embedder) as store:
        retriever = Retriever(store)
        direct = timed(lambda query: retriever.search(query, TOP_K), queries, f"{label}direct store")
    client = KnowledgeClient(
        ServerConfig(collection=collection, qdrant_path=str(path), qdrant_engine=engine, embedder=embedder)
    )
    try:
        through_mcp = timed(lambda query: client.find(query, TOP_K), queries, f"{label}qdrant-find over MCP")
    finally:
        client.close()
    return {"direct_store": direct, "mcp_one_session": through_mcp}


def main(argv: list[str] | None = None) -> int:
    """Measure both paths and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200, help="reading-comprehension questions to send")
    parser.add_argument("--engine", default=settings.qdrant_engine(), help="embedded engine (edge or local)")
    parser.add_argument("--embedder", default=settings.DEFAULT_EMBEDDER, help="dense embedder (its default collection)")
    parser.add_argument("--smoke", action="store_true", help="tiny fresh index and a few queries")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    count = 8 if args.smoke else args.queries
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    queries = [query.question for query in rc_set(limit=count, seed=1).queries]
    with tempfile.TemporaryDirectory() as workdir:
        path = prepare_store(Path(workdir), args.smoke, args.engine, args.embedder)
        cells = direct_and_mcp(path, args.engine, queries, embedder=args.embedder)
    direct, through_mcp = cells["direct_store"], cells["mcp_one_session"]
    document = {
        "benchmark": "retrieval_latency",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average_at_start": load_at_start, "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "engine": args.engine,
        "embedder": args.embedder,
        "smoke": args.smoke,
        "top_k": TOP_K,
        "direct_store": direct,
        "mcp_one_session": through_mcp,
        "mcp_overhead_ms_p50": round(through_mcp["p50_ms"] - direct["p50_ms"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1), encoding="utf-8")
    print(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
