"""zhrag: LangGraph RAG ablation for Chinese-SimpleQA with local models, Qdrant and MCP."""

__version__ = "0.1.0"
