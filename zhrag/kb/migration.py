"""Copying a collection between engines (qdrant-client local mode to Qdrant Edge and back)."""

from __future__ import annotations

from tqdm.auto import tqdm

from zhrag.errors import KnowledgeBaseError
from zhrag.kb.store import KnowledgeStore


def copy_collection(
    source: KnowledgeStore, target: KnowledgeStore, *, batch_size: int = 512, progress: bool = False
) -> int:
    """Copy every point of ``source`` into ``target``, vectors as stored; returns the number copied.

    Nothing is re-embedded: this turns a qdrant-client local collection into an Edge shard in
    seconds. ``target``'s collection is created with ``source``'s metadata; if it exists, its
    metadata must be the same.

    Raises:
        KnowledgeBaseError: ``source`` has no zhrag collection, was indexed with another embedder
            than ``target``'s, or ``target`` holds another index.
    """
    stored = source.index_settings()
    if stored["embedder"] != target.embedder_name:
        raise KnowledgeBaseError(
            f"collection {source.collection!r} at {source.location} was indexed with embedder "
            f"{stored['embedder']!r}, not {target.embedder_name!r}: open the target with that embedder"
        )
    if not target.create(stored, dimension=int(stored["dimension"])) and target.index_settings() != stored:
        raise KnowledgeBaseError(
            f"collection {target.collection!r} at {target.location} holds an index with other settings "
            f"than {source.collection!r} at {source.location}: copy into a new collection"
        )
    copied = 0
    with tqdm(total=source.count(), desc="copying", unit="point", disable=not progress) as bar:
        for batch in source.scroll(batch_size):
            if batch:
                target.upsert(batch)
            copied += len(batch)
            bar.update(len(batch))
    target.flush(optimize=True)
    return copied
