"""Command-line interface: ``zhrag ask | demo | index | serve-mcp``.

Every user-caused problem surfaces as one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from zhrag import settings
from zhrag.cli_options import (
    DeviceOpt,
    EngineOpt,
    ForceOpt,
    RunOutOpt,
    GraphOptions,
    KbOpt,
    ModelOptions,
    RerankerOpt,
    StoreOptions,
    fields_of,
    with_option_groups,
)
from zhrag.errors import ConfigError, ZhragError
from zhrag.jsonl import writable_dir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Answer Chinese questions with local models, with or without retrieval (A0 / A1 / A2).",
)

SAMPLE_QUESTION = "《九命奇冤》是由哪位作者所著？"

ModeOpt = Annotated[str, typer.Option(help="hybrid (BM25 + dense fused), sparse (BM25 only) or dense.")]


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


def _run_question(variant: str, question: str, context) -> dict:
    """Run one variant on one question and return the CLI's JSON record."""
    from zhrag.graph.builder import build_graph
    from zhrag.nodes.agent import agent_record

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
        **(agent_record(state) if variant.lower() == "a3" else {}),
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
@with_option_groups
def ask(
    question: Annotated[str, typer.Argument(help="The Chinese question.")],
    models: ModelOptions,
    graph: GraphOptions,
    store: StoreOptions,
    variant: Annotated[str, typer.Option("--variant", "-v", help="a0 (model alone), a1 (retrieve), a2 (judge + requery), a3 (the model calls qdrant-find itself).")] = "a1",
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


@app.command()
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


@app.command()
@with_option_groups
def index(
    store_options: StoreOptions,
    sources: Annotated[
        Optional[list[Path]], typer.Argument(help="jsonl, text files, WikiExtractor directories or SQuAD json.")
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
    from zhrag.kb.migration import copy_collection
    from zhrag.kb.store import KnowledgeStore

    _direct_store_only(store_options, "index")
    options = store_options.resolved()
    collection = options.collection
    if from_local:
        if sources or options.qdrant_url or options.qdrant_engine != "edge":
            raise ConfigError("--from-local copies into the Edge shard: give no sources, no --qdrant-url, engine edge")
        path = options.qdrant_path or settings.qdrant_path()
        with (
            KnowledgeStore(collection, path=path, embedder=options.embedder, engine="local") as local,
            KnowledgeStore(collection, path=path, embedder=options.embedder, engine="edge") as store,
        ):
            copied = copy_collection(local, store, progress=True)
            typer.echo(f"copied {copied} points of collection {collection!r} from local mode into Edge in {path}")
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
        vectors = (
            f"{report.embedded} embedded, {report.chunks - report.embedded} from the embedding cache"
            if report.dense
            else "BM25 only: `zhrag index --dense` adds the dense half"
        )
        resumed = f" after skipping {report.skipped} documents an interrupted run had written" if report.skipped else ""
        typer.echo(
            f"indexed {report.documents} documents as {report.chunks} chunks in {report.seconds:.1f} s ({vectors}){resumed}; "
            f"collection {collection!r} now holds {store.count()} chunks"
        )


@app.command("eval")
@with_option_groups
def eval_(
    models: ModelOptions,
    graph: GraphOptions,
    store: StoreOptions,
    variants: Annotated[
        list[str], typer.Option("--variants", help="Variants to compare on the same questions: --variants a0 a1 a2.")
    ] = ["a0", "a1", "a2"],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory; re-running resumes it.")] = Path("runs/eval"),
    data: Annotated[
        Optional[str],
        typer.Option(help="Question jsonl file, HF dataset id, or rc (held-out reading-comprehension pairs as open questions); default: shared dev set."),
    ] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N questions (after the filters).")] = None,
    sample: Annotated[Optional[int], typer.Option(help="A seeded random sample of N questions (all categories).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
    exclude_sample: Annotated[
        Optional[int], typer.Option(help="Leave out the questions of the seeded --sample of this size (a tuning set beside it).")
    ] = None,
    exclude_seed: Annotated[int, typer.Option(help="Seed of --exclude-sample.")] = 0,
    category: Annotated[Optional[list[str]], typer.Option("--category", help="Primary category to keep (repeatable).")] = None,
    ids_file: Annotated[Optional[Path], typer.Option(help="File of question ids to keep, one per line.")] = None,
    metrics: Annotated[
        Optional[list[str]],
        typer.Option(
            "--metrics",
            help="Any of grade, retrieval, strings, faithfulness, answer_correctness "
            "(default: grade, retrieval, and strings when ragas is installed).",
        ),
    ] = None,
    grader: Annotated[str, typer.Option(help="rules (offline string matching) or official (LLM judge).")] = "rules",
    eval_model: Annotated[Optional[str], typer.Option(help="Local judge model for the official grader and RAGAS.")] = None,
    eval_base_url: Annotated[
        Optional[str], typer.Option(help="OpenAI-compatible judge endpoint, e.g. http://localhost:8000/v1 (key: OPENAI_API_KEY).")
    ] = None,
    eval_api_model: Annotated[Optional[str], typer.Option(help="Model name served by --eval-base-url.")] = None,
    eval_embedder: Annotated[str, typer.Option(help="Embedder of RAGAS answer similarity.")] = settings.PACKAGED_EMBEDDER,
    force: Annotated[bool, typer.Option("--force", help="Start afresh when OUT holds a run with other settings.")] = False,
    concurrency: Annotated[
        Optional[int], typer.Option(min=1, help="Questions evaluated at once, their generation batched (default: 1 on CPU, the batch limit on GPUs).")
    ] = None,
    reranker: RerankerOpt = None,
    kb: KbOpt = None,
) -> None:
    """Evaluate variants on Chinese-SimpleQA (resumable) and write report.md, summary.json and plots into OUT."""
    from zhrag.evaluation.datasets import load_questions
    from zhrag.evaluation.eval_settings import EvalSettings
    from zhrag.evaluation.runner import dataset_info, default_metrics, run_evaluation

    variant_list = [_check_variant(name) for name in _split_values(variants)]
    writable_dir(out, "evaluation folder", create=False)  # before the knowledge base or a model is loaded
    filters = {"limit": limit, "categories": category, "ids_file": ids_file, "sample": sample}
    if sample is not None:
        filters["seed"] = seed
    if exclude_sample is not None:
        filters.update(exclude_sample=exclude_sample, exclude_seed=exclude_seed)
    questions = load_questions(data, **filters)
    context = _context(models, graph, store, reranker=reranker)
    evaluation = EvalSettings(
        grader=grader, eval_model=eval_model, eval_base_url=eval_base_url, eval_api_model=eval_api_model,
        eval_embedder=eval_embedder,
    )
    if any(name != "a0" for name in variant_list):
        _prepare_knowledge_base(context, kb)
    report_path = run_evaluation(
        variant_list, questions, out, context=context, metrics=_split_values(metrics) if metrics else default_metrics(),
        evaluation=evaluation, force=force,
        data=dataset_info(data or settings.default_dataset(), **filters),
        kb_sources=kb, concurrency=concurrency,
    )
    typer.echo(f"report: {report_path}")


@app.command()
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
            passages = Retriever(store, reranker).search(query, top_k, mode=mode)
    if as_json:
        typer.echo(json.dumps(passages, ensure_ascii=False, indent=2))
        return
    for rank, passage in enumerate(passages, 1):
        shown = passage.get("evidence") or passage["text"]
        typer.echo(f"[{rank}] {passage['score']:.3f} {passage['id']} 【{passage['title']}】\n    {shown}")


@app.command("eval-retrieval")
@with_option_groups
def eval_retrieval(
    store_options: StoreOptions,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; re-running resumes it.")] = Path("runs/retrieval"),
    sets: Annotated[
        list[str],
        typer.Option(
            "--sets", help="Query sets: rc, rc-train, rc-heldout, dev-verified, dev-covered (default: rc, dev-verified, dev-covered)."
        ),
    ] = ["rc", "dev-verified", "dev-covered"],
    rc_limit: Annotated[Optional[int], typer.Option(help="A seeded sample of N reading-comprehension pairs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --rc-limit.")] = 0,
    data: Annotated[Optional[Path], typer.Option(help="Chinese-SimpleQA jsonl (default: the shared dev set).")] = None,
    ablation: Annotated[
        bool, typer.Option("--ablation/--no-ablation", help="All ablation rows, or only the store's configuration.")
    ] = True,
    dense_weights: Annotated[
        Optional[list[str]],
        typer.Option(
            "--dense-weights",
            help="Dense RRF weights of the hybrid ablation rows, e.g. 0.2 0.5 1 (default: 1 0.2); given, each weight "
            "also gets a row with the evidence reranker (for tuning).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Start afresh when OUT holds a run with other settings.")] = False,
    reranker: RerankerOpt = None,
    kb: KbOpt = None,
) -> None:
    """Recall@1/3/5/10 and MRR of retrieval configurations on query sets with known gold; writes retrieval.md."""
    from zhrag.evaluation.retrieval_eval import ABLATION_WEIGHTS, SearchConfig, run_retrieval_eval
    from zhrag.evaluation.retrieval_eval import ablation as ablation_rows
    from zhrag.evaluation.retrieval_report import write_retrieval_report
    from zhrag.evaluation.retrieval_sets import load_query_sets
    from zhrag.kb.indexing import ensure_index

    weights = _weights(dense_weights) if dense_weights else ABLATION_WEIGHTS
    query_sets = load_query_sets(
        _split_values(sets), rc_limit=rc_limit, dataset=data, kb_sources=list(kb) if kb else None, seed=seed
    )
    _direct_store_only(store_options, "eval-retrieval")
    options = store_options.resolved()
    from zhrag.kb.retrieval import Retriever

    with _open_store(options) as store:
        ensure_index(store, source=list(kb) if kb else None, dense=True)  # the dense rows need every vector
        retriever = Retriever(store, reranker)
        configs = ablation_rows(weights, reranked=bool(dense_weights)) if ablation else (SearchConfig("store default"),)
        store_settings = {
            "collection": options.collection, "location": store.location, "engine": store.engine,
            "embedder": options.embedder,
            "chunks": store.count(), "bm25": store.index_settings()["bm25"],
        }

        def make_search(config: SearchConfig):
            return lambda query, top_k: retriever.search(
                query, top_k, mode=config.mode, dense_weight=config.dense_weight, reranker=config.reranker
            )

        requery_sets = [query_set for query_set in query_sets if query_set.match == "passage"]
        document = run_retrieval_eval(
            make_search, query_sets, configs, out, settings=store_settings, requery_sets=requery_sets, force=force
        )
    typer.echo(f"report: {write_retrieval_report(document, out)}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by zhrag eval.")],
    abstention: Annotated[
        Optional[Path], typer.Option(help="abstention.json of thresholds tuned on other questions (zhrag tune-abstention).")
    ] = None,
) -> None:
    """Rewrite report.md, summary.json and the plots of RUN_DIR from its results.jsonl."""
    from zhrag.evaluation.report import rebuild_report

    typer.echo(f"report: {rebuild_report(run_dir, abstention=abstention)}")


@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="Run directories of zhrag eval, each DIR or DIR=LABEL (its variants become LABEL:variant).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the combined report.md, summary.json and plots.")],
) -> None:
    """One report over several eval runs (e.g. a variant with and without an adapter), compared on shared questions."""
    from zhrag.evaluation.report import merged_results, write_report

    parsed = []
    for run in runs:
        path, _, label = run.partition("=")
        if not Path(path).is_dir():
            raise ConfigError(f"run directory not found: {path}")
        parsed.append((Path(path), label.strip() or None))
    writable_dir(out, "--out")
    typer.echo(f"report: {write_report(merged_results(parsed), out)}")


