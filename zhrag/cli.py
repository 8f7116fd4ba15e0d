"""Command-line interface: ``zhrag ask | demo | index | serve-mcp``.

Every user-caused problem surfaces as one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from zhrag import settings
from zhrag.errors import ConfigError, ZhragError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Answer Chinese questions with local models, with or without retrieval (A0 / A1 / A2).",
)

SAMPLE_QUESTION = "《九命奇冤》是由哪位作者所著？"

# Options shared by the commands that reach the knowledge base.
CollectionOpt = Annotated[str, typer.Option(help="Qdrant collection of the knowledge base.")]
QdrantUrlOpt = Annotated[
    Optional[str], typer.Option(help="Qdrant server URL (env ZHRAG_QDRANT_URL); default: embedded storage.")
]
QdrantPathOpt = Annotated[
    Optional[Path], typer.Option(help="Embedded Qdrant directory (env ZHRAG_QDRANT_PATH).")
]
EmbedderOpt = Annotated[str, typer.Option(help="Dense embedder: packaged alias, local path or hub id.")]
KbOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--kb", help="Source(s) indexed on first use when the collection is empty (default: shared KB)."),
]


def _context(**kwargs):
    """Build the runtime context, turning invalid values into one-line errors."""
    from zhrag.graph.context import Context

    if kwargs.get("qdrant_path") is not None:
        kwargs["qdrant_path"] = str(kwargs["qdrant_path"])
    if kwargs.get("qdrant_url") is None:
        kwargs["qdrant_url"] = settings.qdrant_url()
    return Context(**kwargs)


def _prepare_knowledge_base(context, kb: list[Path] | None) -> None:
    """Index the knowledge base on first use (collection missing or empty), then release the store.

    The store is closed before the graph starts its MCP server, because embedded Qdrant allows one
    client per path and the server process must own it.
    """
    from zhrag.tools.indexing import ensure_index
    from zhrag.tools.store import KnowledgeStore

    with KnowledgeStore(
        context.collection, path=context.qdrant_path, url=context.qdrant_url, embedder=context.embedder
    ) as store:
        report = ensure_index(store, source=list(kb) if kb else None)
    if report is not None:
        typer.echo(
            f"indexed {report.documents} documents as {report.chunks} chunks in {report.seconds:.0f} s "
            f"(first use of collection {context.collection!r})",
            err=True,
        )


def _run_question(variant: str, question: str, context) -> dict:
    """Run one variant on one question and return the CLI's JSON record."""
    from zhrag.graph.builder import build_graph

    graph = build_graph(variant)
    started = time.perf_counter()
    state = graph.invoke({"question": question}, context=context)
    total_ms = (time.perf_counter() - started) * 1000
    return {
        "variant": variant.lower(),
        "question": question,
        "answer": state.get("answer", ""),
        "contexts": state.get("contexts", []),
        "queries": state.get("queries", []),
        "requeries": state.get("requeries", 0),
        "timings_ms": {**state.get("timings_ms", {}), "total": round(total_ms, 1)},
        "models": _model_load_info(),
    }


def _model_load_info() -> list[dict]:
    """Load records (source, cache hit, seconds) of the models this process loaded."""
    from zhrag.models import loaded_models

    return [dict(llm.load_info) for llm in loaded_models()]


def _check_question(question: str) -> str:
    if not question or not question.strip():
        raise ConfigError("question is empty")
    return question.strip()


