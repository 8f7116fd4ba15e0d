"""Writing documents into a :class:`~zhrag.tools.store.KnowledgeStore`: bulk indexing, single notes, first use.

Each chunk becomes one point with a dense embedding of ``title + text`` and jieba-term BM25 document
weights (:mod:`zhrag.tools.lexical`). BM25 needs the corpus' average document length (``avgdl``):
it is fixed when a knowledge base is first indexed, so later additions are weighted on the same scale.

The collection's metadata records how far indexing got (``state``):

- ``notes``: created by :func:`add_document` (MCP ``qdrant-store``) before any knowledge base was
  indexed; its ``avgdl`` came from those notes alone;
- ``indexing``: a bulk run over the sources listed in ``indexing`` started and has not finished
  (a killed run leaves this: :func:`ensure_index` runs it again, upserts are idempotent);
- ``indexed``: the knowledge base (sources in ``sources``) is complete.

Collections written before this field existed count as indexed when they hold points. The first bulk
run into a ``notes`` collection takes ``avgdl`` from the knowledge base and re-weights the notes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from zhrag import settings
from zhrag.errors import ConfigError, KnowledgeBaseError
from zhrag.tools import lexical
from zhrag.tools.chunking import CHUNK_OVERLAP, CHUNK_SIZE, Chunk, chunk_document
from zhrag.tools.embedding_cache import EmbeddingCache, default_cache_path, embed_documents
from zhrag.tools.qdrant_backends import PointData
from zhrag.tools.sources import Document, iter_documents, stable_id
from zhrag.tools.store import KnowledgeStore, point_id

#: ``source`` of documents stored through :func:`add_document`.
ADDED_SOURCE = "added"
#: Values of ``state`` in a collection's metadata (see the module docstring).
NOTES, INDEXING, INDEXED = "notes", "indexing", "indexed"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexReport:
    """What an indexing run did.

    Attributes:
        documents: Documents read.
        chunks: Chunks upserted (points written or overwritten).
        seconds: Wall time of the whole run.
        sparse_seconds: Time spent tokenising and building BM25 vectors.
        dense_seconds: Time spent computing dense embeddings.
        upsert_seconds: Time spent writing to Qdrant.
        embedded: Chunks whose dense vector was computed (the others came from the embedding cache).
    """

    documents: int
    chunks: int
    seconds: float
    sparse_seconds: float
    dense_seconds: float
    upsert_seconds: float
    embedded: int = 0


def index_sources(
    store: KnowledgeStore, paths: Sequence[str | Path], batch_size: int = 128, progress: bool = True
) -> IndexReport:
    """Read every source (see :func:`zhrag.tools.sources.iter_documents`) and upsert its chunks.

    Re-indexing the same sources is idempotent: chunk point ids are derived from document ids.

    Raises:
        KnowledgeBaseError: a missing, malformed or empty source (nothing is written then).
    """
    documents = (document for path in paths for document in iter_documents(path))
    return index_documents(store, documents, batch_size=batch_size, progress=progress, sources=source_names(paths))


def ensure_index(
    store: KnowledgeStore,
    source: str | Path | Sequence[str | Path] | None = None,
    *,
    progress: bool = True,
) -> IndexReport | None:
    """Index ``source`` (one path or several; default :func:`zhrag.settings.default_kb_source`) unless the
    collection already holds a complete knowledge base.

    It indexes a missing or empty collection, one holding only ``qdrant-store`` notes, and one whose
    indexing of these same sources was interrupted. An interrupted run of other sources is left
    alone with a warning (re-run ``zhrag index`` with them). Returns the indexing report, or ``None``
    when nothing was indexed.
    """
    if source is None:
        sources: list[str | Path] = [settings.default_kb_source()]
    elif isinstance(source, (str, Path)):
        sources = [source]
    else:
        sources = list(source)
    state = index_state(store)
    if state == INDEXED:
        return None
    if state == INDEXING:
        interrupted = store.index_settings().get(INDEXING)
        if interrupted != source_names(sources):
            logger.warning(
                "collection %r at %s has an unfinished indexing run of %s: re-run `zhrag index` with them",
                store.collection,
                store.location,
                ", ".join(map(str, interrupted or [])),
            )
            return None
        logger.warning("collection %r: finishing an interrupted indexing run", store.collection)
    return index_sources(store, sources, progress=progress)


def index_state(store: KnowledgeStore) -> str | None:
    """``notes``, ``indexing`` or ``indexed``; ``None`` for a missing or empty collection."""
    if not store.exists():
        return None
    state = store.index_settings().get("state")
    if state is None:  # written before the state was recorded: complete if it holds points
        return INDEXED if store.count() > 0 else None
    return str(state)


def source_names(paths: Iterable[str | Path]) -> list[str]:
    """How sources are recorded in a collection's metadata: absolute paths."""
    return [str(Path(path).expanduser().resolve()) for path in paths]