@app.command("tune-abstention")
def tune_abstention(
    run_dir: Annotated[Path, typer.Argument(help="Tuning run written by zhrag eval (questions outside the evaluation sample).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Thresholds file (default: RUN_DIR/abstention.json).")] = None,
) -> None:
    """Pick per variant the answer-confidence threshold of highest F on RUN_DIR; write abstention.json."""
    from zhrag.evaluation.abstention import ABSTENTION_FILE, tune_thresholds, write_thresholds
    from zhrag.evaluation.report import RESULTS_FILE, read_results

    tuned = tune_thresholds(read_results(run_dir / RESULTS_FILE))
    path = write_thresholds(tuned, out or run_dir / ABSTENTION_FILE, source=str(run_dir))
    for variant, entry in tuned.items():
        typer.echo(
            f"{variant}: threshold {entry['threshold']:.3f}: F {entry['before']['F']:.1f} -> {entry['after']['F']:.1f} "
            f"on {entry['n']} tuning questions"
        )
    typer.echo(f"thresholds: {path}")


@app.command("build-data")
@with_option_groups
def build_data(
    store_options: StoreOptions,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the train/eval files, dataset_info.json, manifest.")],
    task: Annotated[
        str, typer.Option(help="answer, judge, both, or tools (A3 tool-use traces searched through qdrant-find).")
    ] = "both",
    source: Annotated[
        str, typer.Option(help="rc (the shared reading-comprehension pairs), rc:FILE (other pairs) or a QA jsonl file.")
    ] = "rc",
    kb: Annotated[Optional[Path], typer.Option(help="Knowledge-base source of the passages (default: shared KB).")] = None,
    data_format: Annotated[str, typer.Option("--format", help="sharegpt or alpaca.")] = "sharegpt",
    limit: Annotated[Optional[int], typer.Option(help="A seeded sample of N pairs / questions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample, passage order and held-out split.")] = 0,
    model: Annotated[
        str, typer.Option(help="Model the data is for: its chat template (or none) decides the prompt form.")
    ] = settings.DEFAULT_LLM,
    name: Annotated[str, typer.Option(help="File name prefix (<name>_train.jsonl, <name>_eval.jsonl).")] = "zhrag",
    judge_check: Annotated[
        bool, typer.Option("--judge-check/--no-judge-check", help="tools: the judge model (--model) checks each trace.")
    ] = True,
    judge_threshold: Annotated[
        Optional[float], typer.Option(min=0.0, max=1.0, help="tools: judge score a trace's passage must reach.")
    ] = None,
) -> None:
    """Write fine-tuning examples (train and held-out eval splits) in the graph's own prompt formats into OUT."""
    from zhrag.training.build import build_qa_data, build_rc_data
    from zhrag.training.formats import write_splits
    from zhrag.training.base_model import uses_chat_template

    writable_dir(out, "--out", create=False)
    if task == "tools":
        _build_tool_data(store_options.resolved(), out, source, kb, data_format, limit, seed, model, name,
                         judge_check, judge_threshold)
        return
    chat = uses_chat_template(model)
    if source == "rc" or source.startswith("rc:"):
        rc_file = source.partition(":")[2] or None
        splits = build_rc_data(task, source=rc_file, kb=kb, chat=chat, limit=limit, seed=seed, progress=True)
    else:
        from zhrag.evaluation.datasets import load_questions
        from zhrag.evaluation.retrieval_metrics import kb_covered

        questions = load_questions(source)
        splits = build_qa_data(
            task, questions, relevant=kb_covered, kb=kb, chat=chat, limit=limit, seed=seed, progress=True
        )
    written = write_splits(splits, out, format=data_format, name=name)
    typer.echo(
        f"{len(splits.train)} train / {len(splits.eval)} eval examples ({task}, {data_format}, "
        f"{'chat' if chat else 'completion'} prompts) in {out}: {', '.join(path.name for path in written.values())}"
    )


