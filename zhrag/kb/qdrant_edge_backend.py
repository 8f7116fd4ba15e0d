"""Qdrant Edge backend of the knowledge store: one in-process Edge shard per collection.

Layout: ``<qdrant path>/edge/<collection>/`` holds the shard (``edge_config.json``, ``segments/``,
``wal/``) and zhrag's index metadata (``zhrag_index.json``, written atomically before the shard is
created); ``<qdrant path>/edge/.lock`` is zhrag's lock. A qdrant-client local-mode store at
``<qdrant path>`` is left untouched.

Concurrency: Edge takes an exclusive, non-blocking lock on the shard's write-ahead log, so a
second opener (another process, or a second shard object in the same process) fails with
"failed to open WAL ... WouldBlock"; there are no concurrent readers. zhrag also locks the whole
``edge`` directory from the moment a store is opened, before any shard exists (one store per Qdrant
path, as in local mode), and reports either lock as local mode's "is locked" error. An update is
in the WAL when ``update`` returns: a killed process loses nothing, and ``flush`` writes the segments.

Search runs the BM25 and dense prefetches as one ``query_batch`` and fuses them here with
:func:`weighted_rrf`, not with Edge's ``Fusion.Rrf``: Edge's RRF gives the same scores but breaks
ties in hash-map order, which changes from one process to the next, and ties are common
(with ``k=2`` and dense weight 0.2, BM25 rank 5 scores exactly as dense rank 1).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import portalocker
import qdrant_edge as edge

from zhrag.errors import ConfigError, KnowledgeBaseError, QdrantUnavailableError
from zhrag.kb.qdrant_backends import DENSE_VECTOR, SPARSE_VECTOR, Hit, PointData, locked_error, point_data

#: Sub-directory of the Qdrant path holding one Edge shard per collection.
EDGE_DIR = "edge"
METADATA_FILE = "zhrag_index.json"
LOCK_FILE = ".lock"
_SHARD_CONFIG = "edge_config.json"
#: RRF ranking constant (Qdrant's default).
RRF_K = 2


def shard_directory(path: str | Path, collection: str) -> Path:
    """The Edge shard directory of ``collection`` under the Qdrant path ``path``.

    Raises:
        ConfigError: the collection name cannot be a directory name.
    """
    if not collection or collection in (".", "..") or "/" in collection or "\\" in collection:
        raise ConfigError(f"collection name {collection!r} cannot name an Edge shard directory")
    return Path(path) / EDGE_DIR / collection


def weighted_rrf(ranked: Sequence[Sequence[str]], weights: Sequence[float], limit: int) -> list[tuple[str, float]]:
    """Weighted reciprocal rank fusion of ranked id lists: the best ``limit`` (id, score) pairs.

    An id at 0-based position ``p`` of a list of weight ``w`` scores ``1 / ((p + 1) / w + k - 1)``
    (``k`` = :data:`RRF_K`; nothing for ``w <= 0``), summed over lists: Qdrant's formula. Equal scores
    keep first-seen order (earlier list, then earlier position), as qdrant-client's local mode does.
    """
    scores: dict[str, float] = {}
    for ids, weight in zip(ranked, weights, strict=True):
        for position, point in enumerate(ids):
            gain = 1.0 / ((position + 1) / weight + RRF_K - 1) if weight > 0 else 0.0
            scores[point] = scores.get(point, 0.0) + gain
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)[:limit]


class EdgeBackend:
    """A collection stored as a Qdrant Edge shard under ``<path>/edge/<collection>/``.

    Raises:
        ConfigError: the collection name cannot be a directory name.
        QdrantUnavailableError: the directory cannot be created, the shard is locked by another
            store or process, or it cannot be loaded.
    """

    engine = "edge"

    def __init__(self, path: str | Path, collection: str) -> None:
        self.location = str(path)
        self.directory = shard_directory(path, collection)
        try:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            self._lock_handle: IO[str] | None = _lock(self.directory.parent / LOCK_FILE, self.location)
        except OSError as error:
            raise QdrantUnavailableError(f"cannot open embedded Qdrant storage {path}: {error.strerror}") from None
        self._shard: edge.EdgeShard | None = None
        try:
            if (self.directory / _SHARD_CONFIG).is_file():
                self._shard = self._open(edge.EdgeShard.load, str(self.directory))
        except BaseException:
            self._release_lock()
            raise

    def exists(self) -> bool:
        """Whether the collection exists (its metadata or its shard is on disk)."""
        return (self.directory / METADATA_FILE).is_file() or self._shard is not None

    def count(self) -> int:
        """Number of points (0 before the first upsert)."""
        return 0 if self._shard is None else self._shard.count(edge.CountRequest(exact=True))

    def metadata(self) -> dict[str, Any] | None:
        """zhrag's metadata from ``zhrag_index.json``, ``None`` when the file is missing.

        Raises:
            KnowledgeBaseError: the file is unreadable.
        """
        path = self.directory / METADATA_FILE
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise KnowledgeBaseError(f"unreadable index metadata {path}: {error}") from None
        return stored if isinstance(stored, dict) else None

    def create(self, dimension: int, metadata: dict[str, Any]) -> None:
        """Write the metadata (atomically), then create the shard."""
        self.directory.mkdir(exist_ok=True)
        _write_json_atomically(self.directory / METADATA_FILE, metadata)
        self._shard = self._new_shard(dimension)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace ``zhrag_index.json`` atomically."""
        _write_json_atomically(self.directory / METADATA_FILE, metadata)

    def upsert(self, points: Sequence[PointData]) -> None:
        """Upsert points; they are in the write-ahead log when this returns."""
        batch = [
            edge.Point(
                id=uuid.UUID(point.id),
                vector={
                    SPARSE_VECTOR: edge.SparseVector(indices=point.sparse_indices, values=point.sparse_values),
                    **({DENSE_VECTOR: point.dense} if point.dense is not None else {}),
                },
                payload=point.payload,
            )
            for point in points
        ]
        self._writable_shard().update(edge.UpdateOperation.upsert_points(batch))

    def flush(self, *, optimize: bool = False) -> None:
        """Write pending changes to the segments; ``optimize`` runs Edge's optimizers (in-process, blocking)."""
        if self._shard is None:
            return
        self._shard.flush()
        if optimize:
            self._shard.optimize()

    def search(
        self,
        dense: list[float] | None,
        sparse: tuple[list[int], list[float]] | None,
        *,
        limit: int,
        prefetch: int,
        dense_weight: float,
    ) -> list[Hit]:
        """Hybrid: both candidate lists in one ``query_batch``, fused by :func:`weighted_rrf`, then the
        winners' payloads; one vector: a plain nearest-neighbour query."""
        if self._shard is None:
            return []
        queries: list[tuple[edge.Query, float]] = []
        if sparse is not None and sparse[0]:
            sparse_query = edge.SparseVector(indices=sparse[0], values=sparse[1])
            queries.append((edge.Query.Nearest(sparse_query, using=SPARSE_VECTOR), 1.0))
        if dense is not None:
            queries.append((edge.Query.Nearest(dense, using=DENSE_VECTOR), dense_weight if queries else 1.0))
        if dense is None or sparse is None:
            if not queries:
                return []
            points = self._shard.query(edge.QueryRequest(limit=limit, query=queries[0][0], with_payload=True))
            return [Hit(payload=point.payload, score=point.score) for point in points if point.payload is not None]
        requests = [edge.QueryRequest(limit=prefetch, query=query) for query, _ in queries]
        ranked = self._shard.query_batch(edge.QueryBatchRequest(requests))
        fused = weighted_rrf([[str(p.id) for p in points] for points in ranked], [w for _, w in queries], limit)
        found = self._shard.retrieve([uuid.UUID(point) for point, _ in fused], True, False)
        payloads = {str(record.id): record.payload for record in found if record.payload is not None}
        return [Hit(payload=payloads[point], score=score) for point, score in fused if point in payloads]

    def scroll(self, batch_size: int) -> Iterator[list[PointData]]:
        """Every point with vectors and payload, ``batch_size`` at a time."""
        if self._shard is None:
            return
        offset = None
        while True:
            records, offset = self._shard.scroll(
                edge.ScrollRequest(offset=offset, limit=batch_size, with_payload=True, with_vector=True)
            )
            yield [point_data(record) for record in records]
            if offset is None:
                return

    def close(self) -> None:
        """Close the shard, then release the lock."""
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        self._release_lock()

    def _writable_shard(self) -> edge.EdgeShard:
        """The shard; created from the metadata's dimension when a crash left metadata without a shard."""
        if self._shard is None:
            metadata = self.metadata()
            if metadata is None:
                raise KnowledgeBaseError(f"no index metadata in {self.directory}: create the collection first")
            self._shard = self._new_shard(int(metadata["dimension"]))
        return self._shard

    def _new_shard(self, dimension: int) -> edge.EdgeShard:
        """A new shard of cosine dense vectors of ``dimension`` and IDF-weighted sparse vectors."""
        config = edge.EdgeConfig(
            vectors={DENSE_VECTOR: edge.EdgeVectorParams(size=dimension, distance=edge.Distance.Cosine)},
            sparse_vectors={SPARSE_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        )
        return self._open(edge.EdgeShard.create, str(self.directory), config)

    def _open(self, opener: Any, *args: Any) -> edge.EdgeShard:
        """Load or create the shard, turning Edge's errors into one-line zhrag errors."""
        try:
            return opener(*args)
        except Exception as error:  # noqa: BLE001 - qdrant_edge raises plain Exception
            if "WouldBlock" in str(error):
                raise locked_error(self.location) from None
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise QdrantUnavailableError(f"cannot open Qdrant Edge shard {self.directory}: {reason}") from None

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            portalocker.unlock(self._lock_handle)
            self._lock_handle.close()
            self._lock_handle = None


def _lock(path: Path, location: str) -> IO[str]:
    """An open handle holding an exclusive lock on ``path``, or the "is locked" error."""
    handle = path.open("a", encoding="utf-8")
    try:
        portalocker.lock(handle, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
    except portalocker.exceptions.LockException:
        handle.close()
        raise locked_error(location) from None
    return handle


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp creates it private
            json.dump(data, handle, ensure_ascii=False, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
