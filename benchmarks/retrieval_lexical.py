"""Index-time ablation of the lexical (BM25) retriever: chunking, tokenisation, query cleaning, BM25 parameters.

Each row indexes the shared KB into a temporary sparse-only Qdrant Edge shard (the engine zhrag embeds)
with zhrag's own chunker and BM25 document vectors, then scores the same query sets as
``zhrag eval-retrieval`` (recall@1/3/5/10, MRR). Search-time choices (dense, fusion, reranking) are rows
of ``zhrag eval-retrieval`` instead; this script covers what needs a re-index.

Writes ``benchmarks/results/retrieval_lexical.json`` and ``docs/results/retrieval/lexical.md`` (generated,
never edited by hand). ``--smoke`` runs two rows on a few dozen pairs to check the script.

    python benchmarks/retrieval_lexical.py [--rc-limit N] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jieba
import qdrant_edge as edge
from tqdm.auto import tqdm

from zhrag import settings
from zhrag.evaluation.retrieval_eval import KS, score_set
from zhrag.evaluation.retrieval_sets import QuerySet, load_query_sets
from zhrag.kb import lexical
from zhrag.kb.chunking import chunk_document
from zhrag.kb.passage import Passage
from zhrag.kb.sources import iter_documents

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "retrieval_lexical.json"
REPORT = ROOT / "docs" / "results" / "retrieval" / "lexical.md"
Tokenizer = Callable[[str], list[str]]


@dataclass(frozen=True)
class Row:
    """One index configuration."""

    name: str
    k1: float = lexical.K1
    b: float = lexical.B
    chunk_size: int = 500
    overlap: int = 100
    tokenizer: str = "jieba"  # jieba | jieba-keep-stopwords | jieba-title-dict | jieba-char-runs


ROWS = (
    Row("textbook BM25 (k1 1.2, b 0.75), stop/question words removed", k1=1.2, b=0.75),
    Row("same, stop/question words kept", k1=1.2, b=0.75, tokenizer="jieba-keep-stopwords"),
    Row("tuned BM25 (k1 0.9, b 0.4) — default", k1=0.9, b=0.4),
    Row("tuned + jieba user dictionary of KB titles", k1=0.9, b=0.4, tokenizer="jieba-title-dict"),
    Row("tuned + bigrams of single-character runs", k1=0.9, b=0.4, tokenizer="jieba-char-runs"),
    Row("tuned, 300-character chunks (overlap 60)", k1=0.9, b=0.4, chunk_size=300, overlap=60),
    Row("tuned, 800-character chunks (overlap 150)", k1=0.9, b=0.4, chunk_size=800, overlap=150),
)


def make_tokenizer(kind: str, titles: list[str]) -> Tokenizer:
    """The tokenizer of a row: zhrag's own, or one of the variants tried against it."""
    if kind == "jieba":
        return lexical.tokenize
    if kind == "jieba-keep-stopwords":
        return lambda text: [
            term
            for term in (t.strip().lower() for t in jieba.lcut(text, HMM=False))
            if term and any(unicodedata.category(c)[0] not in "PZSC" for c in term)
        ]
    if kind == "jieba-title-dict":
        segmenter = jieba.Tokenizer()
        segmenter.initialize()
        for title in titles:
            name = re.sub(r"[（(].*?[)）]", "", title).strip()
            if 2 <= len(name) <= 12 and re.fullmatch(r"[\u4e00-\u9fff·]+", name):
                segmenter.add_word(name, freq=max(segmenter.suggest_freq(name, False), 1))
        return lambda text: [
            term
            for term in (t.strip().lower() for t in segmenter.lcut(text, HMM=False))
            if term and term not in lexical.STOP_WORDS and any(unicodedata.category(c)[0] not in "PZSC" for c in term)
        ]
    if kind == "jieba-char-runs":

        def with_run_bigrams(text: str) -> list[str]:
            terms, run, out = lexical.tokenize(text), [], []
            for term in [*terms, ""]:
                if len(term) == 1 and "\u4e00" <= term <= "\u9fff":
                    run.append(term)
                else:
                    out += [run[i] + run[i + 1] for i in range(len(run) - 1)]
                    run = []
                if term:
                    out.append(term)
            return out

        return with_run_bigrams
    raise ValueError(f"unknown tokenizer {kind!r}")


def sparse_vector(terms: list[str], weights: list[float] | None = None) -> edge.SparseVector:
    """A Qdrant Edge sparse vector from terms (unit weights) or terms with weights."""
    if weights is None:
        ids = sorted({lexical.term_id(term) for term in terms})
        return edge.SparseVector(indices=ids, values=[1.0] * len(ids))
    return edge.SparseVector(indices=list(terms), values=weights)