def _build_tool_data(
    options: StoreOptions, out: Path, source: str, kb: Path | None, data_format: str, limit: int | None, seed: int,
    model: str, name: str, judge_check: bool, judge_threshold: float | None,
) -> None:
    """``build-data --task tools``: A3 traces searched through qdrant-find, checked by the judge model."""
    from zhrag.graph.context import DEFAULT_JUDGE_THRESHOLD, Context
    from zhrag.nodes.retrieve import server_config
    from zhrag.mcp.client import KnowledgeClient
    from zhrag.training.build import build_tool_data
    from zhrag.training.formats import write_splits

    if source != "rc" and not source.startswith("rc:"):
        raise ConfigError("--task tools is built from reading pairs: use --source rc or rc:FILE")
    check = None
    if judge_check:
        from zhrag.models import load_llm
        from zhrag.nodes.judge import score_passages

        llm = load_llm(model)

        def check(question: str, passages):
            return [score for score, _ in score_passages(llm, question, passages)]

    # The knowledge server the a3 graph would use with these store options (same reranker and evidence).
    with KnowledgeClient(server_config(Context(**fields_of(options)))) as client:
        splits, rejected = build_tool_data(
            client, source=source.partition(":")[2] or None, kb=kb, check=check,
            threshold=DEFAULT_JUDGE_THRESHOLD if judge_threshold is None else judge_threshold,
            limit=limit, seed=seed, progress=True,
        )
    written = write_splits(splits, out, format=data_format, name=name, rejected=rejected)
    typer.echo(
        f"{len(splits.train)} train / {len(splits.eval)} eval tool traces, {len(rejected)} rejected "
        f"({', '.join(f'{reason} {count}' for reason, count in splits.skipped.items()) or 'none'}) in {out}: "
        f"{', '.join(path.name for path in written.values())}"
    )


