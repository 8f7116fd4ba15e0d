"""Streaming indexing on real embedded Qdrant with a real embedder: bounded read-ahead, a checkpoint after every
batch, and a killed `zhrag index` that resumes without writing or embedding again what it had done."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zhrag import settings
from zhrag.errors import KnowledgeBaseError
from zhrag.kb.indexing import INDEXED, INDEXING, PROGRESS, index_documents, index_sources, index_state
from zhrag.kb.qdrant_edge_backend import METADATA_FILE, shard_directory
from zhrag.kb.sources import Document, iter_documents
from zhrag.kb.store import KnowledgeStore

pytestmark = pytest.mark.integration

#: The fast packaged embedder keeps these tests short; what they check does not depend on the embedder.
EMBEDDER = settings.PACKAGED_EMBEDDER


def _passages(shared_kb: Path, count: int, folder: Path) -> Path:
    """The first ``count`` passages of the shared KB as a JSON-lines source."""
    rows = []
    with shared_kb.open(encoding="utf-8") as handle:
        for line in handle:
            rows.append(line)
            if len(rows) == count:
                break
    path = folder / f"kb_{count}.jsonl"
    path.write_text("".join(rows), encoding="utf-8")
    return path


def _metadata(qdrant: Path, collection: str) -> dict:
    try:
        return json.loads((shard_directory(qdrant, collection) / METADATA_FILE).read_text("utf-8"))
    except (OSError, ValueError):  # not yet written, or replaced at this moment
        return {}


def test_a_large_corpus_streams_in_batches_with_a_checkpoint_and_fails_cleanly(shared_kb: Path, tmp_path: Path):
    """Past the read-ahead, documents flow batch by batch; a bad document there stops the run with the error and
    a checkpoint of what is written, and re-running the fixed sources skips those documents."""
    source = _passages(shared_kb, 120, tmp_path)
    documents = list(iter_documents(source))

    def broken() -> Iterator[Document]:
        yield from documents[:80]
        raise KnowledgeBaseError("kb.jsonl:81: expected a JSON object with a string 'text' field")

    with KnowledgeStore("stream", path=tmp_path / "qdrant", embedder=EMBEDDER) as store:
        # A bad document inside the read-ahead: checked before anything is written.
        with pytest.raises(KnowledgeBaseError, match="kb.jsonl:81"):
            index_documents(store, broken(), read_ahead=10_000, sources=["kb"], resume_key="k")
        assert not store.exists()
        # Past the read-ahead (20 chunks): batches of 16 chunks are written and checkpointed before the error.
        with pytest.raises(KnowledgeBaseError, match="kb.jsonl:81"):
            index_documents(store, broken(), read_ahead=20, batch_size=16, sources=["kb"], resume_key="k")
        stored = store.index_settings()
        checkpoint = stored[PROGRESS]
        assert stored["state"] == INDEXING and 0 < checkpoint["documents"] <= 80
        written = {point.payload["doc_id"] for batch in store.scroll() for point in batch}
        assert written == {document.id for document in documents[: checkpoint["documents"]]}
        assert checkpoint["last_id"] == documents[checkpoint["documents"] - 1].id
        # Fixed sources, same run: the checkpointed documents are skipped, the rest written, the state complete.
        report = index_documents(store, iter(documents), read_ahead=20, batch_size=16, sources=["kb"], resume_key="k")
        assert report.skipped == checkpoint["documents"] and report.documents == 120 - checkpoint["documents"]
        assert index_state(store) == INDEXED and store.index_settings()[PROGRESS] is None
        assert {point.payload["doc_id"] for batch in store.scroll() for point in batch} == {d.id for d in documents}
        # The same documents under another resume key (changed files) are not skipped.
        store.update_settings(state=INDEXING, **{INDEXING: ["kb"], PROGRESS: {**checkpoint, "key": "other"}})
        again = index_documents(store, iter(documents), read_ahead=20, batch_size=16, sources=["kb"], resume_key="k")
        assert again.skipped == 0 and again.documents == 120 and again.embedded == 0  # vectors from the cache


def test_a_checkpoint_that_does_not_match_the_documents_is_refused_and_cleared(shared_kb: Path, tmp_path: Path):
    documents = list(iter_documents(_passages(shared_kb, 40, tmp_path)))
    with KnowledgeStore("stream", path=tmp_path / "qdrant", embedder=EMBEDDER) as store:
        index_documents(store, iter(documents), sources=["kb"], resume_key="k", dense=False)
        store.update_settings(
            state=INDEXING, **{INDEXING: ["kb"], PROGRESS: {"documents": 10, "last_id": "x", "dense": False, "key": "k"}}
        )
        with pytest.raises(KnowledgeBaseError, match="sources changed"):
            index_documents(store, iter(documents), sources=["kb"], resume_key="k", dense=False)
        assert store.index_settings()[PROGRESS] is None
        assert index_documents(store, iter(documents), sources=["kb"], resume_key="k", dense=False).skipped == 0


def test_a_sparse_checkpoint_is_not_skipped_by_a_dense_run(shared_kb: Path, tmp_path: Path):
    """Documents an interrupted BM25-only run wrote lack dense vectors: a dense run writes them again."""
    source = _passages(shared_kb, 30, tmp_path)
    with KnowledgeStore("stream", path=tmp_path / "qdrant", embedder=EMBEDDER) as store:
        index_sources(store, [source], progress=False, dense=False)
        stored = store.index_settings()
        store.update_settings(state=INDEXING, **{INDEXING: stored["sources"]})
        store.update_settings(**{PROGRESS: {"documents": 30, "last_id": "x", "dense": False, "key": "y"}})
        report = index_sources(store, [source], progress=False, dense=True)
        assert report.skipped == 0 and report.documents == 30
        assert store.dense_ready() and store.index_settings()["dense"] == "complete"


def test_a_killed_zhrag_index_resumes_without_rewriting_or_reembedding(shared_kb: Path, tmp_path: Path):
    """kill -9 during `zhrag index`: the next run skips the checkpointed documents, embeds only chunks it has not
    embedded before, and the collection ends complete and searchable."""
    source = _passages(shared_kb, 600, tmp_path)
    qdrant, collection = tmp_path / "qdrant", settings.default_collection(EMBEDDER)
    env = {**os.environ, "ZHRAG_QDRANT_PATH": str(qdrant), "ZHRAG_EMBEDDING_CACHE": str(tmp_path / "cache.sqlite")}
    command = [sys.executable, "-m", "zhrag.cli", "index", str(source), "--embedder", EMBEDDER, "--batch-size", "16"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        checkpoint = (_metadata(qdrant, collection).get(PROGRESS) or {}).get("documents", 0)
        if checkpoint >= 100:
            break
        time.sleep(0.2)
    assert process.poll() is None, f"the run ended before it could be killed: {process.communicate()}"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = _metadata(qdrant, collection)[PROGRESS]["documents"]
    assert 100 <= killed_at < 600

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    line = resumed.stdout.strip().splitlines()[-1]
    match = re.search(r"indexed (\d+) documents as (\d+) chunks .*\((\d+) embedded, (\d+) from the embedding cache\) "
                      r"after skipping (\d+) documents", line)
    assert match, line
    documents, chunks, embedded, cached, skipped = map(int, match.groups())
    assert skipped == killed_at and documents == 600 - killed_at
    assert cached <= 2 * 16 + 16  # at most the batch being written when the run was killed (plus one document)
    assert embedded + cached == chunks
    with KnowledgeStore(path=qdrant, embedder=EMBEDDER) as store:
        assert index_state(store) == INDEXED and store.dense_ready()
        total = store.count()
    # Everything is in the cache now: indexing the same sources again embeds nothing.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and f"(0 embedded, {total} from the embedding cache)" in again.stdout, again.stdout
