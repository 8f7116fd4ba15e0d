"""Question-set loading: validation with file and line numbers, and the category / ids / limit filters."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from zhrag import settings
from zhrag.errors import DatasetError, ZhragError
from zhrag.evaluation.datasets import Question, load_questions

ROWS = [
    {"id": "q1", "primary_category": "中华文化", "secondary_category": "中医", "question": "伏兔穴所属的经脉是什么？",
     "answer": "足阳明胃经", "urls": ["https://example.org/a"]},
    {"id": "q2", "primary_category": "社会", "secondary_category": "法律", "question": "问题二？", "answer": "答案二",
     "urls": []},
    {"id": "q3", "primary_category": "中华文化", "secondary_category": "历史", "question": "问题三？", "answer": "1928年"},
    {"id": "q4", "primary_category": "自然与自然科学", "question": "问题四？", "answer": "答案四"},
]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def questions_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "questions.jsonl", [json.dumps(row, ensure_ascii=False) for row in ROWS])


def test_loads_all_rows_as_questions(questions_file: Path) -> None:
    questions = load_questions(questions_file)
    assert [q.id for q in questions] == ["q1", "q2", "q3", "q4"]
    assert questions[0] == Question(
        id="q1",
        question="伏兔穴所属的经脉是什么？",
        answer="足阳明胃经",
        primary_category="中华文化",
        secondary_category="中医",
        urls=("https://example.org/a",),
    )
    assert questions[3].secondary_category == "" and questions[3].urls == ()


def test_filters_by_category_ids_and_limit(questions_file: Path, tmp_path: Path) -> None:
    assert [q.id for q in load_questions(questions_file, categories="中华文化")] == ["q1", "q3"]
    assert [q.id for q in load_questions(questions_file, categories=["社会", "自然与自然科学"])] == ["q2", "q4"]
    assert [q.id for q in load_questions(questions_file, limit=2)] == ["q1", "q2"]
    ids = write_jsonl(tmp_path / "ids.txt", ["q4", "", "# a comment", "q1"])
    assert [q.id for q in load_questions(questions_file, ids_file=ids)] == ["q4", "q1"]
    only_q3 = write_jsonl(tmp_path / "one.txt", ["q3"])
    assert [q.id for q in load_questions(questions_file, categories="中华文化", ids_file=only_q3, limit=5)] == ["q3"]


def test_unknown_category_lists_the_valid_ones(questions_file: Path) -> None:
    valid = r"\['中华文化', '社会', '自然与自然科学'\]"
    with pytest.raises(DatasetError, match=r"unknown categories \['体育'\]; valid categories: " + valid):
        load_questions(questions_file, categories=["社会", "体育"])


def test_ids_not_found_are_named(questions_file: Path, tmp_path: Path) -> None:
    ids = write_jsonl(tmp_path / "ids.txt", ["q1", "nope", "gone"])
    with pytest.raises(DatasetError, match="2 ids .* not in the selected questions: nope, gone"):
        load_questions(questions_file, ids_file=ids)
    with pytest.raises(DatasetError, match="q2"):  # q2 exists, but not in the selected category
        load_questions(questions_file, categories="中华文化", ids_file=write_jsonl(tmp_path / "b.txt", ["q2"]))
    with pytest.raises(DatasetError, match="ids file not found"):
        load_questions(questions_file, ids_file=tmp_path / "missing.txt")


def test_empty_selection_is_an_error(questions_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no questions left"):
        load_questions(questions_file, categories=[])
    with pytest.raises(DatasetError, match="limit must be >= 1"):
        load_questions(questions_file, limit=0)
    with pytest.raises(DatasetError, match="is empty"):
        load_questions(write_jsonl(tmp_path / "empty.jsonl", ["", "  "]))


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": "x", "question": "问题？"', "malformed JSON line"),
        ('{"id": "x", "answer": "答案"}', "field 'question' is missing"),
        ('{"id": "x", "question": "  ", "answer": "答案"}', "field 'question' is empty"),
        ('{"question": "问题？", "answer": "答案"}', "field 'id' is missing"),
        ('{"id": "x", "question": "问题？", "answer": ""}', "field 'answer' is empty"),
        ('{"id": "x", "question": ["问题"], "answer": "答案"}', "field 'question' is not a string"),
        ('{"id": "x", "question": "问题？", "answer": "答案", "urls": "http://a"}', "'urls' must be a list"),
        ('["not", "an", "object"]', "expected a JSON object"),
        ('{"id": "q1", "question": "问题？", "answer": "答案"}', "duplicate question id 'q1'"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    lines = [json.dumps(ROWS[0], ensure_ascii=False), "", bad_line]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DatasetError, match=message) as caught:
        load_questions(path)
    text = str(caught.value)
    assert "\n" not in text
    if "duplicate" not in message:
        assert f"{path}:3:" in text


def test_missing_file_and_hub_without_datasets(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="question file not found"):
        load_questions(tmp_path / "nope.jsonl")
    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("the optional 'datasets' package is installed; the missing-package message cannot be shown")
    with pytest.raises(ZhragError, match="needs the optional 'datasets' package"):
        load_questions("OpenStellarTeam/Chinese-SimpleQA")


def test_default_dataset_loads_the_shared_dev_split() -> None:
    if not settings.default_dataset().is_file():
        pytest.skip(f"shared dev questions not found at {settings.default_dataset()}")
    questions = load_questions()
    assert len(questions) == len({q.id for q in questions}) > 100
    assert all(q.question and q.answer and q.primary_category for q in questions)
    category = questions[0].primary_category
    selected = load_questions(categories=category, limit=5)
    assert len(selected) == 5 and {q.primary_category for q in selected} == {category}


def test_sample_is_seeded_spread_and_kept_in_file_order(tmp_path):
    rows = [
        {"id": f"q{i}", "question": f"问题{i}？", "answer": str(i), "primary_category": "甲" if i < 50 else "乙"}
        for i in range(100)
    ]
    path = tmp_path / "qs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    first = load_questions(path, sample=20, seed=1)
    assert [q.id for q in first] == [q.id for q in load_questions(path, sample=20, seed=1)]
    assert [q.id for q in first] != [q.id for q in load_questions(path, sample=20, seed=2)]
    assert len(first) == 20 and len({q.id for q in first}) == 20
    assert [int(q.id[1:]) for q in first] == sorted(int(q.id[1:]) for q in first)
    assert {q.primary_category for q in first} == {"甲", "乙"}
    assert len(load_questions(path, sample=20, seed=1, limit=5)) == 5
    with pytest.raises(DatasetError, match="sample must be >= 1"):
        load_questions(path, sample=0)


def test_an_excluded_sample_never_overlaps_the_rest(tmp_path: Path) -> None:
    from zhrag.evaluation.datasets import load_questions as load

    path = tmp_path / "q.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": f"问题{i}", "answer": "甲"}, ensure_ascii=False) + "\n" for i in range(50)),
        encoding="utf-8",
    )
    evaluation = {q.id for q in load(path, sample=20, seed=0)}
    tuning = load(path, exclude_sample=20, exclude_seed=0, sample=10, seed=1)
    assert len(evaluation) == 20 and len(tuning) == 10 and not evaluation & {q.id for q in tuning}
    assert {q.id for q in load(path, exclude_sample=20)} == {f"q{i}" for i in range(50)} - evaluation


def test_rc_source_is_the_held_out_reading_pairs(shared_kb: Path) -> None:
    from zhrag.evaluation.datasets import load_questions as load
    from zhrag.rc_pairs import HELD_OUT_FRACTION, default_rc_source, load_rc_pairs

    if not default_rc_source().is_file():
        pytest.skip(f"shared reading-comprehension pairs not found at {default_rc_source()}")
    questions = load("rc")
    pairs = {pair.id: pair for pair in load_rc_pairs()}
    paragraphs = {pair.passage_id for pair in pairs.values()}
    held = {pairs[q.id].passage_id for q in questions}
    assert abs(len(held) - HELD_OUT_FRACTION * len(paragraphs)) <= 2
    assert all(q.answer == pairs[q.id].answers[0] and q.primary_category == pairs[q.id].source for q in questions)
    usable = {pid for pid, pair in pairs.items() if pair.passage_id in held and pair.question and pair.answers}
    assert usable == {q.id for q in questions}  # all usable pairs of the held-out paragraphs, and nothing else
    training = load("rc-train")
    assert not {pairs[q.id].passage_id for q in training} & held
    usable_training = {pid for pid, pair in pairs.items() if pair.passage_id not in held and pair.question and pair.answers}
    assert usable_training == {q.id for q in training}