@app.command()
def train(
    task: Annotated[str, typer.Option(help="What the adapter is for: answer, judge or tools (the a3 agent).")],
    data: Annotated[Path, typer.Option(help="ShareGPT / Alpaca file, or a folder written by zhrag build-data.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter folder, e.g. adapters/NAME; re-running resumes.")],
    model: Annotated[str, typer.Option(help="Base model: packaged alias, .gguf file, HF directory or hub id.")] = settings.DEFAULT_LLM,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = 1.0,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after N optimiser steps (overrides --epochs).")] = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (linear warm-up and decay).")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per device per forward pass.")] = 4,
    grad_accum: Annotated[int, typer.Option(help="Forward passes per optimiser step.")] = 1,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (scale alpha / rank).")] = 32.0,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    target_modules: Annotated[
        str, typer.Option(help="Comma-separated module names to adapt.")
    ] = "q_proj,k_proj,v_proj,o_proj",
    output_tokens: Annotated[str, typer.Option(
        help="Tokens whose output-layer rows are trained outright, comma-separated; auto: a tools adapter's "
             "<tool_call> tags where they are special tokens of an untied output layer (Qwen2.5); none: no rows.")
    ] = "auto",
    max_length: Annotated[int, typer.Option(help="Most tokens per example (longer prompts lose their start).")] = 1536,
    limit: Annotated[Optional[int], typer.Option(help="Train on a seeded sample of N examples.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample, LoRA init and data order.")] = 0,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N optimiser steps.")] = 50,
    logging_steps: Annotated[int, typer.Option(help="Log the loss every N optimiser steps.")] = 5,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or mps (default: auto; bf16 on CUDA).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace another adapter or other checkpoints in OUT.")] = False,
) -> None:
    """Train a LoRA adapter for the answer or judge node or the a3 agent (resumable; multi-GPU with accelerate launch -m zhrag.cli)."""
    from zhrag.training.lora import LoraSettings, TrainSettings, train_adapter

    tokens = output_tokens.strip()
    lora = LoraSettings(
        rank=rank, alpha=alpha, dropout=dropout, target_modules=tuple(_split_values([target_modules])),
        output_tokens=tokens if tokens == "auto" else () if tokens in ("", "none") else tuple(_split_values([tokens])),
    )
    schedule = TrainSettings(
        epochs=epochs, max_steps=max_steps, learning_rate=lr, batch_size=batch_size, grad_accum=grad_accum,
        max_length=max_length, limit=limit, seed=seed, save_steps=save_steps, logging_steps=logging_steps,
    )
    result = train_adapter(task, data, out, model=model, lora=lora, train=schedule, device=device, force=force)
    if not result.card:  # not the main process of a multi-process run
        return
    outcome = result.card["result"]
    if not result.trained:
        typer.echo(f"{out} already holds this adapter ({outcome['global_step']} steps); nothing to do")
        return
    resumed = f", resumed from {Path(result.resumed_from).name}" if result.resumed_from else ""
    loss = outcome["final_loss"]
    typer.echo(
        f"adapter: {out} ({outcome['global_step']} steps, final loss {'-' if loss is None else f'{loss:.4f}'}, "
        f"{outcome['wall_s']:.0f} s{resumed}); card: {out / 'training_card.json'}"
    )


