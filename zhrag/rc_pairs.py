"""The human-written reading-comprehension pairs over the knowledge base (``<shared data>/rc/``).

Training builds answer and judge examples from them (:mod:`zhrag.training.examples`); retrieval evaluation
asks their questions with the pair's paragraph as the gold passage (:mod:`zhrag.evaluation.retrieval_sets`).
"""

from __future__ import annotations

from collections.abc import Mapping
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
