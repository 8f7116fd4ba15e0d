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

The dense half can come later (``dense`` in the metadata is ``missing`` then): embedding the 6,318-chunk KB with
multilingual-e5-small takes 19 minutes on two CPU cores, so the first use (:func:`ensure_index`) indexes the sparse
half alone when embedding would take longer than :data:`FIRST_USE_BUDGET_S` and the embedding cache does not already
hold the vectors (``ZHRAG_FIRST_USE_DENSE``: ``auto``, the default, ``always`` or ``never``); the store then searches
BM25 alone until ``zhrag index --dense`` (:func:`build_dense`) has embedded every chunk. That run goes through the
embedding cache batch by batch, so a killed one resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
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
from zhrag.tools.embedding_cache import EmbeddingCache, default_cache_path, embed_documents, text_key
from zhrag.tools.embeddings import E5_EMBEDDER, USE_EMBEDDER
from zhrag.tools.qdrant_backends import PointData
from zhrag.tools.sources import Document, iter_documents, stable_id
from zhrag.tools.store import DENSE_MISSING, KnowledgeStore, point_id

#: ``source`` of documents stored through :func:`add_document`.
ADDED_SOURCE = "added"
#: Values of ``state`` in a collection's metadata (see the module docstring).
NOTES, INDEXING, INDEXED = "notes", "indexing", "indexed"
#: Share of a first-use run's chunks the embedding cache must hold for ``auto`` to embed them all at once.
FIRST_USE_CACHED_SHARE = 0.95
#: Seconds of embedding a first-use run may spend before it indexes the sparse half alone (``auto``).
FIRST_USE_BUDGET_S = 300.0
#: Passages per second of the packaged embedders on 2 CPU cores (benchmarks/results/indexing_*.json), to estimate.
EMBEDDING_RATES = {settings.PACKAGED_EMBEDDER: 26.0, USE_EMBEDDER: 134.0, E5_EMBEDDER: 5.7}
FIRST_USE_MODES = ("auto", "always", "never")

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
        dense: Whether the run wrote dense vectors (``False``: the sparse half only).
    """

    documents: int
    chunks: int
    seconds: float
    sparse_seconds: float
    dense_seconds: float
    upsert_seconds: float
    embedded: int = 0
    dense: bool = True


def index_sources(
    store: KnowledgeStore,
    paths: Sequence[str | Path],
    batch_size: int = 128,
    progress: bool = True,
    *,
    dense: bool | None = True,
) -> IndexReport:
    """Read every source (see :func:`zhrag.tools.sources.iter_documents`) and upsert its chunks.

    Re-indexing the same sources is idempotent: chunk point ids are derived from document ids. ``dense``: see
    :func:`index_documents`.

    Raises:
        KnowledgeBaseError: a missing, malformed or empty source (nothing is written then).
    """
    documents = (document for path in paths for document in iter_documents(path))
    return index_documents(
        store, documents, batch_size=batch_size, progress=progress, sources=source_names(paths), dense=dense
    )


def build_dense(store: KnowledgeStore, *, batch_size: int = 128, progress: bool = True) -> IndexReport | None:
    """Embed the chunks a sparse-only run left without dense vectors (``zhrag index --dense``).

    Re-indexes the collection's recorded sources with dense vectors (the sparse half is recomputed, which is
    cheap); vectors already in the embedding cache are not computed again, so a killed run resumes. Returns
    ``None`` when there was nothing to do.

    Raises:
        KnowledgeBaseError: no indexed knowledge base, or a recorded source is gone.
    """
    stored = store.index_settings()
    sources = stored.get("sources") or stored.get(INDEXING) or []
    if stored.get("dense") != DENSE_MISSING and index_state(store) == INDEXED:  # also one from before the state
        return None
    if not sources:
        raise KnowledgeBaseError(f"collection {store.collection!r} records no indexed sources: run zhrag index SOURCES")
    return index_sources(store, sources, batch_size=batch_size, progress=progress, dense=True)


def ensure_index(
    store: KnowledgeStore,
    source: str | Path | Sequence[str | Path] | None = None,
    *,
    progress: bool = True,
    dense: bool | None = None,
) -> IndexReport | None:
    """Index ``source`` (one path or several; default :func:`zhrag.settings.default_kb_source`) unless the
    collection already holds a complete knowledge base.

    It indexes a missing or empty collection, one holding only ``qdrant-store`` notes, and one whose
    indexing of these same sources was interrupted. An interrupted run of other sources is left
    alone with a warning (re-run ``zhrag index`` with them). Returns the indexing report, or ``None``
    when nothing was indexed.

    ``dense``: ``None`` follows ``ZHRAG_FIRST_USE_DENSE`` (see the module docstring); ``True`` also embeds the
    chunks of an indexed collection whose dense half is missing (what benchmarks of dense retrieval need).
    """
    if dense is None:
        dense = _first_use_mode()
    if source is None:
        sources: list[str | Path] = [settings.default_kb_source()]
    elif isinstance(source, (str, Path)):
        sources = [source]
    else:
        sources = list(source)
    state = index_state(store)
    if state == INDEXED:
        return build_dense(store, progress=progress) if dense is True else None
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
    return index_sources(store, sources, progress=progress, dense=dense)


def _first_use_mode() -> bool | None:
    """``ZHRAG_FIRST_USE_DENSE`` as :func:`index_documents`' ``dense``: ``always`` True, ``never`` False, ``auto`` None.

    Raises:
        ConfigError: another value.
    """
    mode = os.environ.get("ZHRAG_FIRST_USE_DENSE", "").strip().lower() or "auto"
    if mode not in FIRST_USE_MODES:
        raise ConfigError(f"ZHRAG_FIRST_USE_DENSE must be one of {', '.join(FIRST_USE_MODES)}, got {mode!r}")
    return {"always": True, "never": False}.get(mode)


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
    dense: bool | None = True,
) -> IndexReport:
    """Chunk, encode and upsert documents in batches (stable ids: re-running is idempotent).

    ``dense``: ``True`` embeds every chunk; ``False`` writes the sparse half only and marks the collection's dense
    half missing (searches use BM25 until :func:`build_dense`); ``None`` decides as the first use does (see the
    module docstring).

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
    vectors = _cache(cache)
    if dense is None:
        dense = _dense_on_first_use(store, chunks, vectors)
    run: dict[str, Any] = {"state": INDEXING, INDEXING: sources or []}
    if not dense:
        run["dense"] = DENSE_MISSING
    if not store.create({"bm25": bm25, **run}):
        store.check_embedder()
        stored = store.index_settings()
        if stored.get("state") == NOTES:
            _reweight(store, bm25)
        else:
            bm25 = stored["bm25"]
        store.update_settings(bm25=bm25, **run)
    timings = _write(
        store, chunks, tokens, bm25, batch_size=batch_size, progress=progress, cache=vectors, dense=dense
    )
    clock = time.perf_counter()
    store.flush(optimize=True)
    stored = store.index_settings()
    done = stored.get("sources") or []
    finished: dict[str, Any] = {"state": INDEXED, "sources": done + [n for n in sources or [] if n not in done]}
    if dense and stored.get("dense") == DENSE_MISSING and set(done) <= set(sources or []):
        finished["dense"] = "complete"  # this run re-embedded every source the collection holds
    store.update_settings(**finished, **{INDEXING: []})
    if not dense:
        logger.warning(
            "collection %r: indexed the sparse half (BM25) only; searches use BM25 until `zhrag index --dense` "
            "embeds the %d chunks with %s (once: the vectors are cached)",
            store.collection,
            store.count(),
            store.embedder_name,
        )
    return IndexReport(
        documents=count,
        chunks=len(chunks),
        seconds=time.perf_counter() - start,
        sparse_seconds=sparse_seconds + timings[0],
        dense_seconds=timings[1],
        upsert_seconds=timings[2] + time.perf_counter() - clock,
        embedded=timings[3],
        dense=bool(dense),
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
    dense: bool = True,
) -> tuple[float, float, float, int]:
    """Encode (BM25 with ``bm25``, dense in batches unless ``dense`` is false) and upsert chunks.

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
            rows: Any = [None] * len(batch)
            if dense:
                rows, fresh = embed_documents(store.embedder, [_dense_text(chunk) for chunk in batch], vectors)
                embedded += fresh
            dense_seconds += time.perf_counter() - clock
            points = [
                PointData(
                    id=point_id(chunk.id),
                    dense=vector.tolist() if vector is not None else None,
                    sparse_indices=indices,
                    sparse_values=values,
                    payload=_payload(chunk),
                )
                for chunk, vector, (indices, values) in zip(batch, rows, sparse, strict=True)
            ]
            clock = time.perf_counter()
            store.upsert(points)
            upsert_seconds += time.perf_counter() - clock
            bar.update(len(batch))
    return sparse_seconds, dense_seconds, upsert_seconds, embedded


def _cache(cache: EmbeddingCache | bool | None) -> EmbeddingCache | None:
    """The cache an indexing run uses: the one given, the default one (``True``), or none (``False``, ``None``)."""
    if isinstance(cache, EmbeddingCache):
        return cache
    path = default_cache_path() if cache else None
    return EmbeddingCache(path) if path is not None else None


def _dense_on_first_use(store: KnowledgeStore, chunks: Sequence[Chunk], cache: EmbeddingCache | None) -> bool:
    """Whether a first-use run embeds its chunks now: when the embedding cache holds at least
    :data:`FIRST_USE_CACHED_SHARE` of them, or when embedding the rest is expected to take at most
    :data:`FIRST_USE_BUDGET_S` at the embedder's measured rate (unknown embedders: yes, as before)."""
    keys = {text_key(_dense_text(chunk)) for chunk in chunks}
    cached = len(cache.get(store.embedder, list(keys))) if cache is not None and keys else 0
    if cached >= FIRST_USE_CACHED_SHARE * len(keys):
        return True
    rate = EMBEDDING_RATES.get(store.embedder_name)
    return rate is None or (len(keys) - cached) / rate <= FIRST_USE_BUDGET_S


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
