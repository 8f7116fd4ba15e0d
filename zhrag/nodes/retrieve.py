"""Retrieve node: one ``qdrant-find`` call through the MCP knowledge client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from zhrag.nodes.common import require_question, timed
from zhrag.tools.mcp_client import ServerConfig, get_knowledge_client


def server_config(context: Any) -> ServerConfig:
    """The MCP knowledge-server configuration named by a run context."""
    return ServerConfig(
        collection=context.collection,
        qdrant_path=context.qdrant_path,
        qdrant_url=context.qdrant_url,
        embedder=context.embedder,
    )


@timed("retrieve")
def retrieve(state: Mapping[str, Any], runtime: Runtime[Any]) -> dict[str, Any]:
    """Search the knowledge base with the current query (the question in the first round).

    Appends the query to ``queries`` and sets ``retrieved`` and ``contexts`` to the passages found
    (the A2 judge later narrows ``contexts`` to the relevant ones).
    """
    question = require_question(state)
    query = state.get("query") or question
    passages = get_knowledge_client(server_config(runtime.context)).find(query, runtime.context.top_k)
    return {
        "query": query,
        "queries": [*state.get("queries", []), query],
        "retrieved": passages,
        "contexts": passages,
    }
