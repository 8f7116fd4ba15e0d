"""The knowledge base: ``zhrag index`` and ``serve-mcp``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhrag import settings
from zhrag.cli.common import _direct_store_only, _open_store
from zhrag.cli.options import StoreOptions, with_option_groups
from zhrag.errors import ConfigError


@with_option_groups
def index(
    store_options: StoreOptions,
    sources: Annotated[
        list[Path] | None, typer.Argument(help="jsonl, text files, WikiExtractor directories or SQuAD json.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Points per upsert batch.")] = 128,
    from_local: Annotated[
        bool,
        typer.Option(
            "--from-local",
            help="Instead of indexing SOURCES, copy the qdrant-client local collection at the Qdrant path into "
            "its Edge shard (vectors as stored, no re-embedding).",
        ),
    ] = False,
    dense: Annotated[
        bool,
        typer.Option(
            "--dense",
            help="Without SOURCES: embed the chunks of a sparse-only collection (the first use indexes BM25 alone "
            "unless the embedding cache holds the vectors); resumable.",
        ),
    ] = False,
    sparse_only: Annotated[
        bool, typer.Option("--sparse-only", help="Index the BM25 half only (add the dense half later with --dense).")
    ] = False,
) -> None:
    """Index SOURCES into the Qdrant collection (idempotent: re-indexing updates in place; a killed run of the same,
    unchanged sources resumes after the last batch it wrote)."""
    from zhrag.kb.indexing import build_dense, index_sources

    _direct_store_only(store_options, "index")
    options = store_options.resolved()
    collection = options.collection
    if from_local:
        _copy_from_local(options, sources)
        return
    if dense and (sources or sparse_only):
        raise ConfigError("--dense embeds an indexed collection: give no sources and no --sparse-only")
    if not sources and not dense:
        raise ConfigError("nothing to index: give one or more sources (or --dense, or --from-local)")
    with _open_store(options) as store:
        if dense:
            built = build_dense(store, batch_size=batch_size, progress=True)
            if built is None:
                typer.echo(f"collection {collection!r}: every chunk already has its dense vector")
                return
            report = built
        else:
            report = index_sources(store, sources or [], batch_size=batch_size, progress=True, dense=not sparse_only)
        typer.echo(_index_summary(report, store.collection, store.count()))


def _copy_from_local(options: StoreOptions, sources: list[Path] | None) -> None:
    """``index --from-local``: copy the qdrant-client local collection at the Qdrant path into its Edge shard."""
    from zhrag.kb.migration import copy_collection
    from zhrag.kb.store import KnowledgeStore

    collection = options.collection
    if sources or options.qdrant_url or options.qdrant_engine != "edge":
        raise ConfigError("--from-local copies into the Edge shard: give no sources, no --qdrant-url, engine edge")
    path = options.qdrant_path or settings.qdrant_path()
    with (
        KnowledgeStore(collection, path=path, embedder=options.embedder, engine="local") as local,
        KnowledgeStore(collection, path=path, embedder=options.embedder, engine="edge") as store,
    ):
        copied = copy_collection(local, store, progress=True)
        typer.echo(f"copied {copied} points of collection {collection!r} from local mode into Edge in {path}")


def _index_summary(report, collection: str, chunks: int) -> str:
    """The line ``index`` prints after indexing (or embedding) into ``collection``, which now holds ``chunks``."""
    vectors = (
        f"{report.embedded} embedded, {report.chunks - report.embedded} from the embedding cache"
        if report.dense
        else "BM25 only: `zhrag index --dense` adds the dense half"
    )
    resumed = f" after skipping {report.skipped} documents an interrupted run had written" if report.skipped else ""
    return (
        f"indexed {report.documents} documents as {report.chunks} chunks in {report.seconds:.1f} s ({vectors}){resumed}; "
        f"collection {collection!r} now holds {chunks} chunks"
    )


def serve_mcp(ctx: typer.Context) -> None:
    """Serve the knowledge base as an MCP server (tools qdrant-find, qdrant-store); see --help."""
    from zhrag.mcp.server import main as server_main

    raise typer.Exit(server_main(list(ctx.args), prog="zhrag serve-mcp") or 0)
