"""Answer and search: ``zhrag ask``, ``demo`` and ``search``."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from zhrag.cli.common import _check_question, _check_variant, _context, _open_store, _prepare_knowledge_base
from zhrag.cli.options import GraphOptions, KbOpt, ModelOptions, RerankerOpt, StoreOptions, with_option_groups
from zhrag.errors import ConfigError

SAMPLE_QUESTION = "《九命奇冤》是由哪位作者所著？"

ModeOpt = Annotated[str, typer.Option(help="hybrid (BM25 + dense fused), sparse (BM25 only) or dense.")]


def _run_question(variant: str, question: str, context) -> dict:
    """Run one variant on one question and return the CLI's JSON record."""
    from zhrag.graph.builder import build_graph
    from zhrag.nodes.agent import agent_record
    from zhrag.nodes.roles import roles_record

    graph = build_graph(variant)
    started = time.perf_counter()
    state = graph.invoke({"question": question}, context=context)
    total_ms = (time.perf_counter() - started) * 1000
    return {
        "variant": variant.lower(),
        "question": question,
        "answer": state.get("answer", ""),
        "answer_confidence": state.get("answer_confidence"),
        "abstained": bool(state.get("abstained")),
        "contexts": state.get("contexts", []),
        "queries": state.get("queries", []),
        "requeries": state.get("requeries", 0),
        "judgements": state.get("judgements", []),
        "knowledge": state.get("knowledge"),
        "candidates": state.get("candidates", {}),
        **({"arbitration": state.get("arbitration")} if variant.lower() == "a2" else {}),
        **(agent_record(state) if variant.lower() == "a3" else {}),
        **(roles_record(state) if variant.lower() == "a4" else {}),
        "timings_ms": {**state.get("timings_ms", {}), "total": round(total_ms, 1)},
        "models": _model_load_info(),
    }


def _model_load_info() -> list[dict]:
    """Load records (source, cache hit, seconds) of the models this process loaded."""
    from zhrag.models import loaded_models

    return [dict(llm.load_info) for llm in loaded_models()]


@with_option_groups
def ask(
    question: Annotated[str, typer.Argument(help="The Chinese question.")],
    models: ModelOptions,
    graph: GraphOptions,
    store: StoreOptions,
    variant: Annotated[
        str,
        typer.Option(
            "--variant", "-v",
            help="a0 (model alone), a1 (retrieve), a2 (judge + requery), a3 (the model calls qdrant-find itself), "
            "a4 (planner, researcher, answerer and evaluator roles).",
        ),
    ] = "a1",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with answer, contexts, queries, timings.")] = False,
    reranker: RerankerOpt = None,
    kb: KbOpt = None,
) -> None:
    """Answer QUESTION with one variant and print the answer (or a JSON record with --json)."""
    question = _check_question(question)
    variant = _check_variant(variant)
    context = _context(models, graph, store, reranker=reranker)
    if variant != "a0":
        _prepare_knowledge_base(context, kb)
    record = _run_question(variant, question, context)
    if as_json:
        typer.echo(json.dumps(record, ensure_ascii=False, indent=2))
    else:
        typer.echo(record["answer"])


@with_option_groups
def demo(
    models: ModelOptions,
    graph: GraphOptions,
    store: StoreOptions,
    question: Annotated[str, typer.Argument(help="Question to answer with each variant.")] = SAMPLE_QUESTION,
    kb: KbOpt = None,
) -> None:
    """The main job on the embedded defaults: index the KB on first use, then answer with A0, A1 and A2."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    question = _check_question(question)
    context = _context(models, graph, store)
    console.print(f"[bold]Knowledge base[/bold]: collection {context.collection!r}")
    _prepare_knowledge_base(context, kb)
    table = Table(title=question)
    for column in ("variant", "answer", "top passage", "queries", "ms"):
        table.add_column(column)
    for variant in ("a0", "a1", "a2"):
        console.print(f"[bold]Running {variant}[/bold] ...")
        record = _run_question(variant, question, context)
        top = record["contexts"][0] if record["contexts"] else None
        table.add_row(
            variant,
            record["answer"],
            f"{top['title']}: {top['text'][:40]}…" if top else "-",
            " | ".join(record["queries"]) or "-",
            f"{record['timings_ms']['total']:.0f}",
        )
    Console().print(table)


@with_option_groups
def search(
    query: Annotated[str, typer.Argument(help="What to search for (a question or keywords).")],
    store_options: StoreOptions,
    top_k: Annotated[int, typer.Option(min=1, max=50, help="Passages to return (1..50).")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print passages as JSON (id, title, text, evidence, score).")] = False,
    mode: ModeOpt = "hybrid",
    reranker: RerankerOpt = None,
) -> None:
    """Search the knowledge base with the retrieval that the MCP tool qdrant-find serves."""
    options = store_options.resolved()
    if options.mcp_url:  # through the running server's qdrant-find (its own store, mode and reranker)
        if mode != "hybrid" or reranker is not None:
            raise ConfigError("--mode and --reranker are the server's with --mcp-url: leave them out")
        from zhrag.mcp.client import KnowledgeClient, ServerConfig

        with KnowledgeClient(ServerConfig(url=options.mcp_url)) as client:
            passages = [dict(passage) for passage in client.find(query, top_k)]
    else:
        from zhrag.kb.retrieval import Retriever

        with _open_store(options) as store:
            passages = [dict(passage) for passage in Retriever(store, reranker).search(query, top_k, mode=mode)]
    if as_json:
        typer.echo(json.dumps(passages, ensure_ascii=False, indent=2))
        return
    for rank, passage in enumerate(passages, 1):
        shown = passage.get("evidence") or passage["text"]
        typer.echo(f"[{rank}] {passage['score']:.3f} {passage['id']} 【{passage['title']}】\n    {shown}")
