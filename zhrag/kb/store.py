"""The knowledge base in Qdrant: one collection, its index metadata and its hybrid (dense + BM25) query.

:class:`KnowledgeStore` owns the engine and the collection; around it, :mod:`zhrag.kb.indexing`
chunks, encodes and writes documents (and tracks whether the knowledge base was fully indexed),
:mod:`zhrag.kb.retrieval` reranks the store's candidates for ``qdrant-find``, and
:mod:`zhrag.kb.migration` copies a collection between engines.

A collection holds one point per chunk with two named vectors:

- ``dense``: a sentence-transformers embedding of ``title + text`` (cosine distance);
- ``bm25``: jieba-term BM25 document weights (:mod:`zhrag.kb.lexical`) with ``Modifier.IDF``,
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

Engines (:mod:`zhrag.kb.qdrant_backends`): embedded storage under a directory (default
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from zhrag import settings
from zhrag.errors import ConfigError, KnowledgeBaseError
from zhrag.kb import lexical
from zhrag.kb.embeddings import E5_EMBEDDER, USE_EMBEDDER, Embedder, embedding_dimension, load_embedder
from zhrag.kb.passage import Passage
from zhrag.kb.qdrant_backends import Backend, ClientBackend, PointData, local_collection_exists
from zhrag.kb.qdrant_edge_backend import EdgeBackend

if TYPE_CHECKING:
    from zhrag.kb.langchain_store import LangChainCollection

#: Namespace of the uuid5 point ids derived from chunk ids (the URL is only a name, never fetched).
POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/zhrag/chunk")
#: Candidates each prefetch hands to the fusion: ``max(PREFETCH_MIN, PREFETCH_PER_RESULT * top_k)``.
PREFETCH_MIN = 20
PREFETCH_PER_RESULT = 5
#: Value of the collection metadata's ``dense`` while chunks lack their dense vector (a sparse-only first use).
DENSE_MISSING = "missing"
#: Seconds a store trusts "dense vectors missing" before reading the metadata again (another process may build them).
DENSE_RECHECK_SECONDS = 10.0
#: RRF weight of the dense list per embedder (BM25 weighs 1); embedders not listed weigh 1.
DEFAULT_DENSE_WEIGHTS = {
    # the weight of best MRR with the evidence reranker on 1,000 seeded pairs of training paragraphs
    # (zhrag eval-retrieval --sets rc-train --rc-limit 1000 --dense-weights 0.2 0.5 1 2; docs/results/embedders)
    settings.PACKAGED_EMBEDDER: 0.2,
    E5_EMBEDDER: 2.0,
    USE_EMBEDDER: 0.2,
}
#: What :meth:`KnowledgeStore.candidates` ranks by: fused BM25 + dense (default), dense only, BM25 only.
SEARCH_MODES = ("hybrid", "dense", "sparse")

logger = logging.getLogger(__name__)


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk: uuid5 of its chunk id, so re-indexing overwrites in place."""
    return str(uuid.uuid5(POINT_NAMESPACE, chunk_id))


