"""Evaluations and their reports: ``zhrag eval``, ``eval-retrieval``, ``eval-reading``, ``eval-tools``,
``eval-judge``, ``report``, ``compare`` and ``tune-abstention``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer

from zhrag import settings
from zhrag.cli.common import (
    _check_variant,
    _context,
    _direct_store_only,
    _open_store,
    _prepare_knowledge_base,
    _split_values,
)
from zhrag.cli.options import (
    ForceOpt,
    GraphOptions,
    KbOpt,
    ModelOptions,
    RerankerOpt,
    RunOutOpt,
    SampleOpt,
    SeedOpt,
    SingleModelOptions,
    StoreOptions,
    out_option,
    single_model_options,
    with_option_groups,
)
from zhrag.errors import ConfigError
from zhrag.jsonl import writable_dir


@with_option_groups
def eval_(
    models: ModelOptions,
    graph: GraphOptions,
    store: StoreOptions,
    variants: Annotated[
        list[str], typer.Option("--variants", help="Variants to compare on the same questions: --variants a0 a1 a2.")
    ] = ["a0", "a1", "a2"],  # noqa: B006 - typer copies a list default; it is never mutated
    out: Annotated[Path, out_option("Run directory; re-running resumes it.")] = Path("runs/eval"),
    data: Annotated[
        str | None,
        typer.Option(
            help="Question jsonl file, HF dataset id, rc (held-out reading-comprehension pairs as open questions) or "
            "rc-train (the training-split pairs, for tuning); default: shared dev set."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions (after the filters).")] = None,
    sample: SampleOpt = None,
    seed: SeedOpt = 0,
    exclude_sample: Annotated[
        int | None, typer.Option(help="Leave out the questions of the seeded --sample of this size (a tuning set beside it).")
    ] = None,
    exclude_seed: Annotated[int, typer.Option(help="Seed of --exclude-sample.")] = 0,
    category: Annotated[list[str] | None, typer.Option("--category", help="Primary category to keep (repeatable).")] = None,
    ids_file: Annotated[Path | None, typer.Option(help="File of question ids to keep, one per line.")] = None,
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics",
            help="Any of grade, retrieval, strings, faithfulness, answer_correctness "
            "(default: grade, retrieval, and strings when ragas is installed).",
        ),
    ] = None,
    grader: Annotated[str, typer.Option(help="rules (offline string matching) or official (LLM judge).")] = "rules",
    eval_model: Annotated[str | None, typer.Option(help="Local judge model for the official grader and RAGAS.")] = None,
    eval_base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible judge endpoint, e.g. http://localhost:8000/v1 (key: OPENAI_API_KEY).")
    ] = None,
    eval_api_model: Annotated[str | None, typer.Option(help="Model name served by --eval-base-url.")] = None,
    eval_embedder: Annotated[str, typer.Option(help="Embedder of RAGAS answer similarity.")] = settings.PACKAGED_EMBEDDER,
    force: ForceOpt = False,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Questions evaluated at once, their generation batched (default: 1 on CPU, the batch limit on GPUs).")
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
    filters: dict[str, Any] = {"limit": limit, "categories": category, "ids_file": ids_file, "sample": sample}
    if sample is not None:
        filters["seed"] = seed
    if exclude_sample is not None:
        filters.update(exclude_sample=exclude_sample, exclude_seed=exclude_seed)
    questions = load_questions(data, **filters)
    context = _context(models, graph, store, reranker=reranker)
    evaluation = EvalSettings(
        grader=grader,  # type: ignore[arg-type]  # EvalSettings refuses an unknown grader in one line
        eval_model=eval_model, eval_base_url=eval_base_url, eval_api_model=eval_api_model,
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


@with_option_groups
def eval_retrieval(
    store_options: StoreOptions,
    out: Annotated[Path, out_option("Output folder; re-running resumes it.")] = Path("runs/retrieval"),
    sets: Annotated[
        list[str],
        typer.Option(
            "--sets", help="Query sets: rc, rc-train, rc-heldout, dev-verified, dev-covered (default: rc, dev-verified, dev-covered)."
        ),
    ] = ["rc", "dev-verified", "dev-covered"],  # noqa: B006 - typer copies a list default; it is never mutated
    rc_limit: Annotated[int | None, typer.Option(help="A seeded sample of N reading-comprehension pairs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --rc-limit.")] = 0,
    data: Annotated[Path | None, typer.Option(help="Chinese-SimpleQA jsonl (default: the shared dev set).")] = None,
    ablation: Annotated[
        bool, typer.Option("--ablation/--no-ablation", help="All ablation rows, or only the store's configuration.")
    ] = True,
    dense_weights: Annotated[
        list[str] | None,
        typer.Option(
            "--dense-weights",
            help="Dense RRF weights of the hybrid ablation rows, e.g. 0.2 0.5 1 (default: 1 0.2); given, each weight "
            "also gets a row with the evidence reranker (for tuning).",
        ),
    ] = None,
    force: ForceOpt = False,
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
        store_settings = _store_settings(options, store)
        make_search = _config_search(retriever)
        requery_sets = [query_set for query_set in query_sets if query_set.match == "passage"]
        document = run_retrieval_eval(
            make_search, query_sets, configs, out, settings=store_settings, requery_sets=requery_sets, force=force
        )
    typer.echo(f"report: {write_retrieval_report(document, out)}")


def _store_settings(options: StoreOptions, store) -> dict[str, Any]:
    """What ``eval-retrieval`` records of the store it searched (collection, location, engine, embedder, size)."""
    return {
        "collection": options.collection, "location": store.location, "engine": store.engine,
        "embedder": options.embedder,
        "chunks": store.count(), "bm25": store.index_settings()["bm25"],
    }


def _config_search(retriever):
    """``make_search`` of :func:`~zhrag.evaluation.retrieval_eval.run_retrieval_eval`: the search function of one
    configuration (mode, dense weight, reranker) through ``retriever``."""

    def make_search(config):
        return lambda query, top_k: retriever.search(
            query, top_k, mode=config.mode, dense_weight=config.dense_weight, reranker=config.reranker
        )

    return make_search


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


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by zhrag eval.")],
    abstention: Annotated[
        Path | None, typer.Option(help="abstention.json of thresholds tuned on other questions (zhrag tune-abstention).")
    ] = None,
) -> None:
    """Rewrite report.md, summary.json and the plots of RUN_DIR from its results.jsonl."""
    from zhrag.evaluation.report import rebuild_report

    typer.echo(f"report: {rebuild_report(run_dir, abstention=abstention)}")


def compare(
    runs: Annotated[list[str], typer.Argument(help="Run directories of zhrag eval, each DIR or DIR=LABEL (its variants become LABEL:variant).")],
    out: Annotated[Path, out_option("Folder for the combined report.md, summary.json and plots.")],
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


def tune_abstention(
    run_dir: Annotated[Path, typer.Argument(help="Tuning run written by zhrag eval (questions outside the evaluation sample).")],
    out: Annotated[Path | None, out_option("Thresholds file (default: RUN_DIR/abstention.json).")] = None,
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


if TYPE_CHECKING:  # each is a SingleModelOptions with its own help texts
    AnswerModelOptions: TypeAlias = SingleModelOptions
    AgentModelOptions: TypeAlias = SingleModelOptions
    JudgeModelOptions: TypeAlias = SingleModelOptions
else:
    AnswerModelOptions = single_model_options("answer", "--answer-adapter")
    AgentModelOptions = single_model_options("agent", "--answer-adapter")
    JudgeModelOptions = single_model_options("judge", "--judge-adapter")


def _run_model(models: SingleModelOptions, record_engine: bool = False) -> tuple[Any, dict[str, Any]]:
    """The model of an evaluation over examples (eval-reading, eval-tools, eval-judge) and what its ``run.json``
    records of it (the engine where it is not auto, or always with ``record_engine``)."""
    from zhrag.evaluation.reading import adapter_identity
    from zhrag.models import load_llm

    llm = load_llm(models.model, adapter=models.adapter, device=models.device, engine=models.engine)
    record = {"model": models.model, "adapter": adapter_identity(models.adapter)}
    if record_engine or models.engine != "auto":
        record["engine"] = models.engine
    return llm, record


@with_option_groups
def eval_reading(
    data: Annotated[Path, typer.Option(help="Evaluation file (*_eval.jsonl) or a folder written by zhrag build-data.")],
    out: RunOutOpt,
    models: AnswerModelOptions,
    limit: Annotated[int | None, typer.Option(help="Only the first N answer examples (of the sample, with --sample).")] = None,
    sample: SampleOpt = None,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Answer generation budget (the answer node's default).")] = 32,
    force: ForceOpt = False,
) -> None:
    """Reading accuracy (exact / contains) of the answer model on held-out answer examples; resumable."""
    from zhrag.evaluation.reading import evaluate_reading

    writable_dir(out, "reading run folder", create=False)  # before the model loads; the run creates it
    llm, model_record = _run_model(models)
    summary = evaluate_reading(
        llm, data, out, model=model_record, limit=limit, sample=sample, seed=seed,
        batch_size=batch_size, max_new_tokens=max_new_tokens, force=force,
    )
    overall = summary["overall"]
    typer.echo(
        f"{overall['n']} examples: exact {overall['exact_pct']} %, contains {overall['contains_pct']} %, "
        f"abstained {overall['abstained_pct']} %; report: {out / 'report.md'}"
    )


@with_option_groups
def eval_tools(
    data: Annotated[Path, typer.Option(help="Evaluation file (*_eval.jsonl) or a folder written by zhrag build-data --task tools.")],
    out: RunOutOpt,
    models: AgentModelOptions,
    limit: Annotated[int | None, typer.Option(help="Only the first N traces.")] = None,
    untrained_by: Annotated[Path | None, typer.Option(
        help="Replay the training split's traces this adapter folder did not train on (nor their paragraphs) "
             "instead of the held-out split; for the base model too.")] = None,
    force: ForceOpt = False,
) -> None:
    """Tool-call validity of the agent model on held-out tool traces, turn by turn (base vs adapter); resumable."""
    from zhrag.evaluation.tool_eval import evaluate_tools, load_traces

    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    writable_dir(out, "tool-use run folder", create=False)  # before the model loads; the run creates it
    traces = load_traces(data, untrained_by=untrained_by)
    llm, model_record = _run_model(models)
    summary = evaluate_tools(llm, traces, out, model=model_record, limit=limit, force=force)
    calls, answers = summary["call_steps"], summary["answer_steps"]
    typer.echo(
        f"{summary['traces']} traces: well-formed calls {calls['well_formed']['pct']} % of {calls['well_formed']['n']}, "
        f"stopped to answer {answers['stopped']['pct']} %, answer in reply {answers['contains']['pct']} %; "
        f"report: {out / 'report.md'}"
    )


@with_option_groups
def eval_judge(
    data: Annotated[Path, typer.Option(help="Folder written by zhrag build-data with judge examples (train and eval splits).")],
    out: RunOutOpt,
    models: JudgeModelOptions,
    limit: Annotated[int, typer.Option(help="Seeded examples scored per split.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = 0,
    force: ForceOpt = False,
) -> None:
    """Calibrate the A2 judge's threshold on training judge examples and measure it on held-out ones."""
    from zhrag.evaluation.judge_eval import evaluate_judge

    writable_dir(out, "judge run folder", create=False)  # before the model loads; the run creates it
    llm, model_record = _run_model(models, record_engine=True)
    summary = evaluate_judge(llm, data, out, model=model_record, limit=limit, seed=seed, force=force)
    held_out = summary["eval"]["at_threshold"]
    typer.echo(
        f"threshold {summary['threshold']:.4f} (best F1 on training examples); held out: precision "
        f"{held_out['precision']} %, recall {held_out['recall']} %, F1 {held_out['f1']} %, AUC {summary['eval']['auc']}; "
        f"report: {out / 'report.md'}"
    )