def _run_model(model: str, adapter: str | None, device: str | None, engine: str) -> tuple[Any, dict[str, Any]]:
    """The model of an evaluation over examples (eval-reading, eval-tools) and what its ``run.json`` records of it."""
    from zhrag.models import load_llm
    from zhrag.evaluation.reading import adapter_identity

    llm = load_llm(model, adapter=adapter, device=device, engine=engine)
    record = {"model": model, "adapter": adapter_identity(adapter)}
    if engine != "auto":
        record["engine"] = engine
    return llm, record


@app.command("eval-reading")
def eval_reading(
    data: Annotated[Path, typer.Option(help="Evaluation file (*_eval.jsonl) or a folder written by zhrag build-data.")],
    out: RunOutOpt,
    model: Annotated[str, typer.Option(help="Answer model: packaged alias, .gguf file, HF directory or hub id.")] = settings.DEFAULT_LLM,
    adapter: Annotated[Optional[str], typer.Option("--adapter", "--answer-adapter", help="LoRA adapter of the answer model.")] = None,
    engine: EngineOpt = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Only the first N answer examples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Answer generation budget (the answer node's default).")] = 32,
    device: DeviceOpt = None,
    force: ForceOpt = False,
) -> None:
    """Reading accuracy (exact / contains) of the answer model on held-out answer examples; resumable."""
    from zhrag.evaluation.reading import evaluate_reading

    writable_dir(out, "reading run folder", create=False)  # before the model loads; the run creates it
    llm, model_record = _run_model(model, adapter, device, engine)
    summary = evaluate_reading(
        llm, data, out, model=model_record, limit=limit,
        batch_size=batch_size, max_new_tokens=max_new_tokens, force=force,
    )
    overall = summary["overall"]
    typer.echo(
        f"{overall['n']} examples: exact {overall['exact_pct']} %, contains {overall['contains_pct']} %, "
        f"abstained {overall['abstained_pct']} %; report: {out / 'report.md'}"
    )


@app.command("eval-tools")
def eval_tools(
    data: Annotated[Path, typer.Option(help="Evaluation file (*_eval.jsonl) or a folder written by zhrag build-data --task tools.")],
    out: RunOutOpt,
    model: Annotated[str, typer.Option(help="Agent model: packaged alias, .gguf file, HF directory or hub id.")] = settings.DEFAULT_LLM,
    adapter: Annotated[Optional[str], typer.Option("--adapter", "--answer-adapter", help="LoRA adapter of the agent model.")] = None,
    engine: EngineOpt = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Only the first N traces.")] = None,
    untrained_by: Annotated[Optional[Path], typer.Option(
        help="Replay the training split's traces this adapter folder did not train on (nor their paragraphs) "
             "instead of the held-out split; for the base model too.")] = None,
    device: DeviceOpt = None,
    force: ForceOpt = False,
) -> None:
    """Tool-call validity of the agent model on held-out tool traces, turn by turn (base vs adapter); resumable."""
    from zhrag.evaluation.tool_eval import evaluate_tools, load_traces

    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    writable_dir(out, "tool-use run folder", create=False)  # before the model loads; the run creates it
    traces = load_traces(data, untrained_by=untrained_by)
    llm, model_record = _run_model(model, adapter, device, engine)
    summary = evaluate_tools(llm, traces, out, model=model_record, limit=limit, force=force)
    calls, answers = summary["call_steps"], summary["answer_steps"]
    typer.echo(
        f"{summary['traces']} traces: well-formed calls {calls['well_formed']['pct']} % of {calls['well_formed']['n']}, "
        f"stopped to answer {answers['stopped']['pct']} %, answer in reply {answers['contains']['pct']} %; "
        f"report: {out / 'report.md'}"
    )


@app.command("eval-judge")
def eval_judge(
    data: Annotated[Path, typer.Option(help="Folder written by zhrag build-data with judge examples (train and eval splits).")],
    out: RunOutOpt,
    model: Annotated[str, typer.Option(help="Judge model: packaged alias, .gguf file, HF directory or hub id.")] = settings.DEFAULT_LLM,
    adapter: Annotated[Optional[str], typer.Option("--adapter", "--judge-adapter", help="LoRA adapter of the judge model.")] = None,
    engine: EngineOpt = "auto",
    limit: Annotated[int, typer.Option(help="Seeded examples scored per split.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = 0,
    device: DeviceOpt = None,
    force: ForceOpt = False,
) -> None:
    """Calibrate the A2 judge's threshold on training judge examples and measure it on held-out ones."""
    from zhrag.models import load_llm
    from zhrag.evaluation.judge_eval import evaluate_judge
    from zhrag.evaluation.reading import adapter_identity

    writable_dir(out, "judge run folder", create=False)  # before the model loads; the run creates it
    llm = load_llm(model, adapter=adapter, device=device, engine=engine)
    summary = evaluate_judge(
        llm, data, out, model={"model": model, "adapter": adapter_identity(adapter), "engine": engine}, limit=limit,
        seed=seed, force=force,
    )
    held_out = summary["eval"]["at_threshold"]
    typer.echo(
        f"threshold {summary['threshold']:.4f} (best F1 on training examples); held out: precision "
        f"{held_out['precision']} %, recall {held_out['recall']} %, F1 {held_out['f1']} %, AUC {summary['eval']['auc']}; "
        f"report: {out / 'report.md'}"
    )


@app.command("generate-data")
def generate_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="Pairs file (.jsonl); re-running resumes it.")],
    kb: Annotated[Optional[Path], typer.Option(help="Knowledge-base source of the passages (default: shared KB).")] = None,
    model: Annotated[str, typer.Option(help="Generating model: packaged alias, .gguf file, HF directory or hub id.")] = settings.DEFAULT_LLM,
    adapter: Annotated[Optional[str], typer.Option(help="LoRA adapter of the generating model.")] = None,
    device: DeviceOpt = None,
    limit: Annotated[Optional[int], typer.Option(help="Use the first N passages of the seeded order (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the passage order.")] = 0,
    per_passage: Annotated[int, typer.Option(help="Question/answer pairs asked for per passage.")] = 1,
    llm_check: Annotated[bool, typer.Option("--llm-check/--no-llm-check", help="Also ask the model whether the passage supports each pair.")] = True,
    copy_span: Annotated[int, typer.Option(help="Reject questions sharing this many consecutive characters with the passage.")] = 12,
    max_answer_chars: Annotated[int, typer.Option(help="Reject longer answers.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Passages generated together.")] = 4,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT when it holds a run with other settings.")] = False,
) -> None:
    """Let the model write question/answer pairs from KB passages, check each, and keep all with status and reason."""
    from zhrag.models import load_llm
    from zhrag.training.generate import GenerationSettings, generate_dataset

    run_settings = GenerationSettings(
        per_passage=per_passage, copy_span_chars=copy_span, max_answer_chars=max_answer_chars, llm_check=llm_check,
        seed=seed, batch_size=batch_size,
    )
    llm = load_llm(model, adapter=adapter, device=device)
    report = generate_dataset(llm, out, kb=kb, limit=limit, settings=run_settings, force=force)
    reasons = ", ".join(f"{name} {count}" for name, count in report.reasons.most_common()) or "none"
    typer.echo(
        f"{report.processed} passages processed ({report.already_done} already done) in {report.seconds:.0f} s: "
        f"{report.statuses['accepted']} accepted, {report.statuses['rejected']} rejected ({reasons}); "
        f"pairs: {report.out}, settings: {report.meta}"
    )


