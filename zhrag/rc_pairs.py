"""The human-written reading-comprehension pairs over the knowledge base (``<shared data>/rc/``).

Training builds answer and judge examples from them (:mod:`zhrag.training.examples`); retrieval evaluation
asks their questions with the pair's paragraph as the gold passage (:mod:`zhrag.evaluation.retrieval_sets`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhrag import settings
from zhrag.errors import TrainingDataError
from zhrag.jsonl import iter_jsonl


@dataclass(frozen=True)
class RCPair:
    """One reading-comprehension pair: a question written on the knowledge-base paragraph ``passage_id``."""

    id: str
    source: str
    question: str
    answers: tuple[str, ...]
    passage_id: str


def default_rc_source() -> Path:
    """The reading-comprehension pairs: ``<shared data>/rc/reading_comprehension.jsonl``."""
    return settings.shared_data_dir() / "rc" / "reading_comprehension.jsonl"


def load_rc_pairs(path: str | Path | None = None) -> list[RCPair]:
    """Read reading-comprehension pairs (``id``, ``question``, ``answers``, ``passage_id``, optional ``source``).

    Pairs with an empty question or no answer are kept (the builder skips and counts them).

    Raises:
        TrainingDataError: missing or unreadable file, malformed line, missing field or duplicate id,
            named by file and line.
    """
    path = Path(path).expanduser() if path is not None else default_rc_source()
    pairs: list[RCPair] = []
    seen: set[str] = set()
    for where, row in iter_jsonl(path, TrainingDataError):
        pair = _rc_pair(row, where)
        if pair.id in seen:
            raise TrainingDataError(f"{where}: duplicate id {pair.id!r}")
        seen.add(pair.id)
        pairs.append(pair)
    if not pairs:
        raise TrainingDataError(f"{path}: no reading-comprehension pairs")
    return pairs


#: Share of the paragraphs whose pairs are held out (by paragraph) for evaluation, and the seed that picks them.
HELD_OUT_FRACTION = 0.05
HELD_OUT_SEED = 0


def held_out_groups(groups: Iterable[str], fraction: float, seed: int) -> set[str]:
    """A seeded sample of ``round(fraction · n)`` of the distinct ``groups`` (at least one when fraction > 0)."""
    if not 0 <= fraction < 1:
        raise TrainingDataError(f"eval fraction must be in [0, 1), got {fraction}")
    distinct = sorted(set(groups))
    count = max(1, round(fraction * len(distinct))) if fraction > 0 and distinct else 0
    return set(random.Random(f"{seed}:holdout").sample(distinct, count))


def held_out_paragraphs(pairs: Iterable[RCPair], paragraph_ids: Iterable[str]) -> set[str]:
    """:data:`HELD_OUT_FRACTION` of the paragraphs in ``paragraph_ids`` that have pairs, chosen with
    :data:`HELD_OUT_SEED` (the split ``zhrag build-data --source rc`` makes without ``--limit``)."""
    known = set(paragraph_ids)
    return held_out_groups((p.passage_id for p in pairs if p.passage_id in known), HELD_OUT_FRACTION, HELD_OUT_SEED)


def held_out_pairs(pairs: Iterable[RCPair], paragraph_ids: Iterable[str]) -> list[RCPair]:
    """The pairs of the held-out paragraphs (:func:`held_out_paragraphs`) with a question and an answer."""
    pairs = list(pairs)
    held_out = held_out_paragraphs(pairs, paragraph_ids)
    return [p for p in pairs if p.passage_id in held_out and p.question and p.answers]


def training_pairs(pairs: Iterable[RCPair], paragraph_ids: Iterable[str]) -> list[RCPair]:
    """The pairs of the other paragraphs (the training split, for tuning), with a question and an answer."""
    pairs = list(pairs)
    held_out = held_out_paragraphs(pairs, paragraph_ids)
    return [p for p in pairs if p.passage_id not in held_out and p.question and p.answers]


def _rc_pair(row: Any, where: str) -> RCPair:
    if not isinstance(row, Mapping):
        raise TrainingDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for name in ("id", "passage_id"):
        if not isinstance(row.get(name), str) or not row[name].strip():
            raise TrainingDataError(f"{where}: field {name!r} must be a non-empty string")
    if not isinstance(row.get("question"), str):
        raise TrainingDataError(f"{where}: field 'question' must be a string")
    answers = row.get("answers")
    if not isinstance(answers, list) or not all(isinstance(answer, str) for answer in answers):
        raise TrainingDataError(f"{where}: field 'answers' must be a list of strings")
    return RCPair(
        id=row["id"].strip(),
        source=str(row.get("source") or ""),
        question=row["question"].strip(),
        answers=tuple(answer.strip() for answer in answers if answer.strip()),
        passage_id=row["passage_id"].strip(),
    )
