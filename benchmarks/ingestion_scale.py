"""Ingestion at zhwiki scale: streaming `zhrag index` over WikiExtractor dumps of growing size, its memory, a
kill -9 and resume, and the hours a full zhwiki dump (about 1M articles) would take on this machine.

The dumps are synthetic but shaped like WikiExtractor output (``AA/wiki_00`` files of 100 ``<doc>`` articles):
each article joins 1 to 6 paragraphs of the shared KB, drawn with a fixed seed, under a numbered title, so the
text is real Chinese Wikipedia prose. For each size the benchmark runs, in a fresh process each:

- ``pipeline``: reading, chunking, jieba tokenising and BM25 weighting of every document, nothing stored (the
  part of ingestion that is zhrag's code);
- ``index``: ``zhrag index DUMP --sparse-only`` into a fresh embedded Qdrant Edge store (the whole sparse path,
  Edge included);

each with its wall time, chunks per second and peak resident memory (``ru_maxrss``). On the largest dump a
second ``zhrag index`` is killed (SIGKILL) after ``--kill-after`` seconds and run again: the result records the
documents the checkpoint let it skip and the time the rest took.

The dense half is projected, not run: embedding the dump's chunks at each embedder's cold rate measured on the
KB (``benchmarks/results/indexing_<embedder>.json``, from ``benchmarks/indexing.py``).

``python benchmarks/ingestion_scale.py`` writes ``benchmarks/results/ingestion_scale.json`` and ``.png``
(``--articles 10000 40000`` by default; ``--smoke`` runs 300 and 1,200 articles and kills at the first checkpoint).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zhrag import settings

from bench_common import RESULTS_DIR, machine_info, write_result

#: Articles of the full Chinese Wikipedia dump the projection is for (zhwiki has about 1.4M; WikiExtractor keeps
#: about 1M with text).
ZHWIKI_ARTICLES = 1_000_000
ARTICLES_PER_FILE = 100
EMBEDDERS = (settings.E5_EMBEDDER, settings.PACKAGED_EMBEDDER, settings.USE_EMBEDDER)

#: Runs in a fresh interpreter: the streaming pipeline without a store, then its peak memory, as one JSON line.
PIPELINE = """
import json, resource, sys, time
from zhrag.kb.chunking import chunk_document
from zhrag.kb.indexing import _sparse, _terms, _bm25
from zhrag.kb.sources import iter_documents
start = time.perf_counter()
bm25 = _bm25(40.0)
documents = chunks = 0
for document in iter_documents(sys.argv[1]):
    documents += 1
    for chunk in chunk_document(document):
        chunks += 1
        _sparse(_terms(chunk.title, chunk.text), bm25)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"documents": documents, "chunks": chunks, "seconds": seconds, "peak_rss_mib": peak}))
"""

#: Runs ``zhrag index`` in this interpreter and prints its peak memory as the last line.
INDEX = """
import atexit, json, resource, sys
atexit.register(lambda: print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})))
from zhrag.cli import main
sys.exit(main(["index", *sys.argv[1:]]))
"""

REPORT = re.compile(r"indexed (\d+) documents as (\d+) chunks in ([\d.]+) s")
SKIPPED = re.compile(r"after skipping (\d+) documents")


def make_dump(folder: Path, articles: int, passages: list[dict[str, str]], seed: int = 0) -> Path:
    """A WikiExtractor-shaped dump of ``articles`` articles made of KB paragraphs (seeded)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for first in range(0, articles, ARTICLES_PER_FILE):
        number = first // ARTICLES_PER_FILE
        part = folder / f"A{chr(65 + number // 100 % 26)}" / f"wiki_{number % 100:02d}"
        part.parent.mkdir(parents=True, exist_ok=True)
        docs = []
        for article in range(first, min(first + ARTICLES_PER_FILE, articles)):
            paragraphs = rng.sample(passages, rng.randint(1, 6))
            title = f"{paragraphs[0]['title']} {article}"
            body = "\n\n".join(paragraph["text"] for paragraph in paragraphs)
            docs.append(f'<doc id="{article}" url="https://zh.wikipedia.org/wiki?curid={article}" title="{html.escape(title, quote=True)}">\n'
                        f"{title}\n\n{body}\n</doc>\n")
        part.write_text("".join(docs), encoding="utf-8")
    return folder


