"""Review logic without gradio (zhrag.training.review): items, decisions on disk, resuming, counts, applying."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.training.review import (
    ReviewItem,
    ReviewSession,
    apply_decisions,
    default_decisions_path,
    item_view,
    load_items,
    make_decision,
    read_decisions,
)

PAIRS = [
    {"id": "p1#0/1", "passage_id": "p1", "question": "甲城位于哪个省？", "answer": "乙省", "passage": "【甲城】甲城位于乙省北部。",
     "status": "accepted", "reason": None},
    {"id": "p2#0/1", "passage_id": "p2", "question": "丙河有多长？", "answer": "三百里", "passage": "【丙河】全长三百公里。",
     "status": "rejected", "reason": "answer_not_in_passage"},
    {"id": "p3#0/1", "passage_id": "p3", "question": "丁县的县城叫什么？", "answer": "石门镇", "passage": "【丁县】县城叫石门镇。",
     "status": "accepted", "reason": None},
]
EXAMPLE = {
    "id": "ex1",
    "task": "answer",
    "conversations": [
        {"from": "system", "value": "根据资料回答问题。"},
        {"from": "human", "value": "资料：甲城位于乙省北部。\n问题：甲城位于哪个省？"},
        {"from": "gpt", "value": "乙省"},
    ],
    "meta": {"source": "rc"},
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def load_items_from(rows: list[dict]) -> list[ReviewItem]:
    return [ReviewItem(id=r["id"], kind="pair", question=r["question"], answer=r["answer"], context="", status="",
                       reason="") for r in rows]


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "gen.jsonl", PAIRS)


def test_pair_items_carry_question_answer_passage_status_and_reason(pairs_file: Path) -> None:
    items = load_items(pairs_file)
    assert [i.id for i in items] == [p["id"] for p in PAIRS]
    assert items[1] == ReviewItem(id="p2#0/1", kind="pair", question="丙河有多长？", answer="三百里",
                                  context="【丙河】全长三百公里。", status="rejected", reason="answer_not_in_passage")


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_sharegpt_examples_are_reviewed_by_their_last_turns(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"train{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps([EXAMPLE], ensure_ascii=False), encoding="utf-8")
    else:
        write_jsonl(path, [EXAMPLE])
    [item] = load_items(path)
    assert (item.kind, item.question, item.answer, item.status) == ("conversation", EXAMPLE["conversations"][1]["value"], "乙省", "answer")
    assert item.context == "[system] 根据资料回答问题。"
    session = ReviewSession(path)
    assert item_view(session, 0)[3] == "review: **undecided** · task: answer"


def test_unusable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="no examples"):
        load_items(write_jsonl(tmp_path / "empty.jsonl", []))
    with pytest.raises(TrainingDataError, match="unknown data format"):
        load_items(write_jsonl(tmp_path / "other.jsonl", [{"id": "x", "text": "y"}]))
    with pytest.raises(TrainingDataError, match="duplicate id 'p1#0/1'"):
        load_items(write_jsonl(tmp_path / "dup.jsonl", [PAIRS[0], PAIRS[0]]))
    with pytest.raises(TrainingDataError, match=r"bad.jsonl:1: field 'answer'"):
        load_items(write_jsonl(tmp_path / "bad.jsonl", [{**PAIRS[0], "answer": 3}]))


def test_decisions_file_sits_beside_the_reviewed_file(pairs_file: Path) -> None:
    assert default_decisions_path(pairs_file) == pairs_file.with_name("gen.decisions.jsonl")


@pytest.mark.parametrize(
    ("action", "question", "answer", "decision"),
    [
        ("accept", "甲城位于哪个省？", "乙省", {"decision": "accepted"}),
        ("accept", " 甲城位于哪个省？ ", "乙省\n", {"decision": "accepted"}),
        ("save", "甲城位于哪个省？", "乙省", {"decision": "accepted"}),
        ("accept", "甲城位于哪个省？", "乙省北部", {"decision": "edited", "question": "甲城位于哪个省？", "answer": "乙省北部"}),
        ("save", "甲城在哪？", "乙省", {"decision": "edited", "question": "甲城在哪？", "answer": "乙省"}),
        ("reject", "", "", {"decision": "rejected"}),
    ],
)
def test_make_decision(action: str, question: str, answer: str, decision: dict) -> None:
    item = load_items_from(PAIRS[:1])[0]
    record = make_decision(item, action, question, answer)
    assert {k: v for k, v in record.items() if k != "time"} == {"id": item.id, **decision}


def test_bad_actions_are_refused() -> None:
    item = load_items_from(PAIRS[:1])[0]
    with pytest.raises(ConfigError, match="unknown review action"):
        make_decision(item, "approve", "q", "a")
    with pytest.raises(ConfigError, match="must not be empty"):
        make_decision(item, "save", "甲城位于哪个省？", "  ")


def test_decisions_are_on_disk_at_once_and_a_new_session_resumes(pairs_file: Path) -> None:
    session = ReviewSession(pairs_file)
    assert session.first_undecided() == 0
    assert session.counts() == {"accepted": 0, "rejected": 0, "edited": 0, "undecided": 3, "total": 3}
    session.decide(0, "accept", "甲城位于哪个省？", "乙省")
    assert len(session.decisions_path.read_text(encoding="utf-8").splitlines()) == 1
    session.decide(1, "save", "丙河有多长？", "三百公里")

    reopened = ReviewSession(pairs_file)
    assert reopened.first_undecided() == 2
    assert reopened.counts() == {"accepted": 1, "rejected": 0, "edited": 1, "undecided": 1, "total": 3}
    assert reopened.shown(1) == ("丙河有多长？", "三百公里")
    assert reopened.shown(0) == ("甲城位于哪个省？", "乙省")

    reopened.decide(1, "reject")  # the latest decision wins
    assert ReviewSession(pairs_file).counts()["rejected"] == 1
    assert ReviewSession(pairs_file).shown(1) == ("丙河有多长？", "三百里")
    assert len(read_decisions(default_decisions_path(pairs_file))) == 2


def test_every_item_decided_reopens_at_the_first(pairs_file: Path) -> None:
    session = ReviewSession(pairs_file, pairs_file.parent / "elsewhere" / "d.jsonl")
    for index in range(3):
        session.decide(index, "reject")
    assert session.decisions_path.is_file() and ReviewSession(pairs_file, session.decisions_path).first_undecided() == 0


def test_a_half_written_last_decision_is_ignored_and_damage_is_named(pairs_file: Path) -> None:
    path = default_decisions_path(pairs_file)
    path.write_text('{"id": "p1#0/1", "decision": "accepted"}\n{"id": "p2#0/1", "deci', encoding="utf-8")
    assert set(read_decisions(path)) == {"p1#0/1"}
    path.write_text('{"id": "p1#0/1", "decision": "maybe"}\n', encoding="utf-8")
    with pytest.raises(TrainingDataError, match=r"decisions.jsonl:1: not a decision record"):
        read_decisions(path)
    path.write_text('{"id": "p1#0/1", "decision": "edited"}\n', encoding="utf-8")
    with pytest.raises(TrainingDataError, match="without question and answer"):
        read_decisions(path)


def test_positions_are_clamped(pairs_file: Path) -> None:
    session = ReviewSession(pairs_file)
    assert [session.clamp(i) for i in (-1, 0, 2, 7, "x", None, 1.0)] == [0, 0, 2, 2, 0, 0, 1]


def test_item_view_shows_position_counts_status_and_saved_edits(pairs_file: Path) -> None:
    session = ReviewSession(pairs_file)
    session.decide(1, "save", "丙河有多长？", "三百公里")
    index, position, counts, status, question, answer, context = item_view(session, 1)
    assert index == 1 and "Item 2 / 3" in position and "p2#0/1" in position
    assert "accepted: 0" in counts and "edited: 1" in counts and "undecided: 2" in counts
    assert "review: **edited**" in status and "generator: rejected (answer_not_in_passage)" in status
    assert (question, answer, context) == ("丙河有多长？", "三百公里", "【丙河】全长三百公里。")


def test_apply_decisions_to_pairs_keeps_every_record() -> None:
    decisions = {
        "p1#0/1": {"id": "p1#0/1", "decision": "rejected"},
        "p2#0/1": {"id": "p2#0/1", "decision": "edited", "question": "丙河有多长？", "answer": "三百公里"},
    }
    applied = apply_decisions(PAIRS, decisions)
    assert [(r["status"], r["reason"], r.get("review")) for r in applied] == [
        ("rejected", "review", "rejected"), ("accepted", None, "edited"), ("accepted", None, None)
    ]
    assert applied[1]["answer"] == "三百公里" and PAIRS[1]["answer"] == "三百里"


def test_apply_decisions_to_examples_edits_turns_and_drops_rejected() -> None:
    other = {**EXAMPLE, "id": "ex2"}
    decisions = {
        "ex1": {"id": "ex1", "decision": "edited", "question": "甲城在哪个省？", "answer": "乙省北部"},
        "ex2": {"id": "ex2", "decision": "rejected"},
    }
    [edited] = apply_decisions([EXAMPLE, other], decisions)
    assert [t["value"] for t in edited["conversations"][1:]] == ["甲城在哪个省？", "乙省北部"]
    assert edited["meta"] == {"source": "rc", "review": "edited"}
    assert EXAMPLE["conversations"][2]["value"] == "乙省"
