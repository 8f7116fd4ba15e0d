"""The passage record exchanged between the knowledge base, the MCP tool and the graph."""

from __future__ import annotations

from typing import TypedDict

from typing_extensions import NotRequired  # typing has it from Python 3.11 on

#: Most passages one ``qdrant-find`` call returns.
MAX_TOP_K = 50


class Passage(TypedDict):
    """One retrieved knowledge-base chunk.

    Attributes:
        id: Stable chunk id (``<document id>#<chunk number>``), the same across re-indexing.
        title: Article title the chunk comes from ("" when the source has none).
        text: The chunk text.
        score: Retrieval score (higher is better): the fused hybrid score, or the reranker's.
        evidence: The sentences of ``text`` that best match the query (set by a reranker); prompts show
            these instead of the whole chunk.
    """

    id: str
    title: str
    text: str
    score: float
    evidence: NotRequired[str]
