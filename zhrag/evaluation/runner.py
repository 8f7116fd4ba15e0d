"""Evaluate graph variants on one question set, resumably, and write the report.

``run_evaluation`` runs every variant on every question (question by question, so an interrupted
run still compares the variants on the same questions) and appends one JSON line per
(question, variant) to ``results.jsonl`` the moment it is done (flushed and fsync'd). Run again with
the same settings, it skips the pairs already there; a run killed at any moment loses at most the
pairs in flight, and an incomplete last line left by the kill is dropped and that pair redone.

With ``concurrency`` N > 1, N worker threads run graphs at once (pairs are started in the same
question-by-question order; lines are written as pairs finish, by the main thread only), and the
local models batch the workers' concurrent generation calls into shared forward passes (see
``zhrag.models.batching``). The default N is the answer model's default concurrency on its device
(``zhrag.models.batching.default_concurrency``: 1 on CPU, where batching measured slower, the batch
limit on GPUs; 1 for models that are not local Hugging Face models). Concurrency is not a setting of the run: a run may be
resumed with another N.

``run.json`` in the output directory records the settings (variants, metrics, question set and its
hash, filters, the graph's ``context``, the ``evaluation`` settings (grader, evaluation judge), KB sources).
A run with other settings into the same directory is refused unless ``force=True``, which moves the
old run's files into ``replaced-<timestamp>/`` and starts afresh, so results of two runs never mix. The run
folder's rules (claiming, resuming, the commit and load average recorded per session) are :mod:`zhrag.run_folder`'s.

Result record (one per line; what ``zhrag.evaluation.report`` reads)::

    {"id", "variant", "question", "gold", "answer", "answer_confidence", "abstained", "primary_category",
     "secondary_category", "grade", "contexts", "retrieved", "judgements", "best_rejected", "queries", "requeries",
     "timings_ms": {node: ms, "total": ms}, "metric_ms": {metric: ms},
     "scores": {...}, "recall": {"retrieved": bool | None, "kept": bool | None}, "kb_covered": bool | None}

``timings_ms`` holds the answering nodes only and ``total`` is the wall time of the graph run without
the metric nodes, whose times are in ``metric_ms``. ``kb_covered``: see ``kb_coverage`` (``None``
when no KB source was available).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from tqdm import tqdm

from zhrag import settings
from zhrag.errors import ConfigError, DatasetError
from zhrag.evaluation.datasets import Question
from zhrag.evaluation.eval_settings import EvalSettings
from zhrag.evaluation.judges import check_evaluation_setup
from zhrag.evaluation.kb_coverage import KBCoverage
from zhrag.evaluation.report import (
    PLOT_FILES,
    REPORT_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    read_results,
    write_report,
)
from zhrag.evaluation.scorers import metric_terminal_nodes
from zhrag.graph.builder import VARIANTS, build_graph
from zhrag.graph.context import Context
from zhrag.jsonl import append_jsonl, writable_dir
from zhrag.models.batching import concurrent_callers
from zhrag.nodes import retrieve
from zhrag.nodes.agent import agent_record
from zhrag.nodes.common import answer_llm, judge_llm
from zhrag.nodes.roles import roles_record
from zhrag.run_folder import check_run, done_ids, finish_run, start_run

#: Version of the ``run.json`` / results layout (2: the evaluation settings left ``context`` for ``evaluation``).
RUN_FORMAT = 2
#: Metrics computed when none are named; ``grade`` is always computed (the report needs it).
DEFAULT_METRICS = ("grade", "retrieval")


def default_metrics() -> list[str]:
    """:data:`DEFAULT_METRICS`, plus RAGAS's judge-free ``strings`` metrics where ragas is installed."""
    try:
        import ragas  # noqa: F401
    except ImportError:
        return list(DEFAULT_METRICS)
    return [*DEFAULT_METRICS, "strings"]


