"""The MCP knowledge server (``qdrant-find`` / ``qdrant-store`` over Qdrant) and the client the graph nodes use."""
