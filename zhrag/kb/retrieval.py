"""Retrieval as ``qdrant-find`` serves it: the store's hybrid candidates, reranked."""

from __future__ import annotations

import threading

from zhrag.kb.passage import Passage
from zhrag.kb.rerank import EVIDENCE_RERANKER, RERANK_DEPTH, Reranker, load_reranker
from zhrag.kb.store import KnowledgeStore


class Retriever:
    """Search a :class:`~zhrag.kb.store.KnowledgeStore`, reranking its best candidates.

    Args:
        store: The knowledge store (not closed by the retriever).
        reranker: ``evidence`` (default: the offline evidence-window reranker), ``none``, or a
            sentence-transformers cross-encoder name or directory (:mod:`zhrag.kb.rerank`).
    """

    def __init__(self, store: KnowledgeStore, reranker: str | None = None) -> None:
        self.store = store
        self.reranker_name = reranker or EVIDENCE_RERANKER
        self._rerankers: dict[str, Reranker | None] = {}
        self._lock = threading.Lock()

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

        The store ranks (``mode``, ``dense_weight``: see :meth:`KnowledgeStore.candidates`); the
        reranker (``reranker``, default the retriever's; ``none`` turns it off) reorders the best
        ``RERANK_DEPTH`` candidates and attaches each passage's evidence window.

        Raises:
            ConfigError: empty query, ``top_k`` < 1, an unknown mode or a negative weight.
            KnowledgeBaseError: missing collection, or one indexed with another embedder.
            ModelLoadError: a cross-encoder reranker cannot be loaded.
        """
        ranker = self._reranker(reranker or self.reranker_name)
        depth = max(top_k, RERANK_DEPTH) if ranker else top_k
        candidates = self.store.candidates(query, depth, mode=mode, dense_weight=dense_weight)
        return ranker.rerank(query, candidates)[:top_k] if ranker else candidates

    def _reranker(self, name: str) -> Reranker | None:
        """The reranker called ``name``, loaded once per retriever."""
        with self._lock:
            if name not in self._rerankers:
                self._rerankers[name] = load_reranker(name, self.store.device)
            return self._rerankers[name]
