"""Writing documents into a :class:`~zhrag.kb.store.KnowledgeStore`: bulk indexing, single notes, first use.

Each chunk becomes one point with a dense embedding of ``title + text`` and jieba-term BM25 document
weights (:mod:`zhrag.kb.lexical`). BM25 needs the corpus' average document length (``avgdl``):
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
from zhrag.jsonl import stat_digest
from zhrag.kb import lexical
from zhrag.kb.chunking import CHUNK_OVERLAP, CHUNK_SIZE, Chunk, chunk_document
from zhrag.kb.embedding_cache import EmbeddingCache, default_cache_path, embed_documents, text_key
from zhrag.kb.embeddings import E5_EMBEDDER, USE_EMBEDDER
from zhrag.kb.qdrant_backends import PointData
from zhrag.kb.sources import Document, iter_documents, stable_id
from zhrag.kb.store import DENSE_MISSING, KnowledgeStore, point_id

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
#: Chunks read and tokenised before the first write: the BM25 ``avgdl`` sample and the whole of a small corpus.
READ_AHEAD_CHUNKS = 8192
#: Key of an indexing run's checkpoint in the collection's metadata (see :func:`index_documents`).
PROGRESS = "progress"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexReport:
    """What an indexing run did.

    Attributes:
        documents: Documents written by this run.
        chunks: Chunks upserted (points written or overwritten).
        seconds: Wall time of the whole run.
        sparse_seconds: Time spent tokenising and building BM25 vectors.
        dense_seconds: Time spent computing dense embeddings.
        upsert_seconds: Time spent writing to Qdrant.
        embedded: Chunks whose dense vector was computed (the others came from the embedding cache).
        dense: Whether the run wrote dense vectors (``False``: the sparse half only).
        skipped: Documents an interrupted run had written, passed over by this one.
    """

    documents: int
    chunks: int
    seconds: float
    sparse_seconds: float
    dense_seconds: float
    upsert_seconds: float
    embedded: int = 0
    dense: bool = True
    skipped: int = 0


def index_sources(
    store: KnowledgeStore,
    paths: Sequence[str | Path],
    batch_size: int = 128,
    progress: bool = True,
    *,
    dense: bool | None = True,
) -> IndexReport:
    """Read every source (see :func:`zhrag.kb.sources.iter_documents`) and upsert its chunks.

    Re-indexing the same sources is idempotent: chunk point ids are derived from document ids. ``dense``: see
    :func:`index_documents`.

    Raises:
        KnowledgeBaseError: a missing, malformed or empty source (nothing is written then).
    """
    documents = (document for path in paths for document in iter_documents(path))
    return index_documents(
        store, documents, batch_size=batch_size, progress=progress, sources=source_names(paths), dense=dense,
        resume_key=source_fingerprint(paths),
    )


def source_fingerprint(paths: Sequence[str | Path]) -> str:
    """A digest of the source files' paths, sizes and modification times: an interrupted run resumes only over
    unchanged files (a directory counts every file under it)."""
    files = []
    for path in paths:
        root = Path(path).expanduser().resolve()
        files += sorted(file for file in root.rglob("*") if file.is_file()) if root.is_dir() else [root]
    return stat_digest(files)[:32]


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
    read_ahead: int = READ_AHEAD_CHUNKS,
    resume_key: str | None = None,
) -> IndexReport:
    """Chunk, encode and upsert documents as a stream, in batches (stable ids: re-running is idempotent).

    Memory stays bounded whatever the corpus size: the first documents, up to ``read_ahead`` chunks, are read and
    tokenised before anything is written (a corpus that fits is checked whole, so a malformed source leaves the
    collection untouched; a new collection, or one holding only notes, takes its BM25 ``avgdl`` from them), then
    the rest flows through batch by batch. After every batch the collection's metadata records how many documents
    are written (``progress``); run again after a kill, a run of the same ``sources`` with the same ``resume_key``
    (:func:`source_fingerprint` of unchanged files) skips them, and the embedding cache spares it the vectors of the
    batch it was writing. Without a ``resume_key`` nothing is skipped (the cache still spares the vectors).

    ``dense``: ``True`` embeds every chunk; ``False`` writes the sparse half only and marks the collection's dense
    half missing (searches use BM25 until :func:`build_dense`); ``None`` decides as the first use does (see the
    module docstring).

    Dense vectors come from the embedding cache when it has them (``cache``: ``True`` the default cache,
    see :mod:`zhrag.kb.embedding_cache`, ``False`` none).

    Raises:
        ConfigError: bad ``batch_size``, ``read_ahead`` or chunking parameters.
        KnowledgeBaseError: no documents, a malformed source, or an embedder mismatch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if read_ahead < 1:
        raise ConfigError(f"read-ahead must be >= 1 chunk, got {read_ahead}")
    start = time.perf_counter()
    stream = iter(documents)
    head: list[list[Chunk]] = []
    head_chunks, whole = 0, True
    for document in stream:
        head.append(chunk_document(document, chunk_size, overlap))
        head_chunks += len(head[-1])
        if head_chunks >= read_ahead:
            whole = False
            break
    if head_chunks == 0:
        raise KnowledgeBaseError("empty corpus: no documents to index")
    head_tokens = [[_terms(chunk.title, chunk.text) for chunk in chunks] for chunks in head]
    sparse_seconds = time.perf_counter() - start
    bm25 = _bm25(lexical.average_length([terms for tokens in head_tokens for terms in tokens]))
    vectors = _cache(cache)
    if dense is None:
        dense = _dense_on_first_use(store, [chunk for chunks in head for chunk in chunks], vectors, whole=whole)
    run: dict[str, Any] = {"state": INDEXING, INDEXING: sources or []}
    if not dense:
        run["dense"] = DENSE_MISSING
    if store.create({"bm25": bm25, **run}):
        stored = store.index_settings()
        checkpoint: dict[str, Any] = {}
    else:
        store.check_embedder()
        stored = store.index_settings()
        if stored.get("state") == NOTES:
            _reweight(store, bm25)
        else:
            bm25 = stored["bm25"]
        checkpoint = _resumable(stored, sources, resume_key, dense)
        stored = store.update_settings(bm25=bm25, **run, **{PROGRESS: checkpoint or None})
    writer = _BatchWriter(store, bm25, stored, batch_size=batch_size, cache=vectors, dense=dense,
                          checkpoint=checkpoint, resume_key=resume_key)
    with tqdm(total=head_chunks if whole else None, desc="indexing", unit="chunk", disable=not progress) as bar:
        writer.bar = bar
        for chunks, tokens in zip(head, head_tokens, strict=True):
            writer.add(chunks, tokens)
        del head, head_tokens
        for document in stream:
            writer.add(chunk_document(document, chunk_size, overlap))
        writer.flush_batch()
    clock = time.perf_counter()
    store.flush(optimize=True)
    stored = store.index_settings()
    done = stored.get("sources") or []
    finished: dict[str, Any] = {"state": INDEXED, "sources": done + [n for n in sources or [] if n not in done]}
    if dense and stored.get("dense") == DENSE_MISSING and set(done) <= set(sources or []):
        finished["dense"] = "complete"  # every source the collection holds has its dense vectors now
    store.update_settings(**{**finished, INDEXING: [], PROGRESS: None})
    if not dense:
        logger.warning(
            "collection %r: indexed the sparse half (BM25) only; searches use BM25 until `zhrag index --dense` "
            "embeds the %d chunks with %s (once: the vectors are cached)",
            store.collection,
            store.count(),
            store.embedder_name,
        )
    return IndexReport(
        documents=writer.documents - writer.skipped,
        chunks=writer.chunks,
        seconds=time.perf_counter() - start,
        sparse_seconds=sparse_seconds + writer.sparse_seconds,
        dense_seconds=writer.dense_seconds,
        upsert_seconds=writer.upsert_seconds + time.perf_counter() - clock,
        embedded=writer.embedded,
        dense=bool(dense),
        skipped=writer.skipped,
    )


