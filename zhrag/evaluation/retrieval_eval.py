"""The retrieval benchmark: recall@k and MRR of search configurations on query sets with known gold.

Each configuration (:class:`SearchConfig`) is one ablation row: sparse BM25 alone, dense alone, their
fusion at a given dense weight, with or without a reranker. Every row runs through the same
``Retriever.search`` that the MCP tool ``qdrant-find`` serves. A question's *first hit* is the rank
of the first retrieved chunk that counts (a chunk of a gold paragraph, or one mentioning the gold answer,
per :class:`~zhrag.evaluation.retrieval_sets.QuerySet`); recall@k is the share of questions with a first
hit under k, MRR the mean of 1 / (first hit + 1) over the top ``max(ks)`` (0 without a hit).

Results go to ``<out>/retrieval.json`` (written whole, atomically) after every finished (configuration, set) cell,
so an interrupted run resumes where it stopped. The folder is a run folder (:mod:`zhrag.run_folder`): ``run.json``
records the store settings and query sets (a run with others is refused unless ``force``, which moves the old files
to ``replaced-<time>/``), the code's commit and the load average. The report (``retrieval.md``, ``retrieval.png``)
is drawn by :mod:`zhrag.evaluation.retrieval_report`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from zhrag.evaluation.retrieval_sets import QuerySet, RetrievalQuery
from zhrag.evaluation.rule_grader import mentions_gold
from zhrag.kb.passage import Passage
from zhrag.nodes.requery import fallback_queries
from zhrag.run_folder import RUN_FILE, claim_run, finish_run, start_run, write_json_atomic

#: The results document of a retrieval run (settings, sets, then the rows as they finish).
RETRIEVAL_FILE = "retrieval.json"
#: Cut-offs of recall@k.
KS = (1, 3, 5, 10)

Search = Callable[[str, int], list[Passage]]


@dataclass(frozen=True)
class SearchConfig:
    """One retrieval configuration (an ablation row).

    Attributes:
        name: Row label.
        mode: ``hybrid`` (fused BM25 + dense), ``sparse`` (BM25 only) or ``dense``.
        dense_weight: RRF weight of the dense list in ``hybrid`` (``None``: the store's default).
        reranker: ``none``, ``evidence`` or a cross-encoder name (``None``: the store's default).
    """

    name: str
    mode: str = "hybrid"
    dense_weight: float | None = None
    reranker: str | None = None


#: Dense weights of the default ablation's hybrid rows (1.0: BM25 and dense ranked as equals).
ABLATION_WEIGHTS = (1.0, 0.2)


def ablation(weights: Sequence[float] = ABLATION_WEIGHTS, *, reranked: bool = False) -> tuple[SearchConfig, ...]:
    """The ablation rows in report order: BM25, dense, one unreranked hybrid row per dense weight (``reranked``:
    and one with the evidence reranker), and the store's default configuration (its own dense weight, the evidence
    reranker)."""
    hybrids = tuple(
        SearchConfig("hybrid RRF, equal weights" if weight == 1.0 else f"hybrid RRF, dense weight {weight:g}",
                     dense_weight=weight, reranker="none")
        for weight in dict.fromkeys(weights)
    )
    with_reranker = tuple(
        SearchConfig(f"{row.name} + evidence reranker", dense_weight=row.dense_weight, reranker="evidence")
        for row in hybrids
        if reranked
    )
    return (
        SearchConfig("BM25 (jieba, cleaned query)", mode="sparse", reranker="none"),
        SearchConfig("dense (embedder only)", mode="dense", reranker="none"),
        *hybrids,
        *with_reranker,
        SearchConfig("+ evidence reranker (default)", reranker="evidence"),
    )


#: The rows of the default ablation, in the order the report shows them.
ABLATION = ablation()


def document_id(chunk_id: str) -> str:
    """The KB document (paragraph) id of a chunk id ``<document id>#<n>``."""
    return chunk_id.rsplit("#", 1)[0]


def first_hit(query: RetrievalQuery, passages: Sequence[Passage], match: str) -> int | None:
    """Rank (0-based) of the first passage that counts as a hit for ``query``, or ``None``."""
    for rank, passage in enumerate(passages):
        if match == "passage":
            if document_id(passage["id"]) in query.passage_ids:
                return rank
        elif mentions_gold(query.answer, f"{passage['title']}\n{passage['text']}"):
            return rank
    return None


def score_set(search: Search, query_set: QuerySet, ks: Sequence[int] = KS, *, progress: bool = False) -> dict[str, Any]:
    """Recall@k, MRR and search latency of ``search`` on one query set."""
    depth = max(ks)
    ranks: list[int | None] = []
    latencies: list[float] = []
    for query in tqdm(query_set.queries, desc=query_set.name, unit="q", disable=not progress, leave=False):
        start = time.perf_counter()
        passages = search(query.question, depth)
        latencies.append((time.perf_counter() - start) * 1000)
        ranks.append(first_hit(query, passages, query_set.match))
    count = len(ranks)
    result: dict[str, Any] = {"n": count}
    for k in ks:
        result[f"recall@{k}"] = sum(rank is not None and rank < k for rank in ranks) / count
    result["mrr"] = sum(1 / (rank + 1) for rank in ranks if rank is not None) / count
    result["latency_ms_p50"] = statistics.median(latencies)
    result["latency_ms_p95"] = _percentile(latencies, 95)
    return result


#: Second-round strategies of A2's requery, measured by :func:`score_requery`: how the next query is made.
REQUERY_STRATEGIES: dict[str, Callable[[str], str]] = {
    "same query, next unseen passages": lambda question: question,
    "three longest terms, unseen passages": lambda question: list(islice(fallback_queries(question), 2))[1],
}


def score_requery(
    search: Search, query_set: QuerySet, *, top_k: int = 3, progress: bool = False
) -> dict[str, dict[str, float]]:
    """Recall of A2's first round (``top_k`` passages) and after one more round, per requery strategy.

    The second round searches the strategy's query and keeps the first ``top_k`` passages not seen in the first
    round, as the retrieve node does; a question counts when either round holds a hit.
    """
    first_hits = 0
    second_hits = dict.fromkeys(REQUERY_STRATEGIES, 0)
    for query in tqdm(query_set.queries, desc=f"requery {query_set.name}", unit="q", disable=not progress, leave=False):
        first = search(query.question, top_k)
        if first_hit(query, first, query_set.match) is not None:
            first_hits += 1
            continue
        seen = {passage["id"] for passage in first}
        for name, rewrite in REQUERY_STRATEGIES.items():
            found = [p for p in search(rewrite(query.question), 2 * top_k) if p["id"] not in seen][:top_k]
            second_hits[name] += first_hit(query, found, query_set.match) is not None
    count = len(query_set.queries)
    missed = count - first_hits
    return {
        name: {
            "round1_recall": first_hits / count,
            "round2_recall": (first_hits + hits) / count,
            "misses_recovered": hits / missed if missed else 0.0,
        }
        for name, hits in second_hits.items()
    }


def _percentile(values: Sequence[float], percent: float) -> float:
    """The ``percent``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))]


def run_retrieval_eval(
    make_search: Callable[[SearchConfig], Search],
    sets: Sequence[QuerySet],
    configs: Sequence[SearchConfig],
    out_dir: str | Path,
    *,
    settings: dict[str, Any],
    requery_sets: Sequence[QuerySet] = (),
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every configuration on every set, saving after each cell; returns the results document.

    ``requery_sets`` also get :func:`score_requery` with the store's default configuration.

    ``settings`` describes the store (collection, engine, embedder, ...); a previous run in ``out_dir``
    with other settings or other query sets is refused unless ``force``.

    Raises:
        ConfigError: ``out_dir`` holds a run with different settings (and not ``force``).
    """
    # the report's files, replaced with the results (imported here: that module imports this one)
    from zhrag.evaluation.retrieval_report import PLOT_FILE, REPORT_FILE

    out = Path(out_dir).expanduser()
    path = out / RETRIEVAL_FILE
    header = json.loads(json.dumps({
        "settings": settings,
        "sets": {s.name: {"n": len(s.queries), "match": s.match} for s in sets},
        "requery_sets": {s.name: len(s.queries) for s in requery_sets},
    }))
    saved = _read_document(path)
    if not (out / RUN_FILE).exists() and saved and {key: saved.get(key) for key in header} == header:
        start_run(out, header, (), resume=False, what="retrieval run folder")  # saved before run.json was written
        resume = True
    else:
        resume = claim_run(out, header, force, kind="retrieval", files=(RETRIEVAL_FILE, REPORT_FILE, PLOT_FILE))
    document = saved if resume and saved else {**header, "rows": {}}
    cells = [(config, query_set) for config in configs for query_set in sets]
    with tqdm(total=len(cells), desc="retrieval eval", unit="cell", disable=not progress) as bar:
        for config, query_set in cells:
            row = document["rows"].setdefault(config.name, {"config": asdict(config), "sets": {}})
            if query_set.name not in row["sets"]:
                row["sets"][query_set.name] = score_set(make_search(config), query_set, progress=progress)
                write_json_atomic(path, document)
            bar.update()
    for query_set in requery_sets:
        requery = document.setdefault("requery", {})
        if query_set.name not in requery:
            requery[query_set.name] = score_requery(make_search(SearchConfig("default")), query_set, progress=progress)
            write_json_atomic(path, document)
    finish_run(out)
    return document


def _read_document(path: Path) -> dict[str, Any] | None:
    """The results document saved in ``path``, or ``None`` without a readable one."""
    try:
        saved = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and isinstance(saved.get("rows"), dict) else None