@app.command()
def review(
    file: Annotated[Path, typer.Argument(help="Generated pairs (.jsonl) or ShareGPT / Alpaca examples to review.")],
    port: Annotated[int, typer.Option(help="Port of the review page.")] = 7860,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    decisions: Annotated[
        Optional[Path], typer.Option(help="Decisions file, appended as you go (default: <FILE stem>.decisions.jsonl).")
    ] = None,
) -> None:
    """Open a web page to accept, reject or edit the items of FILE one by one; every decision is saved at once."""
    from zhrag.training.review import ReviewSession
    from zhrag.training.review_app import serve

    session = ReviewSession(file, decisions)
    counts = session.counts()
    typer.echo(f"{counts['total']} items, {counts['undecided']} undecided; decisions: {session.decisions_path}", err=True)
    serve(session, host=host, port=port)


@app.command("export-pairs")
def export_pairs(
    file: Annotated[Path, typer.Argument(help="Pairs file written by zhrag generate-data.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Reading-comprehension pairs file for build-data --source rc:OUT.")],
    decisions: Annotated[Optional[Path], typer.Option(help="Review decisions to apply (default: the review default, if present).")] = None,
) -> None:
    """Write the accepted (and reviewed) generated pairs as reading-comprehension pairs for build-data."""
    from zhrag.errors import TrainingDataError
    from zhrag.training.generate import generated_rc_pairs, write_rc_pairs
    from zhrag.training.review import default_decisions_path

    if decisions is None and default_decisions_path(file).exists():
        decisions = default_decisions_path(file)
    pairs = generated_rc_pairs(file, decisions)
    if not pairs:
        raise TrainingDataError(f"{file}: no accepted pairs to export")
    write_rc_pairs(pairs, out)
    applied = f" after the decisions in {decisions}" if decisions else ""
    typer.echo(f"{len(pairs)} accepted pairs{applied} written to {out}; next: zhrag build-data --source rc:{out}")