def dataset_info(source: str | Path, **filters: Any) -> dict[str, Any]:
    """What ``run.json`` records about the question set: its path (or hub id), file hash and filters.

    ``filters`` are the filters given to ``load_questions`` (``None`` values are left out).
    """
    path = Path(source).expanduser()
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    kept = {
        name: str(value) if isinstance(value, Path) else value
        for name, value in filters.items()
        if value is not None
    }
    return {"source": str(path.resolve()) if path.is_file() else str(source), "sha256": digest, "filters": kept}


def questions_digest(questions: Sequence[Question]) -> str:
    """SHA-256 of the questions' ids, texts and gold answers, in order."""
    rows = [[question.id, question.question, question.answer] for question in questions]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()


def run_evaluation(
    variants: Iterable[str],
    questions: Sequence[Question],
    out_dir: str | Path,
    *,
    context: Context,
    evaluation: EvalSettings | None = None,
    metrics: Iterable[str] = DEFAULT_METRICS,
    force: bool = False,
    progress: bool = True,
    data: Mapping[str, Any] | None = None,
    kb_sources: Sequence[str | Path] | None = None,
    concurrency: int | None = None,
) -> Path:
    """Evaluate ``variants`` on ``questions`` into ``out_dir`` and write the report; returns ``report.md``.

    Args:
        variants: Graph variants (``a0``, ``a1``, ``a2``); run in that order for each question.
        questions: The question set (``load_questions``), the same for every variant.
        out_dir: Run directory: ``run.json``, ``results.jsonl``, then the report files.
        context: The run's ``zhrag.graph.context.Context`` (models, retrieval, A2 judge).
        evaluation: The grader and evaluation judge (default ``EvalSettings()``: the rule grader).
        metrics: Metric nodes to run (``grade``, ``faithfulness``, ``answer_correctness``,
            ``retrieval``); ``grade`` is added when missing.
        force: Start afresh even when ``out_dir`` holds a run with other settings (its files are
            moved to ``out_dir/replaced-<timestamp>/``).
        progress: Show a progress bar with ETA on stderr.
        data: Where the questions came from, recorded in ``run.json`` (see ``dataset_info``).
        kb_sources: KB sources for ``kb_covered``; default the shared KB (``settings.default_kb_source``)
            when it exists, else ``kb_covered`` is ``None``.
        concurrency: Pairs evaluated at once (worker threads whose generation calls are batched);
            ``None``: the answer model's default concurrency on its device (see the module doc).

    Raises:
        ConfigError: unknown variant or metric, bad context, ``concurrency`` < 1, or ``out_dir`` holds another run.
        DatasetError: no questions, duplicate question ids, or a damaged ``results.jsonl``.
        JudgeError, ModelLoadError, MCPServerError: the judge, a model or the knowledge server is
            unusable (checked before the first question where possible).
    """
    if not isinstance(context, Context):
        raise ConfigError("context must be a zhrag.graph.context.Context")
    evaluation = evaluation or EvalSettings()
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
    variant_list = _variants([variants] if isinstance(variants, str) else variants)
    metric_list = list(dict.fromkeys(["grade", *([metrics] if isinstance(metrics, str) else metrics)]))
    metric_nodes = metric_terminal_nodes(metric_list, evaluation)
    graphs = {variant: build_graph(variant, terminal_nodes=metric_nodes) for variant in variant_list}
    if not questions:
        raise DatasetError("no questions to evaluate (the question set is empty after filtering)")
    if len({question.id for question in questions}) != len(questions):
        raise DatasetError("the question set has duplicate ids")
    if kb_sources is None:
        default_kb = settings.default_kb_source()
        kb_sources = [default_kb] if default_kb.exists() else []
    out_dir = writable_dir(out_dir, "evaluation folder", create=False)  # created once the checks pass
    run_settings = {
        "format": RUN_FORMAT,
        "variants": variant_list,
        "metrics": metric_list,
        "questions": {"n": len(questions), "sha256": questions_digest(questions)},
        "data": dict(data or {}),
        "context": dataclasses.asdict(context),
        "evaluation": dataclasses.asdict(evaluation),
        "kb_sources": [str(Path(source).expanduser().resolve()) for source in kb_sources],
    }
    resuming = _same_run_or_refuse(out_dir, run_settings, force)

    check_evaluation_setup(context, evaluation, metric_list)
    results_path = out_dir / RESULTS_FILE
    done = _done_pairs(results_path) if resuming else set()
    pending = [(q, v) for q in questions for v in variant_list if (q.id, v) not in done]
    workers = concurrency or 1
    if pending:  # load the models and start the one MCP session now, not inside the first timed answer
        workers = concurrency or answer_llm(context).default_concurrency
        if "a2" in variant_list:
            judge_llm(context)
        if any(variant != "a0" for variant in variant_list):
            retrieve.get_knowledge_client(retrieve.server_config(context))
    start_run(out_dir, run_settings, _RUN_FILES, resume=resuming, what="evaluation folder")

    coverage = _coverage(kb_sources, progress) if pending and kb_sources else None
    with (
        results_path.open("ab") as sink,
        tqdm(
            total=len(questions) * len(variant_list),
            initial=len(questions) * len(variant_list) - len(pending),
            disable=not progress,
            unit="answer",
            desc="evaluating",
            dynamic_ncols=True,
        ) as bar,
    ):
        covered: dict[str, bool | None] = {}

        def task(pair: tuple[Question, str]) -> Callable[[], dict[str, Any]]:
            question, variant = pair
            if question.id not in covered:
                covered[question.id] = coverage.covers(question.question, question.answer) if coverage else None
            kb_covered = covered[question.id]
            return lambda: evaluate_one(graphs[variant], variant, question, context, metric_list, kb_covered)

        with concurrent_callers(workers) if workers > 1 else nullcontext():
            for record in run_tasks((task(pair) for pair in pending), workers):
                bar.set_postfix_str(f"{record['variant']} {record['id'][:12]}", refresh=False)
                append_jsonl(sink, [record])
                bar.update()
    report = write_report(read_results(results_path), out_dir)
    finish_run(out_dir)
    return report


