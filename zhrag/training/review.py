"""Human review of generated pairs or training examples: items, decisions saved as they are made, counts.

The gradio page (:mod:`zhrag.training.review_app`) is a thin layer over :class:`ReviewSession`; everything it
decides lives here and works without gradio.

Items come from a JSON-lines file of question/answer records (``id``, ``question``, ``answer``, optional
``passage``, ``status``, ``reason``; what ``zhrag generate-data`` writes) or from a ShareGPT / Alpaca examples
file (the last gpt turn is the answer, the human turn before it the question, earlier turns the context).

Decisions go to ``<file stem>.decisions.jsonl`` beside the file (or a path of your choice), one line each,
appended and fsync'd the moment they are made: ``{"id", "decision", "time"}`` plus the edited ``question`` and
``answer`` for ``edited``. The latest line of an id wins, so changing one's mind is one more line, and a
session killed at any moment loses at most the decision being written. Accept and Save both keep the text as
shown: ``accepted`` when it is unchanged, ``edited`` (with the text) when the question or answer was changed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.jsonl import append_jsonl, iter_jsonl
from zhrag.training.formats import import_examples

#: Review outcomes, as written in the decisions file.
DECISIONS = ("accepted", "rejected", "edited")
#: What the reviewer can do to an item.
ACTIONS = ("accept", "reject", "save")
DECISIONS_SUFFIX = ".decisions.jsonl"
#: Label of an item without a decision.
UNDECIDED = "undecided"


@dataclass(frozen=True)
class ReviewItem:
    """One item to review.

    Attributes:
        id: The record's id (decisions refer to it).
        kind: ``pair`` (question/answer record) or ``conversation`` (training example).
        question: The question (the last human turn of a conversation).
        answer: The answer (the last gpt turn of a conversation).
        context: The passage of a pair; the turns before the question of a conversation.
        status: The generator's verdict of a pair (``accepted`` / ``rejected``), the task of a conversation.
        reason: Why the generator rejected a pair ("" otherwise).
    """

    id: str
    kind: str
    question: str
    answer: str
    context: str
    status: str
    reason: str


def default_decisions_path(path: str | Path) -> Path:
    """Where the decisions on ``path`` are kept by default: ``<stem>.decisions.jsonl`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + DECISIONS_SUFFIX)


def load_items(path: str | Path) -> list[ReviewItem]:
    """The items of a question/answer records file or of a ShareGPT / Alpaca examples file.

    Raises:
        TrainingDataError: unreadable, empty or malformed file, unknown record layout or duplicate id.
    """
    path = Path(path)
    rows = list(iter_jsonl(path, TrainingDataError)) if path.suffix.lower() == ".jsonl" else []
    if rows and isinstance(rows[0][1], Mapping) and "question" in rows[0][1] and "answer" in rows[0][1]:
        items = [_pair_item(row, where) for where, row in rows]
    else:
        items = [_conversation_item(example) for example in import_examples(path)]
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise TrainingDataError(f"{path}: duplicate id {item.id!r}")
        seen.add(item.id)
    return items


def _pair_item(row: Any, where: str) -> ReviewItem:
    if not isinstance(row, Mapping):
        raise TrainingDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for name in ("id", "question", "answer"):
        if not isinstance(row.get(name), str):
            raise TrainingDataError(f"{where}: field {name!r} must be a string")
    return ReviewItem(
        id=row["id"],
        kind="pair",
        question=row["question"],
        answer=row["answer"],
        context=str(row.get("passage") or row.get("context") or ""),
        status=str(row.get("status") or ""),
        reason=str(row.get("reason") or ""),
    )


def _conversation_item(example: Mapping[str, Any]) -> ReviewItem:
    turns = example["conversations"]
    answer_at = max(i for i, turn in enumerate(turns) if turn["from"] == "gpt")
    question_at = max((i for i in range(answer_at) if turns[i]["from"] == "human"), default=None)
    before = turns[:question_at] if question_at is not None else turns[:answer_at]
    return ReviewItem(
        id=str(example["id"]),
        kind="conversation",
        question=turns[question_at]["value"] if question_at is not None else "",
        answer=turns[answer_at]["value"],
        context="\n\n".join(f"[{turn['from']}] {turn['value']}" for turn in before),
        status=str(example.get("task") or ""),
        reason="",
    )


def read_decisions(path: str | Path) -> dict[str, dict[str, Any]]:
    """The latest decision per item id in a decisions file (none when the file does not exist).

    A last line without its newline (a kill while writing) is ignored.

    Raises:
        TrainingDataError: a complete line that is not a decision record, named by file and line.
    """
    path = Path(path)
    if not path.exists():
        return {}
    content = path.read_bytes()
    latest: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(content[: content.rfind(b"\n") + 1].split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise TrainingDataError(f"{path}:{number}: malformed JSON line in the decisions file") from None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or record.get("decision") not in DECISIONS:
            raise TrainingDataError(f"{path}:{number}: not a decision record (id and one of {list(DECISIONS)})")
        if record["decision"] == "edited" and not all(isinstance(record.get(k), str) for k in ("question", "answer")):
            raise TrainingDataError(f"{path}:{number}: edited decision without question and answer text")
        latest[record["id"]] = record
    return latest


def make_decision(item: ReviewItem, action: str, question: str = "", answer: str = "") -> dict[str, Any]:
    """The decision record of ``action`` on ``item`` given the question and answer as shown (edits included).

    ``reject`` → ``rejected``; ``accept`` and ``save`` → ``accepted`` when the stripped text equals the item's,
    else ``edited`` with the text.

    Raises:
        ConfigError: unknown action, or accepting / saving an empty question or answer.
    """
    if action not in ACTIONS:
        raise ConfigError(f"unknown review action {action!r}; use one of {list(ACTIONS)}")
    record: dict[str, Any] = {"id": item.id, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if action == "reject":
        return {**record, "decision": "rejected"}
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        raise ConfigError("question and answer must not be empty; reject the item instead")
    if (question, answer) == (item.question.strip(), item.answer.strip()):
        return {**record, "decision": "accepted"}
    return {**record, "decision": "edited", "question": question, "answer": answer}


def append_decision(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one decision line to ``path`` and force it to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as sink:
        append_jsonl(sink, [record])


class ReviewSession:
    """The items of one file and the decisions taken on them, shared by every open page (thread-safe).

    Args:
        path: The file under review.
        decisions_path: Where decisions are appended (default :func:`default_decisions_path`).
    """

    def __init__(self, path: str | Path, decisions_path: str | Path | None = None) -> None:
        self.path = Path(path)
        self.items = load_items(self.path)
        self.decisions_path = Path(decisions_path) if decisions_path is not None else default_decisions_path(path)
        self.decisions = read_decisions(self.decisions_path)
        self._lock = threading.Lock()

    def clamp(self, index: Any) -> int:
        """``index`` as a valid item position (non-numbers read as 0)."""
        try:
            position = int(index)
        except (TypeError, ValueError):
            position = 0
        return min(max(position, 0), len(self.items) - 1)

    def decision(self, index: int) -> dict[str, Any] | None:
        """The latest decision on the item at ``index``, if any."""
        return self.decisions.get(self.items[self.clamp(index)].id)

    def shown(self, index: int) -> tuple[str, str]:
        """The question and answer of the item at ``index`` as last saved (an edit replaces the original)."""
        item = self.items[self.clamp(index)]
        decision = self.decision(index)
        if decision and decision["decision"] == "edited":
            return decision["question"], decision["answer"]
        return item.question, item.answer

    def decide(self, index: int, action: str, question: str = "", answer: str = "") -> dict[str, Any]:
        """Record ``action`` on the item at ``index`` (see :func:`make_decision`), on disk before returning."""
        item = self.items[self.clamp(index)]
        record = make_decision(item, action, question, answer)
        with self._lock:
            append_decision(self.decisions_path, record)
            self.decisions[item.id] = record
        return record

    def first_undecided(self) -> int:
        """Position of the first item without a decision (0 when every item has one)."""
        return next((i for i, item in enumerate(self.items) if item.id not in self.decisions), 0)

    def counts(self) -> dict[str, int]:
        """Items per outcome: accepted, rejected, edited, undecided, and the total."""
        counts = dict.fromkeys((*DECISIONS, UNDECIDED), 0)
        for item in self.items:
            decision = self.decisions.get(item.id)
            counts[decision["decision"] if decision else UNDECIDED] += 1
        return {**counts, "total": len(self.items)}


def apply_decisions(records: Sequence[Mapping[str, Any]], decisions: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records with the review decisions applied, each reviewed one marked with ``review`` (its decision).

    Question/answer records: an edit replaces question and answer; ``status`` becomes ``accepted`` for
    accepted or edited items (``reason`` cleared) and ``rejected`` with reason ``review`` for rejected ones;
    every record is kept. Training examples (``conversations``): an edit replaces the last human and gpt
    turns, the decision is stored as ``meta["review"]`` and rejected examples are left out.
    """
    result = []
    for record in records:
        decision = decisions.get(str(record.get("id")))
        if decision is None:
            result.append(dict(record))
            continue
        verdict = decision["decision"]
        if "conversations" in record:
            if verdict != "rejected":
                result.append(_edited_example(record, decision))
            continue
        updated = {**record, "review": verdict}
        if verdict == "edited":
            updated.update(question=decision["question"], answer=decision["answer"])
        if verdict == "rejected":
            updated.update(status="rejected", reason="review")
        else:
            updated.update(status="accepted", reason=None)
        result.append(updated)
    return result


def _edited_example(example: Mapping[str, Any], decision: Mapping[str, Any]) -> dict[str, Any]:
    turns = [dict(turn) for turn in example["conversations"]]
    if decision["decision"] == "edited":
        answer_at = max(i for i, turn in enumerate(turns) if turn["from"] == "gpt")
        turns[answer_at]["value"] = decision["answer"]
        question_at = max((i for i in range(answer_at) if turns[i]["from"] == "human"), default=None)
        if question_at is not None:
            turns[question_at]["value"] = decision["question"]
    return {**example, "conversations": turns, "meta": {**(example.get("meta") or {}), "review": decision["decision"]}}


def item_view(session: ReviewSession, index: Any) -> tuple[int, str, str, str, str, str, str]:
    """What the page shows for the item at ``index``: (index, position, counts, status, question, answer, context).

    Position, counts and status are short Markdown lines; question and answer include saved edits.
    """
    index = session.clamp(index)
    item = session.items[index]
    question, answer = session.shown(index)
    decision = session.decision(index)
    review = decision["decision"] if decision else UNDECIDED
    if item.kind == "conversation":
        origin = f"task: {item.status or '-'}"
    else:
        origin = f"generator: {item.status or '-'}" + (f" ({item.reason})" if item.reason else "")
    counts = session.counts()
    count_line = " · ".join(f"{name}: {counts[name]}" for name in (*DECISIONS, UNDECIDED))
    return (
        index,
        f"**Item {index + 1} / {len(session.items)}** · `{item.id}`",
        f"{count_line} · total: {counts['total']}",
        f"review: **{review}** · {origin}",
        question,
        answer,
        item.context,
    )