def _check_variant(variant: str) -> str:
    from zhrag.graph.builder import VARIANTS

    if variant.lower() not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    return variant.lower()


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The Chinese question.")],
    variant: Annotated[str, typer.Option("--variant", "-v", help="a0 (model alone), a1 (retrieve), a2 (judge + requery).")] = "a1",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with answer, contexts, queries, timings.")] = False,
    model: Annotated[str, typer.Option(help="Answer model: packaged alias, .gguf file, HF directory or hub id.")] = settings.PACKAGED_LLM,
    answer_adapter: Annotated[Optional[str], typer.Option("--adapter", "--answer-adapter", help="LoRA adapter for answering.")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="Judge / requery model (default: the answer model).")] = None,
    judge_adapter: Annotated[Optional[str], typer.Option(help="LoRA adapter for the judge.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or mps (default: auto).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="bfloat16, float16 or float32 (default: per device).")] = None,
    top_k: Annotated[int, typer.Option(help="Passages per retrieval round (1..50).")] = 3,
    max_requeries: Annotated[int, typer.Option(help="A2: maximum query rewrites.")] = 2,
    max_new_tokens: Annotated[int, typer.Option(help="Answer generation budget.")] = 32,
    collection: CollectionOpt = settings.DEFAULT_COLLECTION,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
    kb: KbOpt = None,
) -> None:
    """Answer QUESTION with one variant and print the answer (or a JSON record with --json)."""
    question = _check_question(question)
    variant = _check_variant(variant)
    context = _context(
        model=model, answer_adapter=answer_adapter, judge_model=judge_model, judge_adapter=judge_adapter,
        device=device, dtype=dtype, top_k=top_k, max_requeries=max_requeries, max_new_tokens=max_new_tokens,
        collection=collection, qdrant_url=qdrant_url, qdrant_path=qdrant_path, embedder=embedder,
    )
    if variant != "a0":
        _prepare_knowledge_base(context, kb)
    record = _run_question(variant, question, context)
    if as_json:
        typer.echo(json.dumps(record, ensure_ascii=False, indent=2))
    else:
        typer.echo(record["answer"])


@app.command()
def demo(
    question: Annotated[str, typer.Argument(help="Question to answer with each variant.")] = SAMPLE_QUESTION,
    collection: CollectionOpt = settings.DEFAULT_COLLECTION,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
    kb: KbOpt = None,
) -> None:
    """The main job on the embedded defaults: index the KB on first use, then answer with A0, A1 and A2."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    question = _check_question(question)
    context = _context(collection=collection, qdrant_url=qdrant_url, qdrant_path=qdrant_path, embedder=embedder)
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


@app.command()
def index(
    sources: Annotated[list[Path], typer.Argument(help="jsonl, text files, WikiExtractor directories or SQuAD json.")],
    collection: CollectionOpt = settings.DEFAULT_COLLECTION,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
    batch_size: Annotated[int, typer.Option(help="Points per upsert batch.")] = 128,
) -> None:
    """Index SOURCES into the Qdrant collection (idempotent: re-indexing updates in place)."""
    from zhrag.tools.indexing import index_sources
    from zhrag.tools.store import KnowledgeStore

    url = qdrant_url or settings.qdrant_url()
    with KnowledgeStore(collection, path=qdrant_path, url=url, embedder=embedder) as store:
        report = index_sources(store, sources, batch_size=batch_size, progress=True)
        typer.echo(
            f"indexed {report.documents} documents as {report.chunks} chunks in {report.seconds:.1f} s; "
            f"collection {collection!r} now holds {store.count()} chunks"
        )


@app.command("eval")
def eval_(
    variants: Annotated[
        list[str], typer.Option("--variants", help="Variants to compare on the same questions: --variants a0 a1 a2.")
    ] = ["a0", "a1", "a2"],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory; re-running resumes it.")] = Path("runs/eval"),
    data: Annotated[Optional[str], typer.Option(help="Question jsonl file or HF dataset id (default: shared dev set).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N questions (after the filters).")] = None,
    sample: Annotated[Optional[int], typer.Option(help="A seeded random sample of N questions (all categories).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
    category: Annotated[Optional[list[str]], typer.Option("--category", help="Primary category to keep (repeatable).")] = None,
    ids_file: Annotated[Optional[Path], typer.Option(help="File of question ids to keep, one per line.")] = None,
    metrics: Annotated[
        list[str], typer.Option("--metrics", help="Any of grade, retrieval, faithfulness, answer_correctness.")
    ] = ["grade", "retrieval"],
    grader: Annotated[str, typer.Option(help="rules (offline string matching) or official (LLM judge).")] = "rules",
    eval_model: Annotated[Optional[str], typer.Option(help="Local judge model for the official grader and RAGAS.")] = None,
    eval_base_url: Annotated[
        Optional[str], typer.Option(help="OpenAI-compatible judge endpoint, e.g. http://localhost:8000/v1 (key: OPENAI_API_KEY).")
    ] = None,
    eval_api_model: Annotated[Optional[str], typer.Option(help="Model name served by --eval-base-url.")] = None,
    eval_embedder: Annotated[str, typer.Option(help="Embedder of RAGAS answer similarity.")] = settings.PACKAGED_EMBEDDER,
    force: Annotated[bool, typer.Option("--force", help="Start afresh when OUT holds a run with other settings.")] = False,
    model: Annotated[str, typer.Option(help="Answer model: packaged alias, .gguf file, HF directory or hub id.")] = settings.PACKAGED_LLM,
    answer_adapter: Annotated[Optional[str], typer.Option("--adapter", "--answer-adapter", help="LoRA adapter for answering.")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="A2 judge / requery model (default: the answer model).")] = None,
    judge_adapter: Annotated[Optional[str], typer.Option(help="LoRA adapter for the A2 judge.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or mps (default: auto).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="bfloat16, float16 or float32 (default: per device).")] = None,
    top_k: Annotated[int, typer.Option(help="Passages per retrieval round (1..50).")] = 3,
    max_requeries: Annotated[int, typer.Option(help="A2: maximum query rewrites.")] = 2,
    max_new_tokens: Annotated[int, typer.Option(help="Answer generation budget.")] = 32,
    collection: CollectionOpt = settings.DEFAULT_COLLECTION,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
    kb: KbOpt = None,
) -> None:
    """Evaluate variants on Chinese-SimpleQA (resumable) and write report.md, summary.json and plots into OUT."""
    from zhrag.evaluation.datasets import load_questions
    from zhrag.evaluation.runner import dataset_info, run_evaluation

    variant_list = [_check_variant(name) for name in _split_values(variants)]
    filters = {"limit": limit, "categories": category, "ids_file": ids_file, "sample": sample}
    if sample is not None:
        filters["seed"] = seed
    questions = load_questions(data, **filters)
    context = _context(
        model=model, answer_adapter=answer_adapter, judge_model=judge_model, judge_adapter=judge_adapter,
        device=device, dtype=dtype, top_k=top_k, max_requeries=max_requeries, max_new_tokens=max_new_tokens,
        collection=collection, qdrant_url=qdrant_url, qdrant_path=qdrant_path, embedder=embedder,
        grader=grader, eval_model=eval_model, eval_base_url=eval_base_url, eval_api_model=eval_api_model,
        eval_embedder=eval_embedder,
    )
    if any(name != "a0" for name in variant_list):
        _prepare_knowledge_base(context, kb)
    report_path = run_evaluation(
        variant_list, questions, out, context=context, metrics=_split_values(metrics), force=force,
        data=dataset_info(data or settings.default_dataset(), **filters),
        kb_sources=kb,
    )
    typer.echo(f"report: {report_path}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="Run directory written by zhrag eval.")]) -> None:
    """Rewrite report.md, summary.json and the plots of RUN_DIR from its results.jsonl."""
    from zhrag.evaluation.report import rebuild_report

    typer.echo(f"report: {rebuild_report(run_dir)}")


def _split_values(values: list[str]) -> list[str]:
    """Flatten repeated and comma-separated option values: ["a0,a1", "a2"] -> ["a0", "a1", "a2"]."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


#: Options that take several space-separated values (``--variants a0 a1 a2``).
MULTI_VALUE_OPTIONS = frozenset({"--variants", "--metrics"})


def _expand_multi_value_options(argv: list[str]) -> list[str]:
    """Rewrite ``--variants a0 a1`` as ``--variants a0 --variants a1`` (click options take one value each)."""
    expanded: list[str] = []
    current: str | None = None
    for token in argv:
        if token in MULTI_VALUE_OPTIONS:
            current = token
            continue
        if current and not token.startswith("-"):
            expanded += [current, token]
            continue
        current = None
        expanded.append(token)
    return expanded


@app.command(
    "serve-mcp",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def serve_mcp(ctx: typer.Context) -> None:
    """Serve the knowledge base as an MCP server (tools qdrant-find, qdrant-store); see --help."""
    from zhrag.tools.mcp_server import main as server_main

    raise typer.Exit(server_main(list(ctx.args), prog="zhrag serve-mcp") or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zhrag`` console script."""
    try:
        args = sys.argv[1:] if argv is None else argv
        result = app(args=_expand_multi_value_options(args), standalone_mode=False, prog_name="zhrag")
    except ZhragError as error:
        typer.echo(f"error: {error}", err=True)
        return 2
    except typer.Exit as exit_:
        return exit_.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as error:  # usage errors (typer vendors click's exceptions)
        error.show()
        return error.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