class KnowledgeStore:
    """A Qdrant collection of knowledge-base chunks: its metadata, its points and the hybrid query.

    Args:
        collection: Collection name.
        path: Embedded storage directory (default :func:`zhrag.settings.qdrant_path`).
        url: Qdrant server URL; default ``ZHRAG_QDRANT_URL`` unless ``path`` is given.
        embedder: Dense embedder name or path (see :func:`zhrag.kb.embeddings.load_embedder`),
            loaded on first use; it must match the one the collection was indexed with.
        device: Device of the embedder (``None``: automatic).
        dense_weight: RRF weight of the dense ranking against BM25's 1 (``None``: from
            :data:`DEFAULT_DENSE_WEIGHTS`, else 1).
        engine: Embedded engine, ``edge`` (Qdrant Edge shard under ``<path>/edge/<collection>/``) or
            ``local`` (qdrant-client local mode in ``<path>``); ``None``: :func:`zhrag.settings.qdrant_engine`.
            Not used with a server.

    Attributes:
        engine: ``edge``, ``local`` or ``server``.
        location: The embedded directory or the server URL.

    Every method is safe to call from several threads (one lock around the engine).

    Raises:
        ConfigError: both ``path`` and ``url`` were given, a negative ``dense_weight``, or an
            unknown engine.
        QdrantUnavailableError: the server does not answer, or the embedded storage is locked by
            another store or process.
    """

    def __init__(
        self,
        collection: str | None = None,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        embedder: str = settings.DEFAULT_EMBEDDER,
        device: str | None = None,
        dense_weight: float | None = None,
        engine: str | None = None,
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
        self.collection = collection = settings.default_collection(embedder) if collection is None else collection
        self.embedder_name = embedder
        self.device = device
        self.dense_weight = dense_weight
        self._lock = threading.RLock()
        self._model: Embedder | None = None
        self._checked = False
        self._dense_ready = False  # once every chunk has its dense vector, the collection stays that way
        self._dense_checked: float | None = None  # monotonic time of the last "dense missing" reading
        # A collection written by LangChain's QdrantVectorStore, searched through langchain-qdrant
        # (None: not looked at yet, False: a zhrag collection or an engine without such collections).
        self._langchain: LangChainCollection | bool | None = None
        self._backend = _open_backend(
            collection, None if url else Path(path or settings.qdrant_path()).expanduser(), url, engine
        )
        self.engine = self._backend.engine
        self.location = self._backend.location
        if self.engine == "edge" and not self._backend.exists() and local_collection_exists(self.location, collection):
            logger.warning(
                "collection %r has no Qdrant Edge shard in %s but a qdrant-client local collection: "
                "`zhrag index --from-local` copies it without re-embedding, --qdrant-engine local uses it as it is "
                "(the only way for one written by LangChain's QdrantVectorStore)",
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
    def embedder(self) -> Embedder:
        """The dense embedder, loaded on first use."""
        with self._lock:
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
        """The collection's zhrag metadata: embedder, dimension, BM25 parameters (and indexing state).

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

    def create(self, settings_: dict[str, Any], *, dimension: int | None = None) -> bool:
        """Create the collection with ``settings_`` (BM25 parameters and any other keys) unless it exists.

        The embedder's name and dimension (``dimension``, else the embedder's, which loads it) come
        first in the metadata; keys of ``settings_`` override them. Returns whether it was created.
        """
        with self._lock:
            if self._backend.exists():
                return False
            dimension = embedding_dimension(self.embedder) if dimension is None else dimension
            self._backend.create(dimension, {"embedder": self.embedder_name, "dimension": dimension, **settings_})
            self._checked = True
            return True

    def update_settings(self, base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
        """Set top-level keys of the collection's zhrag metadata; returns the new metadata.

        ``base``: the metadata as the caller last had it (what this method returned), to save reading it again when
        the caller is its only writer (an indexing run checkpointing every batch).

        Raises:
            KnowledgeBaseError: the collection does not exist or was not created by zhrag.
        """
        with self._lock:
            stored = {**(self.index_settings() if base is None else base), **changes}
            self._backend.set_metadata(stored)
            if "dense" in changes:
                self._dense_ready, self._dense_checked = False, None
            return stored

    def upsert(self, points: Sequence[PointData]) -> None:
        """Insert or overwrite points of the existing collection."""
        with self._lock:
            self._backend.upsert(points)

    def flush(self, *, optimize: bool = False) -> None:
        """Make the upserts durable (``optimize``: also merge segments after a bulk load)."""
        with self._lock:
            self._backend.flush(optimize=optimize)

    def scroll(self, batch_size: int = 512) -> Iterator[list[PointData]]:
        """Every point with its vectors and payload, in batches (the lock is held while a batch is read)."""
        batches = self._backend.scroll(batch_size)
        while True:
            with self._lock:
                batch = next(batches, None)
            if batch is None:
                return
            yield batch

    def candidates(
        self, query: str, top_k: int = 3, *, mode: str = "hybrid", dense_weight: float | None = None
    ) -> list[Passage]:
        """The engine's ``top_k`` chunks for ``query``, without reranking.

        ``hybrid``: BM25 and dense candidates fused with (weighted) RRF, scores are RRF scores;
        ``dense``: cosine similarity only; ``sparse``: BM25 only (the embedder is not needed, and a
        query without content terms finds nothing). ``dense_weight`` overrides the store's RRF weight
        of the dense list for this call.

        Raises:
            ConfigError: empty query, ``top_k`` < 1, an unknown mode or a negative weight.
            KnowledgeBaseError: missing collection, or one indexed with another embedder.
        """
        weight = self.dense_weight if dense_weight is None else dense_weight
        if weight < 0:
            raise ConfigError(f"dense_weight must be >= 0, got {weight}")
        if not query or not query.strip():
            raise ConfigError("empty query: give a question or keywords to search for")
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        if mode not in SEARCH_MODES:
            raise ConfigError(f"unknown search mode {mode!r}: use {', '.join(SEARCH_MODES)}")
        langchain = self.langchain_collection()
        if langchain is not None:
            if mode == "sparse":
                raise KnowledgeBaseError(
                    f"collection {self.collection!r} was written by LangChain's QdrantVectorStore and has no BM25 "
                    "vectors: search it in hybrid or dense mode (both are dense there)"
                )
            with self._lock:
                return langchain.search(query, top_k)
        self.check_embedder()
        if mode != "sparse" and not self.dense_ready():
            if mode == "dense":
                raise KnowledgeBaseError(
                    f"collection {self.collection!r} has no dense vectors yet: run `zhrag index --dense`"
                )
            mode = "sparse"  # the hybrid's dense half is not built: BM25 alone
        dense = None
        if mode != "sparse":
            dense = self.embedder.query(query)
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
                dense_weight=weight,
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

    def langchain_collection(self) -> LangChainCollection | None:
        """The collection as a LangChain ``QdrantVectorStore`` collection (:mod:`zhrag.kb.langchain_store`), or None.

        Such a collection (no zhrag metadata, ``page_content`` payloads) is searched through langchain-qdrant with
        this store's embedder. Only qdrant-client engines (``local``, ``server``) hold them; the answer is looked up
        once the collection exists and kept.

        Raises:
            KnowledgeBaseError: a LangChain collection whose dimension or distance does not fit the embedder.
        """
        with self._lock:
            if self._langchain is None:
                client = self._backend.client if isinstance(self._backend, ClientBackend) else None
                if client is None or self._checked:
                    self._langchain = False
                elif self._backend.exists():
                    if self._backend.metadata() is not None:
                        self._langchain = False
                    else:
                        from zhrag.kb import langchain_store

                        if langchain_store.is_langchain_collection(client, self.collection):
                            embeddings = langchain_store.ZhragEmbeddings(self.embedder)
                            self._langchain = langchain_store.LangChainCollection(client, self.collection, embeddings)
            return None if isinstance(self._langchain, bool) else self._langchain

    def dense_ready(self) -> bool:
        """Whether every chunk has its dense vector (not after a sparse-only first use until ``zhrag index --dense``).

        A "missing" reading is trusted for :data:`DENSE_RECHECK_SECONDS`, so a server notices the vectors
        another process built.
        """
        with self._lock:
            if self._dense_ready:
                return True
            now = time.monotonic()
            if self._dense_checked is not None and now - self._dense_checked < DENSE_RECHECK_SECONDS:
                return False
            if self.index_settings().get("dense") == DENSE_MISSING:
                self._dense_checked = now
                return False
            self._dense_ready = True
            return True

    def check_embedder(self) -> None:
        """Fail clearly when the collection was indexed with a different embedder than this store's.

        Raises:
            KnowledgeBaseError: missing collection, or one indexed with another embedder.
        """
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
    if url is None and path is not None and engine == "edge":
        return EdgeBackend(path, collection)
    return ClientBackend(collection, path=None if url else str(path), url=url)
