"""Storage backends of the knowledge store: the few operations :class:`~zhrag.kb.store.KnowledgeStore`
needs from a Qdrant engine, and the qdrant-client implementation (embedded "local" mode or a server).

The Qdrant Edge implementation is :mod:`zhrag.kb.qdrant_edge_backend`. A backend holds one
collection; it stores points (named vectors ``dense`` and ``bm25`` plus a payload) and zhrag's index
metadata, and answers the hybrid query. Encoding text, batching and checking the metadata stay in
the store, so every engine behaves the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from qdrant_client import QdrantClient, models

from zhrag import settings
from zhrag.errors import QdrantUnavailableError

DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"
#: Seconds to wait for a Qdrant server's answer when opening a store.
CONNECT_TIMEOUT_S = 3
_METADATA_KEY = "zhrag"


@dataclass(frozen=True)
class PointData:
    """One chunk as stored: point id (uuid string), dense vector (``None``: not embedded yet), BM25 sparse vector,
    payload."""

    id: str
    dense: list[float] | None
    sparse_indices: list[int]
    sparse_values: list[float]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    """One search result: the point's payload and its fused score."""

    payload: dict[str, Any]
    score: float


class Backend(Protocol):
    """What the knowledge store needs from a Qdrant engine holding one collection."""

    #: The engine: ``edge``, ``local`` or ``server``.
    engine: str
    #: Where the data lives, as shown in messages: the embedded directory or the server URL.
    location: str

    def exists(self) -> bool:
        """Whether the collection exists."""
        ...

    def count(self) -> int:
        """Number of points (0 when the collection does not exist)."""
        ...

    def metadata(self) -> dict[str, Any] | None:
        """zhrag's index metadata of an existing collection, ``None`` when it has none."""
        ...

    def create(self, dimension: int, metadata: dict[str, Any]) -> None:
        """Create the collection (dense cosine vectors of ``dimension``, IDF sparse vectors) with ``metadata``."""
        ...

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace zhrag's metadata of the existing collection."""
        ...

    def upsert(self, points: Sequence[PointData]) -> None:
        """Insert or overwrite points (the collection exists)."""
        ...

    def flush(self, *, optimize: bool = False) -> None:
        """Make the upserts durable; ``optimize`` after a bulk load (build indexes where the engine needs it)."""
        ...

    def search(
        self,
        dense: list[float] | None,
        sparse: tuple[list[int], list[float]] | None,
        *,
        limit: int,
        prefetch: int,
        dense_weight: float,
    ) -> list[Hit]:
        """The best ``limit`` points for the query vectors given.

        Both: BM25 (when ``sparse`` has terms) and dense candidates, ``prefetch`` each, fused with
        weighted RRF (BM25 weighs 1). One: plain nearest-neighbour search scored by cosine or BM25;
        a sparse query without terms finds nothing.
        """
        ...

    def scroll(self, batch_size: int) -> Iterator[list[PointData]]:
        """Every point with its vectors and payload, in batches."""
        ...

    def close(self) -> None:
        """Release the engine (and the storage lock of embedded engines)."""
        ...


def locked_error(path: str | Path) -> QdrantUnavailableError:
    """The error of an embedded storage held by another client or process (same text for every engine)."""
    return QdrantUnavailableError(
        f"embedded Qdrant storage {path} is locked: another process or client holds it "
        "(close it, or run a Qdrant server and pass its URL)"
    )