def run_tasks(tasks: Iterable[Callable[[], Any]], workers: int) -> Iterator[Any]:
    """Run ``tasks`` on ``workers`` threads (in order of start, at most ``workers`` at once); yield results as they finish.

    With one worker the tasks run one after another in the calling thread. After a failure no new task
    starts; the results of the tasks already running are still yielded, then the first error is raised.
    """
    if workers <= 1:
        for run in tasks:
            yield run()
        return
    queue = iter(tasks)
    errors: list[BaseException] = []
    running: set[Future[Any]] = set()
    with ThreadPoolExecutor(workers, thread_name_prefix="zhrag-eval") as pool:
        while True:
            while not errors and len(running) < workers and (task := next(queue, None)) is not None:
                running.add(pool.submit(task))
            if not running:
                break
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                error = future.exception()
                if error is None:
                    yield future.result()
                else:
                    errors.append(error)
    if errors:
        raise errors[0]


def evaluate_one(
    graph: Any, variant: str, question: Question, context: Any, metrics: Sequence[str], kb_covered: bool | None
) -> dict[str, Any]:
    """Run one compiled evaluation graph on one question and build its result record."""
    started = time.perf_counter()
    state = graph.invoke({"question": question.question, "gold_answer": question.answer}, context=context)
    wall_ms = (time.perf_counter() - started) * 1000.0
    timings = dict(state.get("timings_ms") or {})
    metric_ms = {name: round(timings.pop(name), 1) for name in metrics if name in timings}
    timings = {node: round(ms, 1) for node, ms in timings.items()}
    timings["total"] = round(wall_ms - sum(metric_ms.values()), 1)
    scores = dict(state.get("scores") or {})
    grade = scores.pop("grade")
    recall = {"retrieved": scores.pop("recall_retrieved", None), "kept": scores.pop("recall_kept", None)}
    return {
        "id": question.id,
        "variant": variant,
        "question": question.question,
        "gold": question.answer,
        "answer": state.get("answer", ""),
        "answer_confidence": state.get("answer_confidence"),
        "abstained": bool(state.get("abstained")),
        "primary_category": question.primary_category,
        "secondary_category": question.secondary_category,
        "grade": grade,
        "contexts": state.get("contexts", []),
        "retrieved": state.get("retrieved", []),
        "judgements": state.get("judgements", []),
        "best_rejected": state.get("best_rejected"),
        "knowledge": state.get("knowledge"),
        "candidates": state.get("candidates", {}),
        "arbitration": state.get("arbitration"),
        "queries": state.get("queries", []),
        "requeries": state.get("requeries", 0),
        "timings_ms": timings,
        "metric_ms": metric_ms,
        "scores": scores,
        "recall": recall,
        "kb_covered": kb_covered,
        **(agent_record(state) if variant == "a3" else {}),
        **(roles_record(state) if variant == "a4" else {}),
    }


