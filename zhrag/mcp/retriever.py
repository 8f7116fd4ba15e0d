"""zhrag's knowledge base as a LangChain retriever, searched through the ``zhrag-knowledge`` MCP server.

A LangChain application (a chain, an agent, a LangGraph node) gets zhrag's reranked hybrid search as a
:class:`~langchain_core.retrievers.BaseRetriever`::

    from zhrag.mcp.client import ServerConfig
    from zhrag.mcp.retriever import KnowledgeRetriever

    retriever = KnowledgeRetriever(config=ServerConfig(qdrant_path="/data/qdrant"), top_k=3)
    documents = retriever.invoke("《九命奇冤》是由哪位作者所著？")

Each call is one ``qdrant-find`` on the process-wide client of ``config``
(:func:`zhrag.mcp.client.get_knowledge_client`): the server is spawned on first use, or reached at
``ServerConfig.url`` when one is already running, and the store stays in that one process.
"""

from __future__ import annotations

import asyncio

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from zhrag.kb.passage import MAX_TOP_K, Passage
from zhrag.mcp.client import ServerConfig, get_knowledge_client


def passage_document(passage: Passage) -> Document:
    """A passage as a LangChain document: its text as ``page_content``; id, title, score (and evidence) as metadata."""
    metadata = {"id": passage["id"], "title": passage["title"], "score": passage["score"]}
    if passage.get("evidence"):
        metadata["evidence"] = passage["evidence"]
    return Document(page_content=passage["text"], metadata=metadata, id=passage["id"])


class KnowledgeRetriever(BaseRetriever):
    """The ``top_k`` best knowledge-base passages for a query, from ``qdrant-find`` on the MCP server of ``config``.

    Attributes:
        config: How to reach the knowledge server (collection, Qdrant location, embedder, reranker, or ``url``).
        top_k: Passages per query (1 to :data:`~zhrag.kb.passage.MAX_TOP_K`).

    Raises (on ``invoke``):
        MCPServerError: the server cannot start, rejects the query (e.g. an empty one) or fails.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    config: ServerConfig = Field(default_factory=ServerConfig)
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        passages = get_knowledge_client(self.config).find(query, self.top_k)
        return [passage_document(passage) for passage in passages]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        # The client blocks until its background event loop answers: wait for it on a worker thread.
        passages = await asyncio.to_thread(lambda: get_knowledge_client(self.config).find(query, self.top_k))
        return [passage_document(passage) for passage in passages]