def run_json(code: str, *args: str, env: dict[str, str]) -> tuple[dict[str, Any], str, float]:
    """Run ``code`` in a fresh interpreter; returns its last stdout line as JSON, its stdout and wall seconds."""
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"benchmark step failed ({' '.join(args)}): {completed.stderr[-2000:]}")
    lines = completed.stdout.strip().splitlines()
    return json.loads(lines[-1]), completed.stdout, seconds


def index_report(stdout: str) -> dict[str, Any]:
    """The numbers of ``zhrag index``'s summary line."""
    match = REPORT.search(stdout)
    if match is None:
        raise SystemExit(f"no summary line in zhrag index's output: {stdout[-500:]}")
    documents, chunks, seconds = match.groups()
    skipped = SKIPPED.search(stdout)
    skipped = skipped.group(1) if skipped else None
    return {"documents": int(documents), "chunks": int(chunks), "seconds": float(seconds), "skipped": int(skipped or 0)}


def checkpoint(qdrant: Path, collection: str) -> int:
    """Documents the collection's checkpoint records as written (0 before the first)."""
    from zhrag.kb.indexing import PROGRESS
    from zhrag.kb.qdrant_edge_backend import METADATA_FILE, shard_directory

    try:
        metadata = json.loads((shard_directory(qdrant, collection) / METADATA_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return 0
    return int((metadata.get(PROGRESS) or {}).get("documents", 0))


def kill_and_resume(dump: Path, work: Path, env: dict[str, str], kill_after: float) -> dict[str, Any]:
    """SIGKILL a ``zhrag index`` after ``kill_after`` seconds (and at least one checkpoint), then run it again."""
    qdrant = work / "killed"
    run_env = {**env, "ZHRAG_QDRANT_PATH": str(qdrant)}
    command = [sys.executable, "-m", "zhrag.cli", "index", str(dump), "--sparse-only"]
    collection = settings.default_collection(settings.DEFAULT_EMBEDDER)
    process = subprocess.Popen(command, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.perf_counter()
    while time.perf_counter() - start < kill_after or checkpoint(qdrant, collection) == 0:  # at least one batch
        if process.poll() is not None:
            raise SystemExit(f"zhrag index finished before it could be killed after {kill_after} s: give a shorter one")
        time.sleep(0.05)
    killed_after = time.perf_counter() - start
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = checkpoint(qdrant, collection)
    start = time.perf_counter()
    resumed = subprocess.run(command, env=run_env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if resumed.returncode != 0:
        raise SystemExit(f"the resumed zhrag index failed: {resumed.stderr[-2000:]}")
    report = index_report(resumed.stdout)
    return {"killed_after_s": round(killed_after, 1), "checkpoint_documents": written, "resumed_wall_s": round(seconds, 1),
            "resumed_documents": report["documents"], "resumed_chunks": report["chunks"],
            "skipped_documents": report["skipped"]}


def dense_rates() -> dict[str, float]:
    """Cold embedding rates (chunks/s) measured on the KB by benchmarks/indexing.py."""
    rates = {}
    for embedder in EMBEDDERS:
        path = RESULTS_DIR / f"indexing_{embedder}.json"
        if path.is_file():
            rates[embedder] = json.loads(path.read_text("utf-8"))["parts"]["dense"]["chunks_per_s"]
    return rates


def plot(document: dict[str, Any], path: Path) -> None:
    """Chunks per second and peak memory against dump size, for the pipeline and the whole index run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["articles"] for row in document["sizes"]]
    figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("pipeline", "read + chunk + BM25 (no store)"), ("index", "zhrag index --sparse-only (Edge)")):
        speed.plot(sizes, [row[key]["chunks_per_s"] for row in document["sizes"]], marker="o", label=label)
        memory.plot(sizes, [row[key]["peak_rss_mib"] for row in document["sizes"]], marker="o", label=label)
    speed.set(xlabel="articles in the dump", ylabel="chunks per second", title="Throughput", ylim=(0, None))
    memory.set(xlabel="articles in the dump", ylabel="peak RSS (MiB)", title="Peak memory", ylim=(0, None))
    speed.legend(fontsize=8)
    memory.legend(fontsize=8)
    figure.suptitle("Streaming ingestion of WikiExtractor dumps (2 CPU cores)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, nargs="+", default=[10_000, 40_000], help="dump sizes")
    parser.add_argument("--kill-after", type=float, default=60.0, help="seconds before the kill on the largest dump")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default=None, help="free text recorded with the machine (e.g. CPU contention)")
    parser.add_argument("--smoke", action="store_true", help="300 and 1,200 articles, a kill at the first checkpoint")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ingestion_scale.json")
    args = parser.parse_args(argv)
    sizes = [300, 1200] if args.smoke else sorted(args.articles)
    kill_after = 0.0 if args.smoke else args.kill_after
    passages = [json.loads(line) for line in settings.default_kb_source().read_text("utf-8").splitlines() if line]
    machine = machine_info(note=args.note)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zhrag-ingestion-") as temporary:
        work = Path(temporary)
        env = {**os.environ, "ZHRAG_EMBEDDING_CACHE": str(work / "cache.sqlite")}
        for articles in sizes:
            dump = make_dump(work / f"dump_{articles}", articles, passages, seed=args.seed)
            size = sum(file.stat().st_size for file in dump.rglob("wiki_*"))
            print(f"{articles} articles ({size / 2**20:.1f} MiB): pipeline ...", file=sys.stderr, flush=True)
            pipeline, _, _ = run_json(PIPELINE, str(dump), env=env)
            print(f"{articles} articles: zhrag index --sparse-only ...", file=sys.stderr, flush=True)
            memory, stdout, wall = run_json(
                INDEX, str(dump), "--sparse-only", env={**env, "ZHRAG_QDRANT_PATH": str(work / f"q_{articles}")}
            )
            report = index_report(stdout)
            rows.append({
                "articles": articles,
                "dump_mib": round(size / 2**20, 1),
                "chunks": pipeline["chunks"],
                "pipeline": {"seconds": round(pipeline["seconds"], 1),
                             "chunks_per_s": round(pipeline["chunks"] / pipeline["seconds"], 1),
                             "peak_rss_mib": round(pipeline["peak_rss_mib"])},
                "index": {"seconds": report["seconds"], "wall_s": round(wall, 1),
                          "chunks_per_s": round(report["chunks"] / report["seconds"], 1),
                          "peak_rss_mib": round(memory["peak_rss_mib"])},
            })
        print("kill -9 and resume ...", file=sys.stderr, flush=True)
        resume = kill_and_resume(work / f"dump_{sizes[-1]}", work, env, kill_after)
    largest = rows[-1]
    chunks_per_article = largest["chunks"] / largest["articles"]
    chunks = ZHWIKI_ARTICLES * chunks_per_article
    projection = {
        "articles": ZHWIKI_ARTICLES,
        "chunks_per_article": round(chunks_per_article, 2),
        "chunks": round(chunks),
        "sparse_hours": round(chunks / largest["index"]["chunks_per_s"] / 3600, 1),
        "dense_hours": {name: round(chunks / rate / 3600, 1) for name, rate in dense_rates().items()},
        "dense_rates_chunks_per_s": dense_rates(),
    }
    body = {"seed": args.seed, "engine": "edge", "sizes": rows, "kill_and_resume": resume, "projection": projection}
    document = write_result(args.out, "ingestion_scale", args.smoke, machine, body)
    plot(document, args.out.with_suffix(".png"))
    print(json.dumps(body, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
