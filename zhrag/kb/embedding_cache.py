"""A persistent cache of passage embeddings, keyed by embedder and chunk content.

Re-indexing, changing fusion or BM25 settings, indexing the same text into another collection, or
re-running an interrupted ``zhrag index`` embeds only the chunks it has not seen with that embedder. Each
batch is committed before the next is embedded, so a killed run loses at most the batch in flight.

The cache is one SQLite file (``<ZHRAG_CACHE>/embeddings.sqlite``, ``ZHRAG_EMBEDDING_CACHE`` overrides,
``off`` disables it) in WAL mode, so several processes may index at once. Rows are float32 vectors as
the embedder returned them (unit length); the key is ``(embedder name, dimension, SHA-256 of the text)``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

from zhrag import settings
from zhrag.errors import ConfigError
from zhrag.kb.embeddings import Embedder

#: ``ZHRAG_EMBEDDING_CACHE`` value that turns the cache off.
OFF = "off"
#: SQLite host-parameter chunk for lookups (below every SQLite build's limit).
LOOKUP_CHUNK = 500


def default_cache_path() -> Path | None:
    """The cache file: ``ZHRAG_EMBEDDING_CACHE`` (``off``: none), else ``<cache dir>/embeddings.sqlite``."""
    configured = os.environ.get("ZHRAG_EMBEDDING_CACHE", "").strip()
    if configured.lower() == OFF:
        return None
    return Path(configured).expanduser() if configured else settings.cache_dir() / "embeddings.sqlite"


def text_key(text: str) -> str:
    """The content part of a cache key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embeddings by (embedder, text) in one SQLite file; each call opens and closes its own connection."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings (embedder TEXT NOT NULL, dimension INTEGER NOT NULL,"
                    " text_sha256 TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (embedder, dimension, text_sha256))"
                )
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot use the embedding cache {self.path}: {error}") from error

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call: committed on success, rolled back on error, closed either way."""
        connection = sqlite3.connect(self.path, timeout=60)
        try:
            connection.execute("PRAGMA busy_timeout=60000")
            with connection:
                yield connection
        finally:
            connection.close()

    def get(self, embedder: Embedder, keys: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """The cached vectors among ``keys`` (text keys), by key."""
        found: dict[str, npt.NDArray[np.float32]] = {}
        unique = list(dict.fromkeys(keys))
        with self._connect() as connection:
            for first in range(0, len(unique), LOOKUP_CHUNK):
                part = unique[first : first + LOOKUP_CHUNK]
                marks = ",".join("?" * len(part))
                rows = connection.execute(
                    f"SELECT text_sha256, vector FROM embeddings WHERE embedder = ? AND dimension = ?"  # noqa: S608
                    f" AND text_sha256 IN ({marks})",
                    [embedder.name, embedder.dimension, *part],
                )
                for key, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (embedder.dimension,):
                        found[key] = vector
        return found

    def put(self, embedder: Embedder, vectors: dict[str, npt.NDArray[np.float32]]) -> None:
        """Store vectors by text key (one transaction)."""
        rows = [
            (embedder.name, embedder.dimension, key, np.asarray(vector, dtype=np.float32).tobytes())
            for key, vector in vectors.items()
        ]
        with self._connect() as connection:
            connection.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)

    def count(self, embedder: Embedder | None = None) -> int:
        """Cached vectors (of ``embedder``, else of all embedders)."""
        with self._connect() as connection:
            if embedder is None:
                return int(connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            return int(
                connection.execute(
                    "SELECT COUNT(*) FROM embeddings WHERE embedder = ? AND dimension = ?",
                    (embedder.name, embedder.dimension),
                ).fetchone()[0]
            )


def embed_documents(
    embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None
) -> tuple[npt.NDArray[np.float32], int]:
    """Passage vectors of ``texts``, embedding only what ``cache`` lacks; returns the rows and how many were embedded."""
    if cache is None:
        return embedder.documents(texts), len(texts)
    keys = [text_key(text) for text in texts]
    known = cache.get(embedder, keys)
    missing = list(dict.fromkeys(key for key in keys if key not in known))
    if missing:
        by_key = dict(zip(keys, texts, strict=True))
        fresh = embedder.documents([by_key[key] for key in missing])
        new = dict(zip(missing, fresh, strict=True))
        cache.put(embedder, new)
        known.update(new)
    rows = np.stack([known[key] for key in keys]) if keys else np.zeros((0, embedder.dimension), dtype=np.float32)
    return rows, len(missing)
