"""Index knowledge-base sources into a :class:`~zhrag.tools.store.KnowledgeStore`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from zhrag import settings
from zhrag.tools.sources import iter_documents
from zhrag.tools.store import IndexReport, KnowledgeStore


def index_sources(
    store: KnowledgeStore, paths: Sequence[str | Path], batch_size: int = 128, progress: bool = True
) -> IndexReport:
    """Read every source (see :func:`zhrag.tools.sources.iter_documents`) and upsert its chunks.

    Re-indexing the same sources is idempotent: chunk point ids are derived from document ids.

    Raises:
        KnowledgeBaseError: a missing, malformed or empty source (nothing is written then).
    """
    documents = itertools.chain.from_iterable(iter_documents(path) for path in paths)
    return store.upsert_documents(documents, batch_size=batch_size, progress=progress)


def ensure_index(
    store: KnowledgeStore,
    source: str | Path | Sequence[str | Path] | None = None,
    *,
    progress: bool = True,
) -> IndexReport | None:
    """Index ``source`` (one path or several; default :func:`zhrag.settings.default_kb_source`) when the
    collection is missing or empty.

    Returns the indexing report, or ``None`` when the collection already had chunks.
    """
    if store.count() > 0:
        return None
    if source is None:
        sources: list[str | Path] = [settings.default_kb_source()]
    elif isinstance(source, (str, Path)):
        sources = [source]
    else:
        sources = list(source)
    return index_sources(store, sources, progress=progress)