class _BatchWriter:
    """Collects whole documents into batches of at least ``batch_size`` chunks, writes each batch, then records in
    the collection's metadata how many documents are written (``progress``), so a killed run can skip them.

    ``checkpoint``: the ``progress`` of an interrupted run this one may resume (see :func:`_resumable`); its first
    ``documents`` documents are passed over, the last of them checked against the recorded ``last_id``.
    """

    def __init__(
        self,
        store: KnowledgeStore,
        bm25: dict[str, float],
        metadata: dict[str, Any],
        *,
        batch_size: int,
        cache: EmbeddingCache | None,
        dense: bool,
        checkpoint: dict[str, Any],
        resume_key: str | None,
    ) -> None:
        self.store, self.bm25, self.metadata = store, bm25, metadata
        self.batch_size, self.cache, self.dense = batch_size, cache, dense
        self.skip, self.last_id = int(checkpoint.get("documents", 0)), checkpoint.get("last_id")
        self.resume_key = resume_key
        self.bar: Any = None
        self.pending: list[tuple[list[Chunk], list[list[str]]]] = []
        self.pending_chunks = 0
        self.documents = self.chunks = self.embedded = 0
        self.sparse_seconds = self.dense_seconds = self.upsert_seconds = 0.0

    @property
    def skipped(self) -> int:
        """Documents passed over because the interrupted run had written them."""
        return min(self.documents, self.skip)

    def add(self, chunks: list[Chunk], tokens: list[list[str]] | None = None) -> None:
        """Take one document's chunks (and their terms, tokenised here when not given and not skipped); write a
        batch when enough are pending.

        Raises:
            KnowledgeBaseError: the document the checkpoint ends on is not the one it recorded (the checkpoint is
                cleared, so the next run starts from the beginning).
        """
        self.documents += 1
        if self.documents <= self.skip:
            if self.documents == self.skip and (chunks[0].doc_id if chunks else None) != self.last_id:
                self.metadata = self.store.update_settings(base=self.metadata, **{PROGRESS: None})
                raise KnowledgeBaseError(
                    f"collection {self.store.collection!r}: document {self.skip} of the sources is not the one an "
                    f"interrupted run recorded ({self.last_id!r}); the sources changed: run zhrag index again to "
                    "index them from the start"
                )
            return
        if tokens is None:
            clock = time.perf_counter()
            tokens = [_terms(chunk.title, chunk.text) for chunk in chunks]
            self.sparse_seconds += time.perf_counter() - clock
        self.pending.append((chunks, tokens))
        self.pending_chunks += len(chunks)
        if self.pending_chunks >= self.batch_size:
            self.flush_batch()

    def flush_batch(self) -> None:
        """Write the pending documents, then checkpoint them."""
        if not self.pending:
            return
        chunks = [chunk for document, _ in self.pending for chunk in document]
        tokens = [terms for _, document in self.pending for terms in document]
        sparse, embed, upsert, embedded = _write(
            self.store, chunks, tokens, self.bm25, batch_size=self.batch_size, progress=False, cache=self.cache,
            dense=self.dense,
        )
        self.sparse_seconds += sparse
        self.dense_seconds += embed
        self.upsert_seconds += upsert
        self.embedded += embedded
        self.chunks += len(chunks)
        last = self.pending[-1][0]
        self.pending, self.pending_chunks = [], 0
        if self.resume_key is not None:
            progress = {"documents": self.documents, "last_id": last[0].doc_id if last else None,
                        "dense": self.dense, "key": self.resume_key}
            self.metadata = self.store.update_settings(base=self.metadata, **{PROGRESS: progress})
        if self.bar is not None:
            self.bar.update(len(chunks))


