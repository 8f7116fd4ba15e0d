"""Helpers of the commands of several areas: the run context of option groups, the store, input checks.

They keep the names they had in the single-module CLI (a leading underscore: they are the cli package's own).
"""

from __future__ import annotations

from pathlib import Path

import typer

from zhrag.cli.options import StoreOptions, fields_of
from zhrag.errors import ConfigError


def _context(*groups, **kwargs):
    """The runtime context of option groups and further fields; invalid values become one-line errors."""
    from zhrag.graph.context import Context

    values = fields_of(*(group.resolved() if isinstance(group, StoreOptions) else group for group in groups))
    if kwargs.get("reranker") is None:
        kwargs.pop("reranker", None)
    return Context(**values, **kwargs)


def _direct_store_only(options: StoreOptions, command: str) -> None:
    """Refuse ``--mcp-url`` for a command that opens the store itself."""
    if options.mcp_url:
        raise ConfigError(f"{command} opens the store itself and cannot work through --mcp-url (stop the server first)")


def _open_store(options: StoreOptions):
    """The knowledge store the resolved store ``options`` name (a context manager)."""
    from zhrag.kb.store import KnowledgeStore

    return KnowledgeStore(
        options.collection, path=options.qdrant_path, url=options.qdrant_url, embedder=options.embedder,
        engine=options.qdrant_engine,
    )


def _prepare_knowledge_base(context, kb: list[Path] | None) -> None:
    """Index the knowledge base on first use (collection missing or empty), then release the store.

    The store is closed before the graph starts its MCP server, because embedded Qdrant allows one
    client per path and the server process must own it.
    """
    from zhrag.kb.indexing import ensure_index
    from zhrag.kb.store import KnowledgeStore

    if context.mcp_url:  # a running server owns its store (it indexes with --ensure-index)
        return
    with KnowledgeStore(
        context.collection,
        path=context.qdrant_path,
        url=context.qdrant_url,
        embedder=context.embedder,
        engine=context.qdrant_engine,
    ) as store:
        report = ensure_index(store, source=list(kb) if kb else None)
    if report is not None:
        typer.echo(
            f"indexed {report.documents} documents as {report.chunks} chunks in {report.seconds:.0f} s "
            f"(first use of collection {context.collection!r})",
            err=True,
        )


def _check_question(question: str) -> str:
    if not question or not question.strip():
        raise ConfigError("question is empty")
    return question.strip()


def _check_variant(variant: str) -> str:
    from zhrag.graph.builder import VARIANTS

    if variant.lower() not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    return variant.lower()


def _split_values(values: list[str]) -> list[str]:
    """Flatten repeated and comma-separated option values: ["a0,a1", "a2"] -> ["a0", "a1", "a2"]."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]
