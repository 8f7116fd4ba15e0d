"""Loading Chinese-SimpleQA style question sets, with category, id and size filters.

A question set is a local jsonl file (the shared dev split by default) with one object per line::

    {"id": "...", "question": "...", "answer": "...", "primary_category": "...",
     "secondary_category": "...", "urls": ["..."]}

``id``, ``question`` and ``answer`` are required; the rest may be absent. Users with a Hugging Face hub
can pass a dataset id instead (``OpenStellarTeam/Chinese-SimpleQA``); that needs the optional
``datasets`` package and network access.

The source ``rc`` (or ``rc:FILE``) is the held-out reading-comprehension pairs asked as open questions:
the pairs of the 5 % of KB paragraphs held out by :func:`zhrag.rc_pairs.held_out_pairs`, whose answers the
knowledge base states by construction. Their gold answer is the pair's first answer and their category
the pair's source corpus (``cmrc2018``, ``drcd``). ``rc-train`` (or ``rc-train:FILE``) is the pairs of the other
95 % of the paragraphs, the training split, for tuning settings outside every evaluation set.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from zhrag import settings
from zhrag.errors import DatasetError
from zhrag.jsonl import iter_jsonl

T = TypeVar("T")

REQUIRED_FIELDS = ("id", "question", "answer")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = {".jsonl", ".json", ".txt"}


@dataclass(frozen=True)
class Question:
    """One benchmark question.

    Attributes:
        id: Unique question id.
        question: The Chinese question.
        answer: The gold answer.
        primary_category: Top-level category ("" when the source has none).
        secondary_category: Sub-category ("" when the source has none).
        urls: Reference pages the answer was taken from.
    """

    id: str
    question: str
    answer: str
    primary_category: str = ""
    secondary_category: str = ""
    urls: tuple[str, ...] = ()


def _text_field(row: Mapping[str, Any], name: str, where: str, *, required: bool) -> str:
    value = row.get(name)
    if value is None and not required:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        problem = "missing" if value is None else f"not a string ({type(value).__name__})"
        raise DatasetError(f"{where}: field {name!r} is {problem}")
    text = str(value).strip()
    if required and not text:
        raise DatasetError(f"{where}: field {name!r} is empty")
    return text


def _question_from_row(row: Any, where: str) -> Question:
    """Validate one row and build its ``Question``; ``where`` names file and line for errors."""
    if not isinstance(row, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    id_, question, answer = (_text_field(row, name, where, required=True) for name in REQUIRED_FIELDS)
    urls = row.get("urls") or []
    if isinstance(urls, str) or not isinstance(urls, Sequence) or not all(isinstance(url, str) for url in urls):
        raise DatasetError(f"{where}: field 'urls' must be a list of strings")
    return Question(
        id=id_,
        question=question,
        answer=answer,
        primary_category=_text_field(row, "primary_category", where, required=False),
        secondary_category=_text_field(row, "secondary_category", where, required=False),
        urls=tuple(urls),
    )


def _read_jsonl(path: Path) -> list[Question]:
    return [_question_from_row(row, where) for where, row in iter_jsonl(path, DatasetError)]


def seeded_sample(items: Sequence[T], size: int, seed: int, *, keep_order: bool = True) -> list[T]:
    """A seeded random draw of ``size`` of ``items`` (all of them when fewer), kept in their order or, with
    ``keep_order=False``, in the order drawn (so that any first part of it is itself a random sample).

    The draw depends only on ``seed`` and the number of items, never on their content or any score; ``zhrag eval
    --sample`` and ``zhrag eval-reading --sample`` both draw with it (the same items for the same seed and size).
    """
    drawn = random.Random(seed).sample(range(len(items)), min(size, len(items)))
    if not keep_order:
        return [items[index] for index in drawn]
    chosen = set(drawn)
    return [item for index, item in enumerate(items) if index in chosen]


def _sampled(questions: list[Question], size: int, seed: int) -> list[Question]:
    """A seeded random sample of ``size`` questions, kept in their order."""
    if size < 1:
        raise DatasetError(f"sample must be >= 1, got {size}")
    return seeded_sample(questions, size, seed)


def _read_rc(pairs_file: str | None, *, training: bool = False) -> list[Question]:
    """The held-out reading-comprehension pairs (of ``pairs_file``, default the shared pairs) as questions; with
    ``training``, the training-split pairs instead."""
    from zhrag.errors import TrainingDataError, ZhragError
    from zhrag.kb.sources import iter_documents
    from zhrag.rc_pairs import held_out_pairs, load_rc_pairs, training_pairs

    try:
        pairs = load_rc_pairs(pairs_file)
        paragraphs = (document.id for document in iter_documents(settings.default_kb_source()))
        held_out = (training_pairs if training else held_out_pairs)(pairs, paragraphs)
    except (TrainingDataError, ZhragError) as error:
        raise DatasetError(f"reading-comprehension questions: {error}") from None
    return [
        Question(id=pair.id, question=pair.question, answer=pair.answers[0], primary_category=pair.source)
        for pair in held_out
    ]


def _read_hub(dataset_id: str, split: str) -> list[Question]:
    try:
        import datasets  # optional dependency, only for hub datasets
    except ImportError:
        raise DatasetError(
            f"{dataset_id!r} is not a local file; loading a Hugging Face dataset needs the optional "
            "'datasets' package (pip install 'zhrag[hub]')"
        ) from None
    try:
        rows = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub/network/format failure is reported as one line
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"cannot load Hugging Face dataset {dataset_id!r} (split {split!r}): {first_line}") from None
    return [_question_from_row(row, f"{dataset_id}[{split}] row {index}") for index, row in enumerate(rows, start=1)]


def _read_ids(ids_file: str | Path) -> list[str]:
    path = Path(ids_file).expanduser()
    if not path.is_file():
        raise DatasetError(f"ids file not found: {path}")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    ids = [id_ for id_ in ids if id_ and not id_.startswith("#")]
    if not ids:
        raise DatasetError(f"ids file {path} lists no ids")
    return ids


def _check_unique(questions: Iterable[Question], source: str) -> None:
    seen: set[str] = set()
    for question in questions:
        if question.id in seen:
            raise DatasetError(f"{source}: duplicate question id {question.id!r}")
        seen.add(question.id)


def load_questions(
    source: str | Path | None = None,
    *,
    limit: int | None = None,
    categories: str | Iterable[str] | None = None,
    ids_file: str | Path | None = None,
    sample: int | None = None,
    seed: int = 0,
    exclude_sample: int | None = None,
    exclude_seed: int = 0,
    split: str = "train",
) -> list[Question]:
    """Load questions from a jsonl file or a Hugging Face dataset id, then filter them.

    Filters apply in order: the questions that ``sample=exclude_sample, seed=exclude_seed`` would select are
    removed (so a tuning set never overlaps the evaluation sample), primary ``categories``, ids listed in
    ``ids_file`` (one per line, blank lines and ``#`` comments ignored; the file's order is kept), a seeded
    random ``sample`` (kept in file order; the dev file is sorted by category, so a sample is representative
    where the first ``limit`` questions are not), then the first ``limit`` questions.

    Args:
        source: jsonl path (default ``settings.default_dataset()``) or a hub dataset id.
        limit: Keep at most this many questions (>= 1).
        sample: Draw this many questions at random (>= 1), reproducibly for a given ``seed``.
        seed: Seed of ``sample``.
        exclude_sample: Leave out the questions of the seeded sample of this size (drawn from the whole set
            with ``exclude_seed``, exactly as ``sample`` draws).
        exclude_seed: Seed of ``exclude_sample``.
        categories: One primary category or several.
        ids_file: File of question ids to keep.
        split: Split of a hub dataset.

    Raises:
        DatasetError: Missing file, malformed row (named by file and line), duplicate id, unknown
            category, ids not in the set, bad limit, or nothing left after filtering.
    """
    source = settings.default_dataset() if source is None else source
    path = Path(source).expanduser()
    if isinstance(source, str) and source.partition(":")[0] in ("rc", "rc-train") and not path.is_file():
        questions = _read_rc(source.partition(":")[2] or None, training=source.startswith("rc-train"))
    elif path.is_file():
        questions = _read_jsonl(path)
    elif isinstance(source, str) and _HUB_ID.match(source) and path.suffix not in _FILE_SUFFIXES:
        questions = _read_hub(source, split)
    else:
        raise DatasetError(f"question file not found: {path}")
    _check_unique(questions, str(source))
    if not questions:
        raise DatasetError(f"question set {source} is empty")

    if exclude_sample is not None:
        excluded = {question.id for question in _sampled(questions, exclude_sample, exclude_seed)}
        questions = [question for question in questions if question.id not in excluded]

    if categories is not None:
        wanted = {categories} if isinstance(categories, str) else set(categories)
        known = {question.primary_category for question in questions}
        unknown = sorted(wanted - known)
        if unknown:
            raise DatasetError(f"unknown categories {unknown}; valid categories: {sorted(known)}")
        questions = [question for question in questions if question.primary_category in wanted]

    if ids_file is not None:
        by_id = {question.id: question for question in questions}
        ids = _read_ids(ids_file)
        missing = [id_ for id_ in ids if id_ not in by_id]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise DatasetError(f"{len(missing)} ids from {ids_file} not in the selected questions: {shown}")
        questions = [by_id[id_] for id_ in dict.fromkeys(ids)]

    if sample is not None:
        questions = _sampled(questions, sample, seed)

    if limit is not None:
        if limit < 1:
            raise DatasetError(f"limit must be >= 1, got {limit}")
        questions = questions[:limit]

    if not questions:
        raise DatasetError(f"no questions left in {source} after filtering")
    return questions
