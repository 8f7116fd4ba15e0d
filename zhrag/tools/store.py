"""The knowledge base in Qdrant: hybrid (dense + BM25 sparse) indexing and retrieval.

A collection holds one point per chunk with two named vectors:

- ``dense``: a sentence-transformers embedding of ``title + text`` (cosine distance);
- ``bm25``: jieba-term BM25 document weights (:mod:`zhrag.tools.lexical`) with ``Modifier.IDF``,
  so Qdrant applies the inverse document frequency at query time.

A search fuses the BM25 and dense candidate lists with reciprocal rank fusion (RRF). The dense list
can be down-weighted: the packaged MiniLM is an English model, and on 400 reading-comprehension
questions over the shared Chinese KB it put the answer in its top 3 for 2 % of them against 98 % for
BM25; equal-weight RRF lost 4 points to BM25 alone (96 %) while a dense weight of 0.2 kept all of
BM25's hits (98 %), leaving the dense list to break near-ties. Other embedders get plain,
equal-weight RRF unless a weight is given.

The collection's metadata records the embedder (name and dimension) and the BM25 parameters,
including ``avgdl``: it is fixed when the collection is created, so later additions are weighted
on the same scale as the first indexing.

Engines (:mod:`zhrag.tools.qdrant_backends`): embedded storage under a directory (default
:func:`zhrag.settings.qdrant_path`) is a Qdrant Edge shard per collection (``engine="edge"``, the
default: Rust segments and indexes in-process) or qdrant-client's local mode (``engine="local"``:
pure Python, BM25 scored point by point); both allow one store per directory at a time. A ``url``
reaches a Qdrant server instead. On the shared KB (6,318 chunks, 2 CPU cores) a hybrid query takes
0.5 ms in Edge against 190 ms in local mode, plus about 15 ms to embed the query
(``benchmarks/retrieval_engines.py``). Both embedded engines compute the same BM25 (IDF
``ln((N - n + 0.5) / (n + 0.5) + 1)``) and cosine scores and the same weighted RRF with the same tie
order, so they rank alike up to exact ties inside one candidate list (duplicate passages) and float
rounding (Edge scores in float32).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from zhrag import settings
from zhrag.errors import ConfigError, KnowledgeBaseError
from zhrag.tools import lexical
from zhrag.tools.chunking import CHUNK_OVERLAP, CHUNK_SIZE, Chunk, chunk_document
from zhrag.tools.embeddings import embedding_dimension, load_embedder
from zhrag.tools.passage import Passage
from zhrag.tools.qdrant_backends import Backend, ClientBackend, PointData, local_collection_exists
from zhrag.tools.qdrant_edge_backend import EdgeBackend
from zhrag.tools.rerank import EVIDENCE_RERANKER, RERANK_DEPTH, Reranker, load_reranker
from zhrag.tools.sources import Document, stable_id

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: Namespace of the uuid5 point ids derived from chunk ids (the URL is only a name, never fetched).
POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/zhrag/chunk")
#: ``source`` of documents stored through :meth:`KnowledgeStore.add`.
ADDED_SOURCE = "added"
#: Candidates each prefetch hands to the fusion: ``max(PREFETCH_MIN, PREFETCH_PER_RESULT * top_k)``.
PREFETCH_MIN = 20
PREFETCH_PER_RESULT = 5
#: RRF weight of the dense list per embedder (BM25 weighs 1); embedders not listed weigh 1.
DEFAULT_DENSE_WEIGHTS = {settings.PACKAGED_EMBEDDER: 0.2}
#: What :meth:`KnowledgeStore.search` ranks by: fused BM25 + dense (default), dense only, BM25 only.
SEARCH_MODES = ("hybrid", "dense", "sparse")

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
    """

    documents: int
    chunks: int
    seconds: float
    sparse_seconds: float
    dense_seconds: float
    upsert_seconds: float


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk: uuid5 of its chunk id, so re-indexing overwrites in place."""
    return str(uuid.uuid5(POINT_NAMESPACE, chunk_id))


class KnowledgeStore:
    """A Qdrant collection of knowledge-base chunks with hybrid search.

    Args:
        collection: Collection name.
        path: Embedded storage directory (default :func:`zhrag.settings.qdrant_path`).
        url: Qdrant server URL; default ``ZHRAG_QDRANT_URL`` unless ``path`` is given.
        embedder: Dense embedder name or path (see :func:`zhrag.tools.embeddings.load_embedder`),
            loaded on first use; it must match the one the collection was indexed with.
        device: Device of the embedder (``None``: automatic).
        dense_weight: RRF weight of the dense ranking against BM25's 1 (``None``: from
            :data:`DEFAULT_DENSE_WEIGHTS`, else 1).
        engine: Embedded engine, ``edge`` (Qdrant Edge shard under ``<path>/edge/<collection>/``) or
            ``local`` (qdrant-client local mode in ``<path>``); ``None``: :func:`zhrag.settings.qdrant_engine`.
            Not used with a server.
        reranker: ``evidence`` (default: the offline evidence-window reranker), ``none``, or a
            sentence-transformers cross-encoder name or directory (:mod:`zhrag.tools.rerank`).

    Attributes:
        engine: ``edge``, ``local`` or ``server``.
        location: The embedded directory or the server URL.

    Raises:
        ConfigError: both ``path`` and ``url`` were given, a negative ``dense_weight``, or an
            unknown engine.
        QdrantUnavailableError: the server does not answer, or the embedded storage is locked by
            another store or process.
    """

    def __init__(
        self,
        collection: str = settings.DEFAULT_COLLECTION,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        embedder: str = settings.PACKAGED_EMBEDDER,
        device: str | None = None,
        dense_weight: float | None = None,
        engine: str | None = None,
        reranker: str | None = None,
    ) -> None:
        if path is not None and url is not None:
            raise ConfigError("give either a Qdrant path or a Qdrant URL, not both")
        if dense_weight is None:
            dense_weight = DEFAULT_DENSE_WEIGHTS.get(embedder, 1.0)
        if dense_weight < 0:
            raise ConfigError(f"dense_weight must be >= 0, got {dense_weight}")
        engine = settings.qdrant_engine() if engine is None else engine
        if engine not in settings.QDRANT_ENGINES:
            raise ConfigError(f"unknown Qdrant engine {engine!r}: use {' or '.join(settings.QDRANT_ENGINES)}")
        if path is None and url is None:
            url = settings.qdrant_url()
        self.collection = collection
        self.embedder_name = embedder
        self.device = device
        self.dense_weight = dense_weight
        self.reranker_name = reranker or EVIDENCE_RERANKER
        self._rerankers: dict[str, Reranker | None] = {}
        self._lock = threading.RLock()
        self._model: SentenceTransformer | None = None
        self._checked = False
        self._backend = _open_backend(
            collection, None if url else Path(path or settings.qdrant_path()).expanduser(), url, engine
        )
        self.engine = self._backend.engine
        self.location = self._backend.location
        if self.engine == "edge" and not self._backend.exists() and local_collection_exists(self.location, collection):
            logger.warning(
                "collection %r has no Qdrant Edge shard in %s but a qdrant-client local collection: "
                "`zhrag index --from-local` copies it without re-embedding, --qdrant-engine local uses it as it is",
                collection,
                self.location,
            )

    def __enter__(self) -> KnowledgeStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the engine (and the embedded storage's lock)."""
        with self._lock:
            self._backend.close()

    @property
    def embedder(self) -> SentenceTransformer:
        """The dense embedder, loaded on first use."""
        if self._model is None:
            self._model = load_embedder(self.embedder_name, self.device)
        return self._model

    def exists(self) -> bool:
        """Whether the collection exists."""
        with self._lock:
            return self._backend.exists()

    def count(self) -> int:
        """Number of chunks in the collection (0 when it does not exist)."""
        with self._lock:
            return self._backend.count()

    def index_settings(self) -> dict[str, Any]:
        """The collection's zhrag metadata: embedder, dimension and BM25 parameters.

        Raises:
            KnowledgeBaseError: the collection does not exist or was not created by zhrag.
        """
        with self._lock:
            if not self._backend.exists():
                raise KnowledgeBaseError(
                    f"collection {self.collection!r} does not exist at {self.location}: index a knowledge base first"
                )
            stored = self._backend.metadata()
        if not isinstance(stored, dict) or "embedder" not in stored or "bm25" not in stored:
            raise KnowledgeBaseError(
                f"collection {self.collection!r} at {self.location} was not created by zhrag (no index metadata)"
            )
        return stored

    def search(
        self,
        query: str,
        top_k: int = 3,
        *,
        mode: str = "hybrid",
        dense_weight: float | None = None,
        reranker: str | None = None,
    ) -> list[Passage]:
        """The ``top_k`` chunks best matching ``query``.

        ``hybrid``: BM25 and dense candidates fused with (weighted) RRF, scores are RRF scores;
        ``dense``: cosine similarity only; ``sparse``: BM25 only (the embedder is not needed, and a
        query without content terms finds nothing). A reranker (``reranker``, default the store's:
        ``evidence`` unless constructed otherwise; ``none`` turns it off) reorders the best
        ``RERANK_DEPTH`` candidates and attaches each passage's evidence window. ``dense_weight``
        overrides the store's RRF weight of the dense list for this call.

        Raises:
            ConfigError: empty query, ``top_k`` < 1, an unknown mode or a negative weight.
            KnowledgeBaseError: missing collection, or one indexed with another embedder.
            ModelLoadError: a cross-encoder reranker cannot be loaded.
        """
        ranker = self._reranker(reranker or self.reranker_name)
        weight = self.dense_weight if dense_weight is None else dense_weight
        if weight < 0:
            raise ConfigError(f"dense_weight must be >= 0, got {weight}")
        candidates = self._fused(query, max(top_k, RERANK_DEPTH) if ranker else top_k, mode, weight)
        return ranker.rerank(query, candidates)[:top_k] if ranker else candidates

    def _reranker(self, name: str) -> Reranker | None:
        """The reranker called ``name``, loaded once per store."""
        if name not in self._rerankers:
            self._rerankers[name] = load_reranker(name, self.device)
        return self._rerankers[name]

    def _fused(self, query: str, top_k: int, mode: str, dense_weight: float) -> list[Passage]:
        """The engine's ``top_k`` candidates for ``query`` in ``mode`` (see :meth:`search`)."""
        if not query or not query.strip():
            raise ConfigError("empty query: give a question or keywords to search for")
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        if mode not in SEARCH_MODES:
            raise ConfigError(f"unknown search mode {mode!r}: use {', '.join(SEARCH_MODES)}")
        self._check_embedder()
        dense = None
        if mode != "sparse":
            dense = self.embedder.encode_query(query, normalize_embeddings=True, convert_to_numpy=True).tolist()
        sparse = None
        if mode != "dense":
            vector = lexical.query_vector(query)
            sparse = (list(vector.indices), list(vector.values))
        with self._lock:
            hits = self._backend.search(
                dense,
                sparse,
                limit=top_k,
                prefetch=max(PREFETCH_MIN, PREFETCH_PER_RESULT * top_k),
                dense_weight=dense_weight,
            )
        return [
            Passage(
                id=str(hit.payload.get("chunk_id", "")),
                title=str(hit.payload.get("title", "")),
                text=str(hit.payload.get("text", "")),
                score=hit.score,
            )
            for hit in hits
        ]

    def add(
        self, text: str, title: str = "", metadata: dict[str, Any] | None = None, doc_id: str | None = None
    ) -> list[str]:
        """Chunk, embed and store one document; returns its chunk ids.

        Without ``doc_id`` the id is derived from the text, so adding the same text twice stores it once.

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
        self._upsert_chunks(chunks, documents=1, batch_size=len(chunks), progress=False)
        return [chunk.id for chunk in chunks]

    def upsert_documents(
        self,
        documents: Iterable[Document],
        *,
        batch_size: int = 128,
        progress: bool = False,
        chunk_size: int = CHUNK_SIZE,
        overlap: int = CHUNK_OVERLAP,
    ) -> IndexReport:
        """Chunk, encode and upsert documents in batches (stable ids: re-running is idempotent).

        All documents are read and tokenised before anything is written, so a malformed source
        leaves the collection untouched; a new collection takes its BM25 ``avgdl`` from them.

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
        report = self._upsert_chunks(chunks, documents=count, batch_size=batch_size, progress=progress, bulk=True)
        return IndexReport(
            documents=count,
            chunks=report.chunks,
            seconds=time.perf_counter() - start,
            sparse_seconds=report.sparse_seconds,
            dense_seconds=report.dense_seconds,
            upsert_seconds=report.upsert_seconds,
        )

    def copy_from(self, source: KnowledgeStore, *, batch_size: int = 512, progress: bool = False) -> int:
        """Copy every point of ``source`` (another engine's collection) into this one, vectors as stored.

        Nothing is re-embedded: this turns a qdrant-client local collection into an Edge shard in
        seconds. The collection is created with ``source``'s metadata; if it exists, its metadata
        must be the same. Returns the number of points copied.

        Raises:
            KnowledgeBaseError: ``source`` has no zhrag collection, was indexed with another embedder
                than this store's, or this collection holds another index.
        """
        stored = source.index_settings()
        if stored["embedder"] != self.embedder_name:
            raise KnowledgeBaseError(
                f"collection {source.collection!r} at {source.location} was indexed with embedder "
                f"{stored['embedder']!r}, not {self.embedder_name!r}: open the target with that embedder"
            )
        with self._lock:
            if not self._backend.exists():
                self._backend.create(int(stored["dimension"]), stored)
            elif self.index_settings() != stored:
                raise KnowledgeBaseError(
                    f"collection {self.collection!r} at {self.location} holds an index with other settings "
                    f"than {source.collection!r} at {source.location}: copy into a new collection"
                )
            copied = 0
            with tqdm(total=source.count(), desc="copying", unit="point", disable=not progress) as bar:
                for batch in source._backend.scroll(batch_size):
                    if batch:
                        self._backend.upsert(batch)
                    copied += len(batch)
                    bar.update(len(batch))
            self._backend.flush(optimize=True)
        return copied

    def _upsert_chunks(
        self, chunks: Sequence[Chunk], *, documents: int, batch_size: int, progress: bool, bulk: bool = False
    ) -> IndexReport:
        """Encode chunks (BM25 with the collection's avgdl, dense in batches), upsert them, flush."""
        start = time.perf_counter()
        tokens = [lexical.tokenize(chunk.title) + lexical.tokenize(chunk.text) for chunk in chunks]
        sparse_seconds = time.perf_counter() - start
        bm25 = self._ensure_collection(lexical.average_length(tokens))
        dense_seconds = upsert_seconds = 0.0
        with tqdm(total=len(chunks), desc="indexing", unit="chunk", disable=not progress) as bar:
            for first in range(0, len(chunks), batch_size):
                batch = chunks[first : first + batch_size]
                clock = time.perf_counter()
                sparse = [
                    lexical.document_vector(terms, bm25["avgdl"], k1=bm25["k1"], b=bm25["b"])
                    for terms in tokens[first : first + batch_size]
                ]
                sparse_seconds += time.perf_counter() - clock
                clock = time.perf_counter()
                dense = self.embedder.encode_document(
                    [_dense_text(chunk) for chunk in batch], normalize_embeddings=True, convert_to_numpy=True
                )
                dense_seconds += time.perf_counter() - clock
                points = [
                    PointData(
                        id=point_id(chunk.id),
                        dense=vector.tolist(),
                        sparse_indices=list(sparse_vector.indices),
                        sparse_values=list(sparse_vector.values),
                        payload=_payload(chunk),
                    )
                    for chunk, vector, sparse_vector in zip(batch, dense, sparse, strict=True)
                ]
                clock = time.perf_counter()
                with self._lock:
                    self._backend.upsert(points)
                upsert_seconds += time.perf_counter() - clock
                bar.update(len(batch))
        clock = time.perf_counter()
        with self._lock:
            self._backend.flush(optimize=bulk)
        upsert_seconds += time.perf_counter() - clock
        return IndexReport(
            documents=documents,
            chunks=len(chunks),
            seconds=time.perf_counter() - start,
            sparse_seconds=sparse_seconds,
            dense_seconds=dense_seconds,
            upsert_seconds=upsert_seconds,
        )

    def _ensure_collection(self, avgdl: float) -> dict[str, float]:
        """Create the collection if missing (recording embedder and ``avgdl``); return its BM25 parameters."""
        with self._lock:
            if not self._backend.exists():
                dimension = embedding_dimension(self.embedder)
                self._backend.create(
                    dimension,
                    {
                        "embedder": self.embedder_name,
                        "dimension": dimension,
                        "bm25": {"avgdl": avgdl, "k1": lexical.K1, "b": lexical.B},
                    },
                )
                self._checked = True
        self._check_embedder()
        return self.index_settings()["bm25"]

    def _check_embedder(self) -> None:
        """Fail clearly when the collection was indexed with a different embedder than this store's."""
        if self._checked:
            return
        stored = self.index_settings()
        if stored["embedder"] != self.embedder_name:
            raise KnowledgeBaseError(
                f"collection {self.collection!r} was indexed with embedder {stored['embedder']!r} "
                f"(dimension {stored.get('dimension')}), not {self.embedder_name!r}: use that embedder "
                "or index into another collection"
            )
        self._checked = True


def _open_backend(collection: str, path: Path | None, url: str | None, engine: str) -> Backend:
    """The backend of a server (``url``) or of the embedded ``engine`` at ``path``."""
    if url is None and engine == "edge":
        return EdgeBackend(path, collection)
    return ClientBackend(collection, path=None if url else str(path), url=url)


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
