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

# Model and graph options of ask and eval.
ModelOpt = Annotated[
    str,
    typer.Option(help="Answer model: packaged alias, .gguf file, HF directory, hub id, or the name served by --model-base-url."),
]
AnswerAdapterOpt = Annotated[
    Optional[str], typer.Option("--adapter", "--answer-adapter", help="LoRA adapter for answering.")
]
JudgeModelOpt = Annotated[Optional[str], typer.Option(help="A2 judge / requery model (default: the answer model).")]
JudgeAdapterOpt = Annotated[Optional[str], typer.Option(help="LoRA adapter for the A2 judge.")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:N or mps (default: auto).")]
DtypeOpt = Annotated[Optional[str], typer.Option(help="bfloat16, float16 or float32 (default: per device).")]
TopKOpt = Annotated[int, typer.Option(help="Passages per retrieval round (1..50).")]
MaxRequeriesOpt = Annotated[int, typer.Option(help="A2: maximum query rewrites.")]
MaxNewTokensOpt = Annotated[int, typer.Option(help="Answer generation budget.")]

# Model endpoints of ask and eval (served models instead of in-process ones).
ModelBaseUrlOpt = Annotated[
    Optional[str],
    typer.Option(help="OpenAI-compatible endpoint serving --model, e.g. http://localhost:8000/v1 (key: OPENAI_API_KEY)."),
]
JudgeBaseUrlOpt = Annotated[
    Optional[str], typer.Option(help="OpenAI-compatible endpoint serving the judge (default: --model-base-url).")
]

# Options shared by the commands that reach the knowledge base.
CollectionOpt = Annotated[str, typer.Option(help="Qdrant collection of the knowledge base.")]
QdrantUrlOpt = Annotated[
    Optional[str], typer.Option(help="Qdrant server URL (env ZHRAG_QDRANT_URL); default: embedded storage.")
]
QdrantPathOpt = Annotated[
    Optional[Path], typer.Option(help="Embedded Qdrant directory (env ZHRAG_QDRANT_PATH).")
]
QdrantEngineOpt = Annotated[
    Optional[str],
    typer.Option(help="Embedded engine: edge (Qdrant Edge, default) or local (qdrant-client; env ZHRAG_QDRANT_ENGINE)."),
]
EmbedderOpt = Annotated[str, typer.Option(help="Dense embedder: packaged alias, local path or hub id.")]
ModeOpt = Annotated[str, typer.Option(help="hybrid (BM25 + dense fused), sparse (BM25 only) or dense.")]
RerankerOpt = Annotated[
    Optional[str], typer.Option(help="evidence (offline, default), none, or a sentence-transformers cross-encoder.")
]
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
    if kwargs.get("qdrant_engine") is None:
        kwargs["qdrant_engine"] = settings.qdrant_engine()
    if kwargs.get("reranker") is None:
        kwargs.pop("reranker", None)
    return Context(**kwargs)


def _prepare_knowledge_base(context, kb: list[Path] | None) -> None:
    """Index the knowledge base on first use (collection missing or empty), then release the store.

    The store is closed before the graph starts its MCP server, because embedded Qdrant allows one
    client per path and the server process must own it.
    """
    from zhrag.tools.indexing import ensure_index
    from zhrag.tools.store import KnowledgeStore

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
    model: ModelOpt = settings.PACKAGED_LLM,
    answer_adapter: AnswerAdapterOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_adapter: JudgeAdapterOpt = None,
    model_base_url: ModelBaseUrlOpt = None,
    judge_base_url: JudgeBaseUrlOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    top_k: TopKOpt = 3,
    max_requeries: MaxRequeriesOpt = 2,
    max_new_tokens: MaxNewTokensOpt = 32,
    collection: CollectionOpt = settings.DEFAULT_COLLECTION,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    qdrant_engine: QdrantEngineOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
    reranker: RerankerOpt = None,
    kb: KbOpt = None,
) -> None:
    """Answer QUESTION with one variant and print the answer (or a JSON record with --json)."""
    question = _check_question(question)
    variant = _check_variant(variant)
    context = _context(
        model=model, answer_adapter=answer_adapter, judge_model=judge_model, judge_adapter=judge_adapter,
        model_base_url=model_base_url, judge_base_url=judge_base_url,
        device=device, dtype=dtype, top_k=top_k, max_requeries=max_requeries, max_new_tokens=max_new_tokens,
        collection=collection, qdrant_url=qdrant_url, qdrant_path=qdrant_path, qdrant_engine=qdrant_engine,
        embedder=embedder, reranker=reranker,
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
    qdrant_engine: QdrantEngineOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
    kb: KbOpt = None,
) -> None:
    """The main job on the embedded defaults: index the KB on first use, then answer with A0, A1 and A2."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    question = _check_question(question)
    context = _context(
        collection=collection, qdrant_url=qdrant_url, qdrant_path=qdrant_path, qdrant_engine=qdrant_engine,
        embedder=embedder,
    )
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
    sources: Annotated[
        Optional[list[Path]], typer.Argument(help="jsonl, text files, WikiExtractor directories or SQuAD json.")
    ] = None,
    collection: CollectionOpt = settings.DEFAULT_COLLECTION,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    qdrant_engine: QdrantEngineOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
    batch_size: Annotated[int, typer.Option(help="Points per upsert batch.")] = 128,
    from_local: Annotated[
        bool,
        typer.Option(
            "--from-local",
            help="Instead of indexing SOURCES, copy the qdrant-client local collection at the Qdrant path into "
            "its Edge shard (vectors as stored, no re-embedding).",
        ),
    ] = False,
) -> None:
    """Index SOURCES into the Qdrant collection (idempotent: re-indexing updates in place)."""
    from zhrag.tools.indexing import index_sources
    from zhrag.tools.store import KnowledgeStore

    if from_local:
        if sources or qdrant_url or (qdrant_engine or settings.qdrant_engine()) != "edge":
            raise ConfigError("--from-local copies into the Edge shard: give no sources, no --qdrant-url, engine edge")
        path = qdrant_path or settings.qdrant_path()
        with (
            KnowledgeStore(collection, path=path, embedder=embedder, engine="local") as local,
            KnowledgeStore(collection, path=path, embedder=embedder, engine="edge") as store,
        ):
            copied = store.copy_from(local, progress=True)
            typer.echo(f"copied {copied} points of collection {collection!r} from local mode into Edge in {path}")
        return
    if not sources:
        raise ConfigError("nothing to index: give one or more sources (or --from-local)")
    url = qdrant_url or settings.qdrant_url()
    with KnowledgeStore(collection, path=qdrant_path, url=url, embedder=embedder, engine=qdrant_engine) as store:
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
    concurrency: Annotated[
        Optional[int], typer.Option(min=1, help="Questions evaluated at once, their generation batched (default: 1 on CPU, the batch limit on GPUs).")
    ] = None,
    model: ModelOpt = settings.PACKAGED_LLM,
    answer_adapter: AnswerAdapterOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_adapter: JudgeAdapterOpt = None,
    model_base_url: ModelBaseUrlOpt = None,
    judge_base_url: JudgeBaseUrlOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    top_k: TopKOpt = 3,
    max_requeries: MaxRequeriesOpt = 2,
    max_new_tokens: MaxNewTokensOpt = 32,
    collection: CollectionOpt = settings.DEFAULT_COLLECTION,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    qdrant_engine: QdrantEngineOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
    reranker: RerankerOpt = None,
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
        model_base_url=model_base_url, judge_base_url=judge_base_url,
        device=device, dtype=dtype, top_k=top_k, max_requeries=max_requeries, max_new_tokens=max_new_tokens,
        collection=collection, qdrant_url=qdrant_url, qdrant_path=qdrant_path, qdrant_engine=qdrant_engine,
        embedder=embedder, reranker=reranker, grader=grader, eval_model=eval_model, eval_base_url=eval_base_url,
        eval_api_model=eval_api_model, eval_embedder=eval_embedder,
    )
    if any(name != "a0" for name in variant_list):
        _prepare_knowledge_base(context, kb)
    report_path = run_evaluation(
        variant_list, questions, out, context=context, metrics=_split_values(metrics), force=force,
        data=dataset_info(data or settings.default_dataset(), **filters),
        kb_sources=kb, concurrency=concurrency,
    )
    typer.echo(f"report: {report_path}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to search for (a question or keywords).")],
    top_k: Annotated[int, typer.Option(help="Passages to return.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print passages as JSON (id, title, text, evidence, score).")] = False,
    mode: ModeOpt = "hybrid",
    reranker: RerankerOpt = None,
    collection: CollectionOpt = settings.DEFAULT_COLLECTION,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    qdrant_engine: QdrantEngineOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
) -> None:
    """Search the knowledge base with the retrieval that the MCP tool qdrant-find serves."""
    from zhrag.tools.store import KnowledgeStore

    url = qdrant_url or settings.qdrant_url()
    with KnowledgeStore(
        collection, path=qdrant_path, url=url, embedder=embedder, engine=qdrant_engine, reranker=reranker
    ) as store:
        passages = store.search(query, top_k, mode=mode)
    if as_json:
        typer.echo(json.dumps(passages, ensure_ascii=False, indent=2))
        return
    for rank, passage in enumerate(passages, 1):
        shown = passage.get("evidence") or passage["text"]
        typer.echo(f"[{rank}] {passage['score']:.3f} {passage['id']} 【{passage['title']}】\n    {shown}")


@app.command("eval-retrieval")
def eval_retrieval(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; re-running resumes it.")] = Path("runs/retrieval"),
    sets: Annotated[
        list[str], typer.Option("--sets", help="Query sets: rc, dev-verified, dev-covered (default: all three).")
    ] = ["rc", "dev-verified", "dev-covered"],
    rc_limit: Annotated[Optional[int], typer.Option(help="A seeded sample of N reading-comprehension pairs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --rc-limit.")] = 0,
    data: Annotated[Optional[Path], typer.Option(help="Chinese-SimpleQA jsonl (default: the shared dev set).")] = None,
    ablation: Annotated[
        bool, typer.Option("--ablation/--no-ablation", help="All ablation rows, or only the store's configuration.")
    ] = True,
    force: Annotated[bool, typer.Option("--force", help="Start afresh when OUT holds a run with other settings.")] = False,
    collection: CollectionOpt = settings.DEFAULT_COLLECTION,
    qdrant_url: QdrantUrlOpt = None,
    qdrant_path: QdrantPathOpt = None,
    qdrant_engine: QdrantEngineOpt = None,
    embedder: EmbedderOpt = settings.PACKAGED_EMBEDDER,
    reranker: RerankerOpt = None,
    kb: KbOpt = None,
) -> None:
    """Recall@1/3/5/10 and MRR of retrieval configurations on query sets with known gold; writes retrieval.md."""
    from zhrag.evaluation.retrieval_eval import ABLATION, SearchConfig, run_retrieval_eval
    from zhrag.evaluation.retrieval_report import write_retrieval_report
    from zhrag.evaluation.retrieval_sets import load_query_sets
    from zhrag.tools.indexing import ensure_index
    from zhrag.tools.store import KnowledgeStore

    query_sets = load_query_sets(
        _split_values(sets), rc_limit=rc_limit, dataset=data, kb_sources=list(kb) if kb else None, seed=seed
    )
    url = qdrant_url or settings.qdrant_url()
    with KnowledgeStore(
        collection, path=qdrant_path, url=url, embedder=embedder, engine=qdrant_engine, reranker=reranker
    ) as store:
        ensure_index(store, source=list(kb) if kb else None)
        configs = ABLATION if ablation else (SearchConfig("store default"),)
        store_settings = {
            "collection": collection, "location": store.location, "engine": store.engine, "embedder": embedder,
            "chunks": store.count(), "bm25": store.index_settings()["bm25"],
        }

        def make_search(config: SearchConfig):
            return lambda query, top_k: store.search(
                query, top_k, mode=config.mode, dense_weight=config.dense_weight, reranker=config.reranker
            )

        requery_sets = [query_set for query_set in query_sets if query_set.match == "passage"]
        document = run_retrieval_eval(
            make_search, query_sets, configs, out, settings=store_settings, requery_sets=requery_sets, force=force
        )
    typer.echo(f"report: {write_retrieval_report(document, out)}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="Run directory written by zhrag eval.")]) -> None:
    """Rewrite report.md, summary.json and the plots of RUN_DIR from its results.jsonl."""
    from zhrag.evaluation.report import rebuild_report

    typer.echo(f"report: {rebuild_report(run_dir)}")


@app.command("build-data")
def build_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the train/eval files, dataset_info.json, manifest.")],
    task: Annotated[str, typer.Option(help="answer, judge or both.")] = "both",
    source: Annotated[
        str, typer.Option(help="rc (the shared reading-comprehension pairs), rc:FILE (other pairs) or a QA jsonl file.")
    ] = "rc",
    kb: Annotated[Optional[Path], typer.Option(help="Knowledge-base source of the passages (default: shared KB).")] = None,
    data_format: Annotated[str, typer.Option("--format", help="sharegpt or alpaca.")] = "sharegpt",
    limit: Annotated[Optional[int], typer.Option(help="A seeded sample of N pairs / questions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample, passage order and held-out split.")] = 0,
    model: Annotated[
        str, typer.Option(help="Model the data is for: its chat template (or none) decides the prompt form.")
    ] = settings.PACKAGED_LLM,
    name: Annotated[str, typer.Option(help="File name prefix (<name>_train.jsonl, <name>_eval.jsonl).")] = "zhrag",
) -> None:
    """Write fine-tuning examples (train and held-out eval splits) in the graph's own prompt formats into OUT."""
    from zhrag.training.build import build_qa_data, build_rc_data
    from zhrag.training.formats import write_splits
    from zhrag.training.base_model import uses_chat_template

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


