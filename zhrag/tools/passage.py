"""The passage record exchanged between the knowledge base, the MCP tool and the graph."""

from __future__ import annotations

from typing import TypedDict


class Passage(TypedDict):
    """One retrieved knowledge-base chunk.

    Attributes:
        id: Stable chunk id (``<document id>#<chunk number>``), the same across re-indexing.
        title: Article title the chunk comes from ("" when the source has none).
        text: The chunk text.
        score: Retrieval score from the fused hybrid query (higher is better).
    """

    id: str
    title: str
    text: str
    score: float