def index_documents(
    store: KnowledgeStore,
    documents: Iterable[Document],
    *,
    batch_size: int = 128,
    progress: bool = False,
    chunk_size: int = CHUNK_SIZE,
    overlap: int = CHUNK_OVERLAP,
    sources: list[str] | None = None,
    cache: EmbeddingCache | bool = True,
) -> IndexReport:
    """Chunk, encode and upsert documents in batches (stable ids: re-running is idempotent).

    Dense vectors come from the embedding cache when it has them (``cache``: ``True`` the default cache,
    see :mod:`zhrag.tools.embedding_cache`, ``False`` none), so an interrupted or repeated run embeds only
    what it has not embedded before.

    All documents are read and tokenised before anything is written, so a malformed source leaves the
    collection untouched. A new collection, or one holding only notes, takes its BM25 ``avgdl`` from
    these documents. ``sources`` names them in the collection's indexing state.

    Raises:
        ConfigError: bad ``batch_size`` or chunking parameters.
        KnowledgeBaseError: no documents, a malformed source, or an embedder mismatch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    chunks: list[Chunk] = []
    count = 0
    for document in documents:
        count += 1
        chunks.extend(chunk_document(document, chunk_size, overlap))
    if not chunks:
        raise KnowledgeBaseError("empty corpus: no documents to index")
    tokens = [_terms(chunk.title, chunk.text) for chunk in chunks]
    sparse_seconds = time.perf_counter() - start
    bm25 = _bm25(lexical.average_length(tokens))
    run = {"state": INDEXING, INDEXING: sources or []}
    if not store.create({"bm25": bm25, **run}):
        store.check_embedder()
        stored = store.index_settings()
        if stored.get("state") == NOTES:
            _reweight(store, bm25)
        else:
            bm25 = stored["bm25"]
        store.update_settings(bm25=bm25, **run)
    timings = _write(store, chunks, tokens, bm25, batch_size=batch_size, progress=progress, cache=cache)
    clock = time.perf_counter()
    store.flush(optimize=True)
    done = store.index_settings().get("sources") or []
    store.update_settings(
        state=INDEXED, sources=done + [name for name in sources or [] if name not in done], **{INDEXING: []}
    )
    return IndexReport(
        documents=count,
        chunks=len(chunks),
        seconds=time.perf_counter() - start,
        sparse_seconds=sparse_seconds + timings[0],
        dense_seconds=timings[1],
        upsert_seconds=timings[2] + time.perf_counter() - clock,
        embedded=timings[3],
    )


def add_document(
    store: KnowledgeStore,
    text: str,
    title: str = "",
    metadata: dict[str, Any] | None = None,
    doc_id: str | None = None,
) -> list[str]:
    """Chunk, embed and store one document (a note); returns its chunk ids.

    Without ``doc_id`` the id is derived from the text, so adding the same text twice stores it once.
    Into a missing collection the note goes first, in state ``notes``: the knowledge base is still
    indexed on first use (:func:`ensure_index`).

    Raises:
        ConfigError: empty text.
    """
    if not text or not text.strip():
        raise ConfigError("empty text: nothing to store")
    document = Document(
        id=doc_id or stable_id(ADDED_SOURCE, text.strip()),
        title=title,
        text=text.strip(),
        source=ADDED_SOURCE,
        metadata=dict(metadata or {}),
    )
    chunks = chunk_document(document)
    tokens = [_terms(chunk.title, chunk.text) for chunk in chunks]
    if store.create({"bm25": _bm25(lexical.average_length(tokens)), "state": NOTES}):
        logger.info("collection %r created by a note: the knowledge base is indexed on first use", store.collection)
    store.check_embedder()
    _write(store, chunks, tokens, store.index_settings()["bm25"], batch_size=len(chunks), progress=False)
    store.flush()
    return [chunk.id for chunk in chunks]


def _write(
    store: KnowledgeStore,
    chunks: Sequence[Chunk],
    tokens: Sequence[list[str]],
    bm25: dict[str, float],
    *,
    batch_size: int,
    progress: bool,
    cache: EmbeddingCache | bool = True,
) -> tuple[float, float, float, int]:
    """Encode (BM25 with ``bm25``, dense in batches) and upsert chunks.

    Returns sparse / dense / upsert seconds and how many chunks were embedded (not found in ``cache``).
    """
    sparse_seconds = dense_seconds = upsert_seconds = 0.0
    embedded = 0
    vectors = _cache(cache)
    with tqdm(total=len(chunks), desc="indexing", unit="chunk", disable=not progress) as bar:
        for first in range(0, len(chunks), batch_size):
            batch = chunks[first : first + batch_size]
            clock = time.perf_counter()
            sparse = [_sparse(terms, bm25) for terms in tokens[first : first + batch_size]]
            sparse_seconds += time.perf_counter() - clock
            clock = time.perf_counter()
            dense, fresh = embed_documents(store.embedder, [_dense_text(chunk) for chunk in batch], vectors)
            embedded += fresh
            dense_seconds += time.perf_counter() - clock
            points = [
                PointData(
                    id=point_id(chunk.id),
                    dense=vector.tolist(),
                    sparse_indices=indices,
                    sparse_values=values,
                    payload=_payload(chunk),
                )
                for chunk, vector, (indices, values) in zip(batch, dense, sparse, strict=True)
            ]
            clock = time.perf_counter()
            store.upsert(points)
            upsert_seconds += time.perf_counter() - clock
            bar.update(len(batch))
    return sparse_seconds, dense_seconds, upsert_seconds, embedded


def _cache(cache: EmbeddingCache | bool) -> EmbeddingCache | None:
    """The cache an indexing run uses: the one given, the default one (``True``), or none."""
    if isinstance(cache, EmbeddingCache):
        return cache
    path = default_cache_path() if cache else None
    return EmbeddingCache(path) if path is not None else None


def _reweight(store: KnowledgeStore, bm25: dict[str, float]) -> None:
    """Recompute the BM25 vectors of every stored point (the notes) with ``bm25``; dense vectors stay."""
    for batch in list(store.scroll()):
        points = []
        for point in batch:
            terms = _terms(str(point.payload.get("title", "")), str(point.payload.get("text", "")))
            points.append(PointData(point.id, point.dense, *_sparse(terms, bm25), point.payload))
        store.upsert(points)


def _bm25(avgdl: float) -> dict[str, float]:
    return {"avgdl": avgdl, "k1": lexical.K1, "b": lexical.B}


def _terms(title: str, text: str) -> list[str]:
    return lexical.tokenize(title) + lexical.tokenize(text)


def _sparse(terms: list[str], bm25: dict[str, float]) -> tuple[list[int], list[float]]:
    vector = lexical.document_vector(terms, bm25["avgdl"], k1=bm25["k1"], b=bm25["b"])
    return list(vector.indices), list(vector.values)


def _dense_text(chunk: Chunk) -> str:
    """The text embedded for a chunk: its title line, then its text."""
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


def _payload(chunk: Chunk) -> dict[str, Any]:
    """The payload stored with a chunk's point."""
    return {
        "doc_id": chunk.doc_id,
        "chunk_id": chunk.id,
        "title": chunk.title,
        "text": chunk.text,
        "source": chunk.source,
        "metadata": chunk.metadata,
    }