def local_collection_exists(path: str | Path, collection: str) -> bool:
    """Whether qdrant-client's local mode has ``collection`` at ``path`` (from its ``meta.json``; takes no lock)."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and collection in (meta.get("collections") or {})


#: HNSW graph of the dense vectors on a server: Qdrant's defaults, stated so they are chosen, not inherited. m=16 links
#: per node and ef_construct=100 give recall@10 above 0.99 for 384-d sentence embeddings at a few million points
#: (Qdrant's benchmarks); raise both for higher recall at the cost of index memory and build time.
SERVER_HNSW = models.HnswConfigDiff(m=16, ef_construct=100)
#: int8 scalar quantization of the dense vectors, kept in RAM, with the float32 originals on disk: a quarter of the
#: memory (3 M chunks x 384 dims: 1.1 GiB instead of 4.3 GiB) and rescoring against the originals keeps the ranking.
SERVER_QUANTIZATION = models.ScalarQuantization(
    scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
)
#: Environment variables of a server collection's shard count and replication factor (a cluster; default 1 each).
SHARDS_ENV, REPLICAS_ENV = "ZHRAG_QDRANT_SHARDS", "ZHRAG_QDRANT_REPLICAS"


def collection_config(dimension: int, *, server: bool = False) -> dict[str, Any]:
    """``create_collection`` arguments of a knowledge-base collection: cosine dense vectors and IDF-weighted BM25
    sparse vectors; on a ``server`` also the layout for a knowledge base larger than RAM (zhwiki: several million
    chunks): dense vectors and payload on disk with int8 quantized copies in RAM (:data:`SERVER_QUANTIZATION`),
    the sparse index on disk, :data:`SERVER_HNSW`, and shards / replicas from ``ZHRAG_QDRANT_SHARDS`` /
    ``ZHRAG_QDRANT_REPLICAS`` (see docs/scaling.md).

    Raises:
        ConfigError: a shard or replica count that is not a positive integer.
    """
    if not server:
        return {
            "vectors_config": {DENSE_VECTOR: models.VectorParams(size=dimension, distance=models.Distance.COSINE)},
            "sparse_vectors_config": {SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        }
    return {
        "vectors_config": {
            DENSE_VECTOR: models.VectorParams(size=dimension, distance=models.Distance.COSINE, on_disk=True)
        },
        "sparse_vectors_config": {
            SPARSE_VECTOR: models.SparseVectorParams(
                modifier=models.Modifier.IDF, index=models.SparseIndexParams(on_disk=True)
            )
        },
        "on_disk_payload": True,
        "hnsw_config": SERVER_HNSW,
        "quantization_config": SERVER_QUANTIZATION,
        "shard_number": settings.positive_env_int(SHARDS_ENV, 1),
        "replication_factor": settings.positive_env_int(REPLICAS_ENV, 1),
    }


class ClientBackend:
    """A collection reached through qdrant-client: embedded local mode (``path``; ``":memory:"`` keeps it
    in memory only) or a server (``url``).

    Local mode keeps every point in Python and scores BM25 there (exact, brute force); it allows
    one client per directory. Fusion is qdrant-client's (local) or the server's RRF.
    """

    def __init__(self, collection: str, *, path: str | None = None, url: str | None = None) -> None:
        self.collection = collection
        if url is not None:
            self.engine, self.location = "server", url
            self._client = _open_server(url)
        else:
            self.engine, self.location = "local", str(path)
            self._client = _open_local(str(path))

    @property
    def client(self) -> QdrantClient:
        """The qdrant-client (for readers of collections zhrag did not write: :mod:`zhrag.kb.langchain_store`)."""
        return self._client

    def exists(self) -> bool:
        """Whether the collection exists."""
        return self._client.collection_exists(self.collection)

    def count(self) -> int:
        """Number of points (0 when the collection does not exist)."""
        if not self.exists():
            return 0
        return self._client.count(self.collection, exact=True).count

    def metadata(self) -> dict[str, Any] | None:
        """zhrag's metadata from the collection's own metadata field."""
        stored = (self._client.get_collection(self.collection).config.metadata or {}).get(_METADATA_KEY)
        return stored if isinstance(stored, dict) else None

    def create(self, dimension: int, metadata: dict[str, Any]) -> None:
        """Create the collection with zhrag's metadata in its metadata field (on a server, with
        :func:`collection_config`'s layout for large knowledge bases)."""
        self._client.create_collection(
            self.collection,
            **collection_config(dimension, server=self.engine == "server"),
            metadata={_METADATA_KEY: metadata},
        )

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace zhrag's key of the collection's metadata (other keys are kept)."""
        self._client.update_collection(self.collection, metadata={_METADATA_KEY: metadata})

    def upsert(self, points: Sequence[PointData]) -> None:
        """Upsert and wait until the points are applied."""
        structs = [
            models.PointStruct(
                id=point.id,
                vector={
                    SPARSE_VECTOR: models.SparseVector(indices=point.sparse_indices, values=point.sparse_values),
                    **({DENSE_VECTOR: point.dense} if point.dense is not None else {}),
                },
                payload=point.payload,
            )
            for point in points
        ]
        self._client.upsert(self.collection, points=structs, wait=True)

    def flush(self, *, optimize: bool = False) -> None:
        """Nothing to do: upserts wait for the engine (local mode persists each one)."""

    def search(
        self,
        dense: list[float] | None,
        sparse: tuple[list[int], list[float]] | None,
        *,
        limit: int,
        prefetch: int,
        dense_weight: float,
    ) -> list[Hit]:
        """One ``query_points`` call; hybrid: prefetches fused by the engine's RRF (local mode: BM25 wins ties)."""
        if dense is None or sparse is None:
            return self._nearest(dense, sparse, limit)
        indices, values = sparse
        prefetches = [models.Prefetch(query=dense, using=DENSE_VECTOR, limit=prefetch)]
        fusion: models.Query = models.FusionQuery(fusion=models.Fusion.RRF)
        if indices:
            sparse_query = models.SparseVector(indices=indices, values=values)
            prefetches.insert(0, models.Prefetch(query=sparse_query, using=SPARSE_VECTOR, limit=prefetch))
            if dense_weight != 1.0:
                fusion = models.RrfQuery(rrf=models.Rrf(weights=[1.0, dense_weight]))
        response = self._client.query_points(
            self.collection, prefetch=prefetches, query=fusion, limit=limit, with_payload=True
        )
        return [
            Hit(payload=point.payload, score=float(point.score))
            for point in response.points
            if point.payload is not None
        ]

    def _nearest(
        self, dense: list[float] | None, sparse: tuple[list[int], list[float]] | None, limit: int
    ) -> list[Hit]:
        """Nearest neighbours of the one query vector given."""
        if dense is not None:
            query: Any = dense
            using = DENSE_VECTOR
        elif sparse is not None and sparse[0]:
            query, using = models.SparseVector(indices=sparse[0], values=sparse[1]), SPARSE_VECTOR
        else:
            return []
        response = self._client.query_points(self.collection, query=query, using=using, limit=limit, with_payload=True)
        return [
            Hit(payload=point.payload, score=float(point.score))
            for point in response.points
            if point.payload is not None
        ]

    def scroll(self, batch_size: int) -> Iterator[list[PointData]]:
        """Every point with vectors and payload, ``batch_size`` at a time."""
        offset = None
        while True:
            records, offset = self._client.scroll(
                self.collection, limit=batch_size, offset=offset, with_payload=True, with_vectors=True
            )
            yield [point_data(record) for record in records]
            if offset is None:
                return

    def close(self) -> None:
        """Close the client (local mode releases its directory lock)."""
        self._client.close()