@app.command("serve-model")
def serve_model(
    model: Annotated[str, typer.Option(help="GGUF model to serve: packaged alias or .gguf file.")] = settings.DEFAULT_LLM,
    host: Annotated[str, typer.Option(help="Interface to listen on (a non-loopback one needs an API key).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8080,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key clients must send (unset: no key, loopback only).")
    ] = "ZHRAG_MODEL_API_KEY",
    device: DeviceOpt = None,
) -> None:
    """Serve a GGUF model over llama.cpp's OpenAI-compatible HTTP API (for --model-base-url elsewhere)."""
    import os
    import threading

    from zhrag.models.llamacpp import LlamaCppRuntime, LlamaCppSettings
    from zhrag.models.packaged import packaged_gguf, packaged_model
    from zhrag.models.sources import resolve_model_source

    key = os.environ.get(api_key_env) or None
    if key is None and not settings.is_loopback(host):
        raise ConfigError(f"serving on {host} needs an API key: set {api_key_env}")
    source = resolve_model_source(model)
    if source.kind not in ("packaged", "gguf"):
        raise ConfigError(f"serve-model serves GGUF models (packaged aliases or .gguf files), not {model!r}")
    path = packaged_gguf(model)[0] if packaged_model(model) else Path(source.location)
    runtime = LlamaCppRuntime(path, LlamaCppSettings.from_env(device), host=host, port=port, api_key=key or "", alias=model)
    typer.echo(f"serving {model} at {runtime.address}/v1 (model name {model!r}{', API key required' if key else ''}); Ctrl-C stops")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)