def build_shard(row: Row, documents: list, tokenize: Tokenizer, directory: Path) -> tuple[edge.EdgeShard, dict, float]:
    """Index the documents as sparse-only BM25 points; returns the shard, id → passage, and seconds."""
    start = time.perf_counter()
    chunks = [chunk for document in documents for chunk in chunk_document(document, row.chunk_size, row.overlap)]
    tokens = [tokenize(chunk.title) + tokenize(chunk.text) for chunk in chunks]
    avgdl = lexical.average_length(tokens)
    config = edge.EdgeConfig(sparse_vectors={"bm25": edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)})
    shard = edge.EdgeShard.create(str(directory), config)
    passages = {}
    points = []
    for number, (chunk, terms) in enumerate(zip(chunks, tokens, strict=True)):
        vector = lexical.document_vector(terms, avgdl, k1=row.k1, b=row.b)
        points.append(edge.Point(id=number, vector={"bm25": sparse_vector(vector.indices, vector.values)}))
        passages[number] = Passage(id=chunk.id, title=chunk.title, text=chunk.text, score=0.0)
    for first in range(0, len(points), 1000):
        shard.update(edge.UpdateOperation.upsert_points(points[first : first + 1000]))
    shard.flush()
    return shard, passages, time.perf_counter() - start


def run_row(row: Row, documents: list, titles: list[str], sets: list[QuerySet], workdir: Path) -> dict:
    """Index one row and score it on every set."""
    tokenize = make_tokenizer(row.tokenizer, titles)
    shard, passages, seconds = build_shard(row, documents, tokenize, workdir / f"row{abs(hash(row))}")

    def search(query: str, top_k: int) -> list[Passage]:
        request = edge.QueryRequest(limit=top_k, query=edge.Query.Nearest(sparse_vector(tokenize(query)), using="bm25"))
        return [{**passages[int(point.id)], "score": point.score} for point in shard.query(request)]

    result = {"row": row.__dict__, "chunks": len(passages), "index_seconds": round(seconds, 1)}
    result["sets"] = {query_set.name: score_set(search, query_set) for query_set in sets}
    shard.close()
    return result


def render(document: dict) -> str:
    """The markdown table of the ablation."""
    sets = list(document["sets"])
    lines = [
        "# Lexical retrieval ablation (index-time choices)",
        "",
        "Generated by `python benchmarks/retrieval_lexical.py`; sparse-only BM25 over jieba terms in a Qdrant Edge",
        f"shard, shared KB ({document['kb']}). Recall@k in %, MRR over the top {max(KS)}.",
        "",
    ]
    for name in sets:
        lines += [f"## {name} ({document['sets'][name]} questions)", ""]
        lines.append("| configuration | chunks | " + " | ".join(f"R@{k}" for k in KS) + " | MRR |")
        lines.append("|---" * (len(KS) + 3) + "|")
        for result in document["rows"]:
            cell = result["sets"][name]
            recalls = " | ".join(f"{100 * cell[f'recall@{k}']:.1f}" for k in KS)
            lines.append(f"| {result['row']['name']} | {result['chunks']} | {recalls} | {cell['mrr']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the ablation and write the JSON results and the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rc-limit", type=int, default=None, help="seeded sample of reading-comprehension pairs")
    parser.add_argument("--smoke", action="store_true", help="two rows, 40 pairs, write under --out")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    jieba.setLogLevel(logging.WARNING)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    rows = ROWS[1:3] if args.smoke else ROWS
    names = ["rc"] if args.smoke else ["rc", "dev-verified", "dev-covered"]
    sets = load_query_sets(names, rc_limit=40 if args.smoke else args.rc_limit)
    kb = settings.default_kb_source()
    documents = list(iter_documents(kb))
    if args.smoke:  # the sampled pairs' own paragraphs among a few hundred others
        gold = {pid for s in sets for query in s.queries for pid in query.passage_ids}
        documents = [d for n, d in enumerate(documents) if d.id in gold or n < 300]
    titles = sorted({document.title for document in documents if document.title})
    with tempfile.TemporaryDirectory() as workdir:
        results = [run_row(row, documents, titles, sets, Path(workdir)) for row in tqdm(rows, desc="rows")]
    document = {
        "kb": kb.name, "sets": {s.name: len(s.queries) for s in sets}, "rows": results,
        "machine": {
            "cpus": os.cpu_count(), "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    report = out.with_suffix(".md") if args.out else REPORT
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(document) + "\n", encoding="utf-8")
    print(f"results: {out}\nreport: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