def point_data(record: Any) -> PointData:
    """A scrolled record (qdrant-client or Qdrant Edge: ``id``, named ``vector``, ``payload``) as :class:`PointData`."""
    vectors = record.vector if isinstance(record.vector, dict) else {}
    sparse = vectors.get(SPARSE_VECTOR)
    return PointData(
        id=str(record.id),
        dense=list(vectors[DENSE_VECTOR]) if vectors.get(DENSE_VECTOR) is not None else None,
        sparse_indices=list(sparse.indices) if sparse is not None else [],
        sparse_values=list(sparse.values) if sparse is not None else [],
        payload=dict(record.payload or {}),
    )


def _open_local(path: str) -> QdrantClient:
    """An embedded local-mode client, or a clear error when another client holds the storage lock."""
    if path == ":memory:":
        return QdrantClient(location=path)
    try:
        # One store may serve an MCP server's worker threads; the store's own lock serialises the calls.
        return QdrantClient(path=path, force_disable_check_same_thread=True)
    except RuntimeError as error:
        if "already accessed" in str(error):
            raise locked_error(path) from None
        raise QdrantUnavailableError(f"cannot open embedded Qdrant storage {path}: {error}") from None
    except OSError as error:
        raise QdrantUnavailableError(f"cannot open embedded Qdrant storage {path}: {error.strerror}") from None


def _open_server(url: str) -> QdrantClient:
    """A client of the Qdrant server at ``url``, after checking that it answers within a few seconds."""
    try:
        probe = QdrantClient(url=url, api_key=_api_key(), timeout=CONNECT_TIMEOUT_S, check_compatibility=False)
    except Exception as error:  # noqa: BLE001 - invalid URLs raise ValueError or httpx errors
        raise QdrantUnavailableError(f"invalid Qdrant URL {url!r}: {error}") from None
    try:
        probe.get_collections()
    except Exception as error:  # noqa: BLE001 - connection refused, timeout, TLS or HTTP errors
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise QdrantUnavailableError(f"Qdrant server at {url} is unreachable: {reason}") from None
    finally:
        probe.close()
    return QdrantClient(url=url, api_key=_api_key())


def _api_key() -> str | None:
    """The Qdrant server's API key (``QDRANT_API_KEY``, as the official mcp-server-qdrant and Qdrant Cloud use)."""
    return os.environ.get("QDRANT_API_KEY") or None