# ---------------------------------------------------------------------------------------------- run directory


def _variants(variants: Iterable[str]) -> list[str]:
    """Validated variants, deduplicated, in ablation order."""
    names = {str(variant).strip().lower() for variant in variants}
    unknown = sorted(names - set(VARIANTS))
    if unknown:
        raise ConfigError(f"unknown graph variant {unknown[0]!r}: use one of {', '.join(VARIANTS)}")
    if not names:
        raise ConfigError("no variant to evaluate: name at least one of " + ", ".join(VARIANTS))
    return [variant for variant in VARIANTS if variant in names]


def _same_run_or_refuse(out_dir: Path, run_settings: dict[str, Any], force: bool) -> bool:
    """True when ``out_dir`` holds a run with these settings (resume); False for a fresh run.

    Raises:
        ConfigError: ``out_dir`` holds another run (or results without ``run.json``) and not ``force``.
    """
    return check_run(out_dir, run_settings, force, kind="evaluation", upgrade=_upgraded_settings)


#: The dataclass of each settings section of ``run.json`` that gains fields over time.
_SECTION_TYPES: dict[str, type[Context] | type[EvalSettings]] = {"context": Context, "evaluation": EvalSettings}


def _upgraded_settings(recorded: dict[str, Any]) -> dict[str, Any]:
    """Recorded ``run.json`` settings as today's version writes them, to compare with the current run's.

    Format 1 kept the evaluation settings inside ``context``; they move to ``evaluation``. A field that a section's
    dataclass gained after the run was recorded is opt-in, so the run had its default: missing fields take the
    defaults of :data:`_SECTION_TYPES`, and only a non-default value counts as a change.
    """
    upgraded = dict(recorded)
    if upgraded.get("format") == 1 and isinstance(upgraded.get("context"), dict):
        context = dict(upgraded["context"])
        evaluation_fields = [item.name for item in dataclasses.fields(EvalSettings)]
        upgraded["evaluation"] = {name: context.pop(name) for name in evaluation_fields if name in context}
        upgraded["context"] = context
        upgraded["format"] = RUN_FORMAT
    for section, cls in _SECTION_TYPES.items():
        if isinstance(upgraded.get(section), dict):
            defaults = json.loads(json.dumps(dataclasses.asdict(cls())))  # as they read back from JSON
            upgraded[section] = {**defaults, **upgraded[section]}
    return upgraded


#: The files of a run (besides ``run.json``) that a forced fresh run moves aside.
_RUN_FILES = (RESULTS_FILE, SUMMARY_FILE, REPORT_FILE, *PLOT_FILES.values())


def _done_pairs(results_path: Path) -> set[tuple[str, str]]:
    """The (question id, variant) pairs in ``results.jsonl``, after dropping an incomplete last line.

    A kill during a write can only leave the last line without its newline; that fragment is cut
    off the file so the pair is redone. Any other unreadable line means the file is damaged.

    Raises:
        DatasetError: a complete line is not a JSON record with ``id`` and ``variant``, or a pair repeats.
    """
    return done_ids(results_path, key=lambda record: (str(record["id"]), str(record["variant"])), unique=True)

def _coverage(kb_sources: Sequence[str | Path], progress: bool) -> KBCoverage:
    """Index the KB sources for ``kb_covered`` (a few seconds for the shared KB)."""
    if progress:
        tqdm.write("indexing the knowledge base for kb_covered ...")
    return KBCoverage(kb_sources)
