"""The data sets of ``zhrag build-data``: RC pairs or a QA set, offline lexical retrieval, one task or both.

Distractor and context passages come from :class:`~zhrag.training.examples.LexicalRetriever` over the
knowledge base's chunks (no model, no Qdrant), so building works offline in seconds. ``limit`` draws a seeded
sample of the source items (pairs or questions), which spans the whole file; for QA sets the leading
evaluation slice (``QA_EXCLUDED_FIRST`` questions) is kept out before sampling, as
:func:`~zhrag.training.examples.build_qa_examples` does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from zhrag.errors import ConfigError
from zhrag.kb.passage import Passage
from zhrag.rc_pairs import load_rc_pairs
from zhrag.training.examples import (
    QA_EXCLUDED_FIRST,
    ExampleSplits,
    LexicalRetriever,
    QAItem,
    RelevanceRule,
    Retriever,
    build_qa_examples,
    build_rc_examples,
    load_documents,
)
from zhrag.training.tool_traces import Check

if TYPE_CHECKING:
    from zhrag.training.preference import PromptItem

#: ``--task`` values: one node's examples or both (``tools``: A3 tool-use traces, :func:`build_tool_data`).
DATA_TASKS = ("answer", "judge", "both")

T = TypeVar("T")


def build_rc_data(
    task: str,
    *,
    source: str | Path | None = None,
    kb: str | Path | None = None,
    chat: bool,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> ExampleSplits:
    """Examples of ``task`` from the reading-comprehension pairs (default: the shared file) over the KB ``kb``.

    Raises:
        TrainingDataError: unreadable pairs file; KnowledgeBaseError: unreadable KB; ConfigError: bad task/limit.
    """
    _check(task, limit)
    pairs = _sample(load_rc_pairs(source), limit, seed)
    documents = load_documents(kb)
    retriever = LexicalRetriever.from_documents(documents.values())
    with _progress(retriever, len(pairs), progress) as retrieve:
        splits = build_rc_examples(pairs, documents, retrieve, chat=chat, seed=seed)
    return select_task(splits, task)


def build_qa_data(
    task: str,
    questions: Sequence[QAItem],
    *,
    relevant: RelevanceRule,
    kb: str | Path | None = None,
    chat: bool,
    limit: int | None = None,
    seed: int = 0,
    exclude_first: int = QA_EXCLUDED_FIRST,
    progress: bool = False,
) -> ExampleSplits:
    """Examples of ``task`` from a question set with passages retrieved from the KB ``kb``.

    The first ``exclude_first`` questions are never used (they are listed as excluded); ``limit`` samples
    among the others.
    """
    _check(task, limit)
    questions = list(questions)
    kept = _sample(questions[exclude_first:], limit, seed)
    retriever = LexicalRetriever.from_documents(load_documents(kb).values())
    with _progress(retriever, len(kept), progress) as retrieve:
        splits = build_qa_examples(
            [*questions[:exclude_first], *kept], retrieve, relevant=relevant, chat=chat,
            exclude_first=exclude_first, seed=seed,
        )
    return select_task(splits, task)


def select_task(splits: ExampleSplits, task: str) -> ExampleSplits:
    """``splits`` with only the examples of ``task`` (``both``: unchanged)."""
    if task == "both":
        return splits
    return ExampleSplits(
        train=[example for example in splits.train if example["task"] == task],
        eval=[example for example in splits.eval if example["task"] == task],
        eval_groups=splits.eval_groups,
        excluded_ids=splits.excluded_ids,
        skipped=splits.skipped,
    )


def _check(task: str, limit: int | None) -> None:
    if task not in DATA_TASKS:
        raise ConfigError(f"unknown task {task!r}; use one of {[*DATA_TASKS, 'tools']}")
    _check_limit(limit)


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")


def _sample(items: Sequence[T], limit: int | None, seed: int) -> list[T]:
    """A seeded sample of ``limit`` items kept in input order (all items when ``limit`` is ``None`` or larger)."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[index] for index in sorted(random.Random(f"{seed}:sample").sample(range(len(items)), limit))]


@contextmanager
def _progress(retrieve: Retriever, total: int, enabled: bool) -> Iterator[Retriever]:
    """``retrieve`` advancing a progress bar of ``total`` calls (about one per source item) while in the block."""
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="building examples", unit="item", disable=not enabled) as bar:

        def counted(query: str, k: int) -> Sequence[Passage]:
            bar.update(1)
            return retrieve(query, k)

        yield counted


def build_tool_data(
    client: Any,
    *,
    source: str | Path | None = None,
    kb: str | Path | None = None,
    check: Check | None = None,
    threshold: float = 0.5,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[ExampleSplits, list[dict[str, Any]]]:
    """A3 tool-use traces (and the rejected ones) from the reading-comprehension pairs, searched through the
    knowledge server of ``client`` (a :class:`~zhrag.mcp.client.KnowledgeClient`); see
    :mod:`zhrag.training.tool_traces`.

    Raises:
        TrainingDataError: unreadable pairs file; KnowledgeBaseError: unreadable KB; ConfigError: bad limit.
    """
    from zhrag.nodes.agent import find_tool_spec
    from zhrag.training.tool_traces import build_tool_traces

    _check_limit(limit)
    pairs = _sample(load_rc_pairs(source), limit, seed)
    return build_tool_traces(
        pairs, load_documents(kb), client.find, find_tool_spec(client),
        check=check, threshold=threshold, seed=seed, progress=progress,
    )


def build_preference_items(
    sources: Sequence[str],
    *,
    kb: str | Path | None = None,
    chat: bool,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[list[PromptItem], dict[str, Any]]:
    """The answer prompts that ``build-data --task preference`` samples, and what was kept out.

    ``sources``: ``rc`` / ``rc:FILE`` (prompts with passages: answer examples of the reading pairs' training split)
    and question files (closed-book prompts of the questions outside every evaluation and tuning sample, see
    :func:`zhrag.training.preference.training_questions`); ``limit`` draws a seeded sample of each source.

    Raises:
        ConfigError: no source or a bad limit; DatasetError / TrainingDataError: unreadable sources.
    """
    from zhrag.training.preference import closed_book_items, passage_items, training_questions

    _check_limit(limit)
    if not sources:
        raise ConfigError("--source: name at least one source (rc, rc:FILE or a question file)")
    items: list[PromptItem] = []
    kept_out: dict[str, Any] = {}
    for source in sources:
        if source == "rc" or source.startswith("rc:"):
            rc_file = source.partition(":")[2] or None
            splits = build_rc_data("answer", source=rc_file, kb=kb, chat=chat, seed=seed)
            questions = {pair.id: pair.question for pair in load_rc_pairs(rc_file)}
            items += passage_items(_sample(splits.train, limit, seed), questions, chat=chat)
            kept_out[source] = {"held_out_passages": len(splits.eval_groups), "held_out_examples": len(splits.eval)}
        else:
            kept, excluded = training_questions(source)
            items += closed_book_items(_sample(kept, limit, seed), chat=chat)
            kept_out[source] = {"evaluation_questions_excluded": excluded}
    return items, kept_out