def _resumable(stored: dict[str, Any], sources: list[str] | None, resume_key: str | None, dense: bool) -> dict[str, Any]:
    """The checkpoint of ``stored`` metadata this run may resume: an interrupted run (state ``indexing``) of the same
    ``sources`` and ``resume_key`` that wrote dense vectors if this run does; else ``{}`` (nothing is skipped)."""
    checkpoint = stored.get(PROGRESS) or {}
    if (
        resume_key is None
        or stored.get("state") != INDEXING
        or stored.get(INDEXING) != (sources or [])
        or checkpoint.get("key") != resume_key
        or (dense and not checkpoint.get("dense"))
    ):
        return {}
    return checkpoint


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
    cache: EmbeddingCache | bool | None = True,
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


def _dense_on_first_use(
    store: KnowledgeStore, chunks: Sequence[Chunk], cache: EmbeddingCache | None, *, whole: bool = True
) -> bool:
    """Whether a first-use run embeds its chunks now: when the embedding cache holds at least
    :data:`FIRST_USE_CACHED_SHARE` of them, or when embedding the rest is expected to take at most
    :data:`FIRST_USE_BUDGET_S` at the embedder's measured rate (unknown embedders: yes, as before).

    ``whole``: ``chunks`` are the whole corpus; when they are only the read-ahead of a larger one, an embedder of
    known rate embeds now only if the cache holds them (the rest of the corpus can only take longer)."""
    keys = {text_key(_dense_text(chunk)) for chunk in chunks}
    cached = len(cache.get(store.embedder, list(keys))) if cache is not None and keys else 0
    if cached >= FIRST_USE_CACHED_SHARE * len(keys):
        return True
    rate = EMBEDDING_RATES.get(store.embedder_name)
    return rate is None or (whole and (len(keys) - cached) / rate <= FIRST_USE_BUDGET_S)


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