@app.command()
def doctor(
    lock: Annotated[
        Optional[Path], typer.Option(help="Lock file to compare the installed versions with (default: the clone's requirements.lock).")
    ] = None,
) -> None:
    """Check the installation: transformers / peft pair, installed versions against the lock file, the default model."""
    from zhrag.compat import LOCK_FILE, lock_mismatches, lora_stack_problem

    problems = []
    if problem := lora_stack_problem():
        problems.append(problem)
    path = lock or (LOCK_FILE if LOCK_FILE.is_file() else None)
    if path is not None:
        mismatches = lock_mismatches(path)
        problems += [f"{line} (lock file {path})" for line in mismatches]
        if not mismatches:
            typer.echo(f"installed versions match {path}")
    for problem in problems:
        typer.echo(f"problem: {problem}", err=True)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) with the installation; reinstall: pip install -c requirements.lock -e .")
    typer.echo("transformers and peft are a compatible pair")


def _weights(values: list[str]) -> tuple[float, ...]:
    """``--dense-weights``: non-negative numbers (space- or comma-separated).

    Raises:
        ConfigError: a value that is not a number, or a negative one.
    """
    weights = []
    for value in _split_values(values):
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"--dense-weights takes numbers, got {value!r}") from None
        if not weight >= 0:
            raise ConfigError(f"--dense-weights must be >= 0, got {value}")
        weights.append(weight)
    return tuple(weights)


def _split_values(values: list[str]) -> list[str]:
    """Flatten repeated and comma-separated option values: ["a0,a1", "a2"] -> ["a0", "a1", "a2"]."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


#: Options that take several space-separated values (``--variants a0 a1 a2``).
MULTI_VALUE_OPTIONS = frozenset({"--variants", "--metrics", "--sets", "--dense-weights"})


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
    from zhrag.mcp.server import main as server_main

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
    except OSError as error:  # a file or folder the checks could not foresee (a full disk, /proc, a race)
        where = f" ({error.filename})" if error.filename else ""
        typer.echo(f"error: {error.strerror or error}{where}", err=True)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
