"""Retrieve node: one ``qdrant-find`` call through the MCP knowledge client."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import GraphState
from zhrag.kb.passage import MAX_TOP_K
from zhrag.mcp.client import ServerConfig, get_knowledge_client
from zhrag.nodes.common import require_question, timed

# get_knowledge_client is used through this module by the A3 tools node (and replaced here by tests).
__all__ = ["get_knowledge_client", "retrieve", "server_config"]


def server_config(context: Context) -> ServerConfig:
    """The MCP knowledge-server configuration named by a run context."""
    return ServerConfig(
        collection=context.collection,
        qdrant_path=context.qdrant_path,
        qdrant_engine=context.qdrant_engine,
        qdrant_url=context.qdrant_url,
        embedder=context.embedder,
        reranker=context.reranker,
        url=context.mcp_url,
    )


@timed("retrieve")
def retrieve(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Search the knowledge base with the current query (the question in the first round).

    Adds the query to ``queries`` and sets ``retrieved`` and ``contexts`` to the passages found
    (the A2 judge later narrows ``contexts`` to the relevant ones). In a later A2 round, passages the
    judge already saw are skipped, so every round brings ``top_k`` new passages: measured by
    ``zhrag eval-retrieval`` on the reading-comprehension pairs, the next unseen passages of the same query
    find the gold paragraph for 49 % of the first round's misses, the unseen passages of a rewrite to the
    question's three longest terms for 39 %.
    """
    question = require_question(state)
    query = state.get("query") or question
    top_k = runtime.context.top_k
    seen = {judgement["id"] for judgement in state.get("judgements", [])}
    found = get_knowledge_client(server_config(runtime.context)).find(query, min(top_k + len(seen), MAX_TOP_K))
    passages = [passage for passage in found if passage["id"] not in seen][:top_k]
    return {
        "query": query,
        "queries": [query],
        "retrieved": passages,
        "contexts": passages,
    }
