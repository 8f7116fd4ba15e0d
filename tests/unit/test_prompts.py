"""Prompt builders and parsers of zhrag.prompts (no model)."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from zhrag import settings
from zhrag.kb.passage import Passage
from zhrag.prompts import (
    UNKNOWN_ANSWER,
    build_answer_prompt,
    build_judge_prompt,
    build_requery_prompt,
    clean_answer,
    clean_query,
    normalize_text,
    parse_judgement,
)
from zhrag.prompts.answer import ANSWER_PASSAGE_CHARS, CLOSED_BOOK_EXAMPLES, RAG_EXAMPLES
from zhrag.prompts.judge import JUDGE_EXAMPLES
from zhrag.prompts.requery import REQUERY_EXAMPLES


def passage(pid: str, text: str, title: str = "") -> Passage:
    return Passage(id=pid, title=title, text=text, score=1.0)


PASSAGES = [passage("p1", "甲城位于乙省北部。", "甲城"), passage("p2", "全长三百公里，流经丁县。", "丙河")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("是", True),
        ("否", False),
        ("是的，资料提到了答案", True),
        ("不是", False),
        ("不是。", False),
        ("不", False),
        ("相关", True),
        ("不相关", False),
        ("无关", False),
        ("与问题无关", False),
        ("有帮助", True),
        ("没有帮助", False),
        ("这段资料没有帮助", False),
        ("这段资料有帮助", True),
        ("这是一段关于丙河的资料，与问题无关", False),
        ("资料中没有提到答案", False),
        ("该资料与问题相关", True),
        ("有", True),
        ("有答案：竹编", True),
        ("没有", False),
        ("无", False),
        ("资料中没有答案", False),
        ("能", True),
        ("不能", False),
        ("yes", True),
        ("Yes, it helps.", True),
        ("No.", False),
        ("The passage is not relevant", False),
        ("A", True),
        ("(A)", True),
        ("B. 否", False),
        ("：是", True),
        ("“否”", False),
        ("**是**", True),
        ("判断：否", False),
        ("答案：是", True),
        ("\n  否\n是", False),
        ("", None),
        ("嗯嗯", None),
        ("Absolutely", None),
    ],
)
def test_parse_judgement_reads_noisy_verdicts(text: str, expected: bool | None) -> None:
    assert parse_judgement(text) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("竹编工艺品", "竹编工艺品"),
        (" 林慕远。", "林慕远"),
        ("答案：1987年", "1987年"),
        ("答：“北京”", "北京"),
        ("答案是北京", "北京"),
        ("正确答案为：北京", "北京"),
        ("答辩委员会", "答辩委员会"),
        ("**木星**", "木星"),
        ("[1] 林慕远", "林慕远"),
        ("林慕远，他生于海宁。", "林慕远"),
        ("林慕远。他生于海宁", "林慕远"),
        ("《脾胃论》", "《脾胃论》"),
        ("魏培源（Pei-Yuan Wei）", "魏培源（Pei-Yuan Wei）"),
        ("Cs3Bi", "Cs3Bi"),
        ("3.5米", "3.5米"),
        ("\n\n答案：吴承恩\n问题：下一题", "吴承恩"),
        ("", UNKNOWN_ANSWER),
        ("。。", UNKNOWN_ANSWER),
        ("答案：", UNKNOWN_ANSWER),
    ],
)
def test_clean_answer(raw: str, expected: str) -> None:
    assert clean_answer(raw) == expected


@pytest.mark.parametrize(
    ("raw", "question", "expected"),
    [
        ("阿弥陀经的译者是东晋十六国时期后秦的", "阿弥陀经的译者是东晋十六国时期后秦的哪位高僧？", UNKNOWN_ANSWER),
        ("甲城位于哪个省", "甲城位于哪个省？", UNKNOWN_ANSWER),
        ("青溪书院", "青溪书院和白鹭书院哪一座建成更早？", "青溪书院"),
        ("乙省", "甲城位于哪个省？", "乙省"),
        ("位于哪个省份", "甲城位于哪个省份？", "位于哪个省份"),
    ],
)
def test_clean_answer_rejects_an_echo_of_the_question(raw: str, question: str, expected: str) -> None:
    assert clean_answer(raw, question) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("青溪镇 特产", "青溪镇 特产"),
        ("新查询：“青溪镇  特产”。", "青溪镇 特产"),
        ("\n查询：远山谣 首演；远山谣", "远山谣 首演"),
        ("", ""),
    ],
)
def test_clean_query(raw: str, expected: str) -> None:
    assert clean_query(raw) == expected


def test_normalize_text_ignores_case_width_space_and_punctuation() -> None:
    assert normalize_text("远山谣 首演？") == normalize_text("远山谣首演")
    assert normalize_text("ＡＢＣ，d") == "abcd"
    assert normalize_text("远山谣") != normalize_text("远山")


def test_completion_answer_prompt_numbers_passages_and_ends_open() -> None:
    prompt = build_answer_prompt("甲城在哪个省？", PASSAGES, chat=False)
    assert isinstance(prompt, str)
    last = prompt.rsplit("\n\n", 1)[1]
    assert last == "资料：\n[1] 甲城位于乙省北部。\n[2] 【丙河】全长三百公里，流经丁县。\n问题：甲城在哪个省？\n答案："
    assert prompt.count("答案：") == len(RAG_EXAMPLES) + 1


def test_completion_answer_prompt_truncates_long_passages() -> None:
    prompt = build_answer_prompt("问题？", [passage("p", "字" * 5000)], chat=False)
    assert isinstance(prompt, str)
    assert "字" * ANSWER_PASSAGE_CHARS not in prompt
    assert "字" * (ANSWER_PASSAGE_CHARS - 1) + "…" in prompt


def test_closed_book_prompt_has_no_passages() -> None:
    prompt = build_answer_prompt("甲城在哪个省？", [], chat=False)
    assert isinstance(prompt, str)
    assert "资料" not in prompt
    assert prompt.endswith("问题：甲城在哪个省？\n答案：")
    assert prompt.count("答案：") == len(CLOSED_BOOK_EXAMPLES) + 1


def test_chat_prompts_are_system_example_turns_and_the_user_message() -> None:
    prompts = [
        build_answer_prompt("甲城在哪个省？", PASSAGES, chat=True),
        build_answer_prompt("甲城在哪个省？", [], chat=True),
        build_judge_prompt("甲城在哪个省？", PASSAGES[0], chat=True),
        build_requery_prompt("甲城在哪个省？", ["甲城在哪个省？", "甲城 省份"], chat=True),
    ]
    shots = {0: 0, 1: 3, 2: 0, 3: 0}  # example question/answer turns before the question (closed-book only)
    for index, prompt in enumerate(prompts):
        assert isinstance(prompt, list) and all(isinstance(m, BaseMessage) for m in prompt)
        assert [type(m) for m in prompt] == [SystemMessage, *[HumanMessage, AIMessage] * shots[index], HumanMessage]
        assert "甲城在哪个省？" in prompt[-1].content
        assert all("甲城" not in m.content for m in prompt[:-1])
    assert "[2] 【丙河】全长三百公里，流经丁县。" in prompts[0][-1].content
    assert "资料" not in prompts[1][-1].content
    assert "甲城位于乙省北部。" in prompts[2][-1].content
    assert prompts[2][-1].content.index("资料") < prompts[2][-1].content.index("问题")  # passage before question
    assert "甲城 省份" in prompts[3][-1].content
    assert all(m.content in ("木星", "1949年", "H2O") for m in prompts[1][2:-1:2])  # common-knowledge answers


def test_judge_and_requery_completion_prompts_end_open() -> None:
    judge = build_judge_prompt("甲城在哪个省？", PASSAGES[1], chat=False)
    assert isinstance(judge, str)
    assert judge.endswith("\n\n问题：甲城在哪个省？\n资料：【丙河】全长三百公里，流经丁县。\n资料中有答案吗？")
    requery = build_requery_prompt("甲城在哪个省？", ["甲城在哪个省？", "甲城 省份"], chat=False)
    assert isinstance(requery, str)
    assert requery.endswith("问题：甲城在哪个省？\n已试查询：甲城在哪个省？；甲城 省份\n新查询：")


def test_few_shot_examples_are_not_benchmark_questions() -> None:
    dataset = settings.default_dataset()
    if not dataset.is_file():
        pytest.skip(f"Chinese-SimpleQA dev set not found at {dataset}")
    with dataset.open(encoding="utf-8") as lines:
        benchmark = {normalize_text(json.loads(line)["question"]) for line in lines if line.strip()}
    examples = (
        [q for _, q, _ in RAG_EXAMPLES]
        + [q for q, _ in CLOSED_BOOK_EXAMPLES]
        + [q for q, _, _ in JUDGE_EXAMPLES]
        + [q for q, _, _ in REQUERY_EXAMPLES]
    )
    assert benchmark and not benchmark & {normalize_text(q) for q in examples}