@app.command()
def train(
    task: Annotated[str, typer.Option(help="Node the adapter is for: answer or judge.")],
    data: Annotated[Path, typer.Option(help="ShareGPT / Alpaca file, or a folder written by zhrag build-data.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter folder, e.g. adapters/NAME; re-running resumes.")],
    model: Annotated[str, typer.Option(help="Base model: packaged alias, .gguf file, HF directory or hub id.")] = settings.PACKAGED_LLM,
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
    max_length: Annotated[int, typer.Option(help="Most tokens per example (longer prompts lose their start).")] = 1536,
    limit: Annotated[Optional[int], typer.Option(help="Train on a seeded sample of N examples.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample, LoRA init and data order.")] = 0,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N optimiser steps.")] = 50,
    logging_steps: Annotated[int, typer.Option(help="Log the loss every N optimiser steps.")] = 5,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or mps (default: auto; bf16 on CUDA).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace another adapter or other checkpoints in OUT.")] = False,
) -> None:
    """Train a LoRA adapter for the answer or judge node (resumable; multi-GPU with accelerate launch -m zhrag.cli)."""
    from zhrag.training.lora import LoraSettings, TrainSettings, train_adapter

    lora = LoraSettings(rank=rank, alpha=alpha, dropout=dropout, target_modules=tuple(_split_values([target_modules])))
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


