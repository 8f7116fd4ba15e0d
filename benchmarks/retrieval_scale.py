"""Retrieval at scale: the store called directly vs ``qdrant-find`` over one MCP session, on synthetic KBs of 100k and 1M passages.

The synthetic passages make both halves of hybrid search do real work on real questions: each passage
is a bag of jieba terms drawn from the shared KB's own term frequencies, with a length drawn from the
KB's chunk lengths and BM25 weights computed as ``zhrag index`` computes them, so reading-comprehension
questions hit real postings; its dense vector is a random unit vector of the packaged embedder's 384
dimensions (what the vectors mean does not change what an HNSW search costs; random vectors are its
hard case). The collection is an ordinary zhrag Qdrant Edge collection carrying the packaged embedder's
name, so ``KnowledgeStore`` and the MCP server open it as they open the KB.

The collection grows in steps (default 100k, then 1M points). Each step upserts the new points, flushes
and optimises (Edge builds its HNSW index), then times, one query at a time after a warm-up:

- ``store``: ``Retriever.search`` end to end (query embedding, tokenisation, fused search,
  evidence reranking), the direct call;
- ``mcp``: the same search through ``qdrant-find`` over one MCP stdio session;
- ``engine``: the Edge backend alone on pre-encoded queries, in each mode (hybrid, dense, sparse).

Building 1M points takes tens of minutes on 2 cores: ``--work DIR`` keeps the collection, and a rerun
with the same DIR skips the steps already built (it checks the point count and the seed).

``python benchmarks/retrieval_scale.py`` writes ``benchmarks/results/retrieval_scale.json``; ``--smoke``
grows to 300 and 600 points and sends 5 queries (for tests).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from zhrag import settings
from zhrag.evaluation.retrieval_sets import rc_set
from zhrag.kb import lexical
from zhrag.kb.chunking import chunk_document
from zhrag.kb.embeddings import load_embedder
from zhrag.kb.qdrant_backends import PointData
from zhrag.kb.qdrant_edge_backend import EdgeBackend
from zhrag.kb.sources import iter_documents
from zhrag.kb.store import SEARCH_MODES, KnowledgeStore, point_id

from bench_common import RESULTS_DIR, machine_info, write_result
from retrieval_engines import backend_search, encode_queries, timed, versions
from retrieval_latency import TOP_K, direct_and_mcp

RESULTS = RESULTS_DIR / "retrieval_scale.json"
COLLECTION = "synthetic_scale"
DIMENSION = 384
PROGRESS_FILE = "scale_progress.json"


class KbVocabulary:
    """Term frequencies and chunk lengths of a KB source, to draw synthetic passages from.

    Attributes:
        terms: Distinct terms, most frequent first.
        probabilities: Each term's share of all term occurrences.
        lengths: Terms per chunk, one entry per KB chunk.
    """

    def __init__(self, source: Path, limit: int | None = None) -> None:
        counts: Counter[str] = Counter()
        lengths: list[int] = []
        for number, document in enumerate(iter_documents(source)):
            if limit is not None and number >= limit:
                break
            for chunk in chunk_document(document):
                tokens = lexical.tokenize(chunk.title) + lexical.tokenize(chunk.text)
                counts.update(tokens)
                lengths.append(len(tokens))
        if not counts:
            raise SystemExit(f"no terms in {source}: give a non-empty KB source")
        ranked = counts.most_common()
        self.terms = [term for term, _ in ranked]
        frequencies = np.array([count for _, count in ranked], dtype=np.float64)
        self.probabilities = frequencies / frequencies.sum()
        self.lengths = np.array(lengths)

    @property
    def avgdl(self) -> float:
        """Mean terms per chunk (the BM25 ``avgdl`` of the synthetic collection)."""
        return float(self.lengths.mean())


def synthetic_points(vocabulary: KbVocabulary, first: int, last: int, seed: int) -> list[PointData]:
    """Points ``first..last-1``: KB-distributed terms with BM25 weights and a random unit dense vector."""
    rng = np.random.default_rng([seed, first])
    lengths = rng.choice(vocabulary.lengths, size=last - first)
    draws = rng.choice(len(vocabulary.terms), size=int(lengths.sum()), p=vocabulary.probabilities)
    dense = rng.standard_normal((last - first, DIMENSION), dtype=np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    points = []
    offset = 0
    for index, (length, vector) in enumerate(zip(lengths, dense, strict=True), start=first):
        terms = [vocabulary.terms[i] for i in draws[offset : offset + length]]
        offset += length
        sparse = lexical.document_vector(terms, vocabulary.avgdl)
        chunk_id = f"synthetic-{index}"
        points.append(
            PointData(
                id=point_id(chunk_id),
                dense=vector.tolist(),
                sparse_indices=list(sparse.indices),
                sparse_values=list(sparse.values),
                payload={
                    "doc_id": chunk_id,
                    "chunk_id": chunk_id,
                    "title": "",
                    "text": "".join(terms),
                    "source": "synthetic",
                    "metadata": {},
                },
            )
        )
    return points


def grow(root: Path, vocabulary: KbVocabulary, size: int, seed: int, batch: int) -> dict[str, Any]:
    """Upsert points until the collection holds ``size``, then flush and optimise; returns the timings.

    Point ids follow their index, so a build cut short resumes where its last batch ended.
    """
    backend = EdgeBackend(root, COLLECTION)
    try:
        if not backend.exists():
            metadata = {
                "embedder": settings.PACKAGED_EMBEDDER,
                "dimension": DIMENSION,
                "bm25": {"avgdl": vocabulary.avgdl, "k1": lexical.K1, "b": lexical.B},
            }
            backend.create(DIMENSION, metadata)
        start = time.perf_counter()
        first = backend.count()
        if first > size:
            raise SystemExit(f"{root} already holds {first:,} points, more than {size:,}: use another --work")
        for low in tqdm(range(first, size, batch), desc=f"upsert to {size:,}", unit="batch", leave=False):
            backend.upsert(synthetic_points(vocabulary, low, min(low + batch, size), seed))
        upserted = time.perf_counter()
        backend.flush(optimize=True)
        return {
            "points_added": size - first,
            "upsert_s": round(upserted - start, 1),
            "flush_optimize_s": round(time.perf_counter() - upserted, 1),
        }
    finally:
        backend.close()


def measure(root: Path, questions: Sequence[str], encoded: Sequence[Any]) -> dict[str, Any]:
    """Direct store, MCP and engine-only latencies on the collection at ``root``."""
    with KnowledgeStore(COLLECTION, path=root, engine="edge", embedder=settings.PACKAGED_EMBEDDER) as store:
        points, dense_weight = store.count(), store.dense_weight
    cells = direct_and_mcp(root, "edge", list(questions), COLLECTION, f"{points:,} ", settings.PACKAGED_EMBEDDER)
    direct, through_mcp = cells["direct_store"], cells["mcp_one_session"]
    backend = EdgeBackend(root, COLLECTION)
    try:
        engine = {
            mode: timed(backend_search(backend, mode, TOP_K, dense_weight), encoded, f"{points:,} engine {mode}")
            for mode in SEARCH_MODES
        }
    finally:
        backend.close()
    return {
        "points": points,
        "store": direct,
        "mcp": through_mcp,
        "mcp_overhead_ms_p50": round(through_mcp["p50_ms"] - direct["p50_ms"], 2),
        "engine": engine,
    }


def load_progress(root: Path, seed: int, queries: int) -> dict[str, Any]:
    """Steps already built and measured in ``root`` (empty for a new directory).

    Raises:
        SystemExit: ``root`` was filled with another seed or measured with another number of queries.
    """
    path = root / PROGRESS_FILE
    if not path.is_file():
        return {}
    recorded = json.loads(path.read_text(encoding="utf-8"))
    if (recorded.get("seed"), recorded.get("queries")) != (seed, queries):
        raise SystemExit(
            f"{root} was built with seed {recorded.get('seed')} and measured with {recorded.get('queries')} "
            f"queries, not {seed} and {queries}: use another --work or the same settings"
        )
    return recorded["steps"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (``--smoke`` shrinks every size)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="collection sizes")
    parser.add_argument("--queries", type=int, default=200, help="reading-comprehension questions per cell")
    parser.add_argument("--batch", type=int, default=5000, help="points per upsert")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kb-source", type=Path, default=None, help="KB whose terms are drawn (default: shared KB)")
    parser.add_argument("--work", type=Path, default=None, help="keep the collection here (resumable)")
    parser.add_argument("--note", default=None, help="free text recorded with the machine (e.g. CPU contention)")
    parser.add_argument("--smoke", action="store_true", help="300 and 600 points, 5 queries")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.queries, args.batch = [300, 600], 5, 200
    return args


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Grow the collection through every size, measuring after each step; progress is saved per step."""
    root.mkdir(parents=True, exist_ok=True)
    questions = [query.question for query in rc_set(limit=args.queries, seed=1).queries]
    progress = load_progress(root, args.seed, len(questions))
    source = args.kb_source or settings.default_kb_source()
    vocabulary = KbVocabulary(source, limit=40 if args.smoke else None)
    encoded = encode_queries(load_embedder(settings.PACKAGED_EMBEDDER), questions)
    for size in sorted(set(args.sizes)):
        key = str(size)
        if key in progress:
            continue
        build = grow(root, vocabulary, size, args.seed, args.batch)
        progress[key] = {"build": build, **measure(root, questions, encoded)}
        state = {"seed": args.seed, "queries": len(questions), "steps": progress}
        (root / PROGRESS_FILE).write_text(json.dumps(state, ensure_ascii=False, indent=1), encoding="utf-8")
    return {
        "versions": versions(),
        "collection": {
            "kb_source": str(source),
            "vocabulary_terms": len(vocabulary.terms),
            "mean_terms_per_passage": round(vocabulary.avgdl, 1),
            "dimension": DIMENSION,
            "seed": args.seed,
        },
        "top_k": TOP_K,
        "queries": len(questions),
        "sizes": {key: progress[key] for key in sorted(progress, key=int) if int(key) in args.sizes},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the JSON results."""
    args = parse_args(argv)
    machine = machine_info(note=args.note)
    started = time.perf_counter()
    if args.work is not None:
        body = run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="zhrag-scale-") as scratch:
            body = run(args, Path(scratch))
    body["wall_s"] = round(time.perf_counter() - started, 1)
    write_result(args.out, "retrieval_scale", args.smoke, machine, body)
    print(f"wrote {args.out} in {body['wall_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