@app.command("eval-reading")
def eval_reading(
    data: Annotated[Path, typer.Option(help="Evaluation file (*_eval.jsonl) or a folder written by zhrag build-data.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder; re-running resumes it.")],
    model: Annotated[str, typer.Option(help="Answer model: packaged alias, .gguf file, HF directory or hub id.")] = settings.PACKAGED_LLM,
    adapter: Annotated[Optional[str], typer.Option("--adapter", "--answer-adapter", help="LoRA adapter of the answer model.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N answer examples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Answer generation budget (the answer node's default).")] = 32,
    device: DeviceOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Start afresh when OUT holds a run with other settings.")] = False,
) -> None:
    """Reading accuracy (exact / contains) of the answer model on held-out answer examples; resumable."""
    from zhrag.models import load_llm
    from zhrag.training.reading import adapter_identity, evaluate_reading

    llm = load_llm(model, adapter=adapter, device=device)
    summary = evaluate_reading(
        llm, data, out, model={"model": model, "adapter": adapter_identity(adapter)}, limit=limit,
        batch_size=batch_size, max_new_tokens=max_new_tokens, force=force,
    )
    overall = summary["overall"]
    typer.echo(
        f"{overall['n']} examples: exact {overall['exact_pct']} %, contains {overall['contains_pct']} %, "
        f"abstained {overall['abstained_pct']} %; report: {out / 'report.md'}"
    )


@app.command("generate-data")
def generate_data(
    out: Annotated[Path, typer.Option("--out", "-o", help="Pairs file (.jsonl); re-running resumes it.")],
    kb: Annotated[Optional[Path], typer.Option(help="Knowledge-base source of the passages (default: shared KB).")] = None,
    model: Annotated[str, typer.Option(help="Generating model: packaged alias, .gguf file, HF directory or hub id.")] = settings.PACKAGED_LLM,
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
