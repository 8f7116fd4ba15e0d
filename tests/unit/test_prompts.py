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


def test_tool_calls_are_parsed_from_the_template_format_and_recovered_from_bare_json() -> None:
    from zhrag.prompts.agent import ToolCall, parse_tool_calls

    tagged = '好的。\n<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "九命奇冤"}}\n</tool_call>'
    assert parse_tool_calls(tagged) == [ToolCall("qdrant-find", {"query": "九命奇冤"}, True)]
    unterminated = '<tool_call>\n{"name": "qdrant-find", "arguments": "{\\"query\\": \\"甲\\"}"}'
    assert parse_tool_calls(unterminated) == [ToolCall("qdrant-find", {"query": "甲"}, True)]
    block = '```json\n{\n  "name": "qdrant-find",\n  "arguments": {"query": "吴沃尧"}\n}\n```'
    assert parse_tool_calls(block) == [ToolCall("qdrant-find", {"query": "吴沃尧"}, False)]
    assert parse_tool_calls("吴沃尧") == [] and parse_tool_calls('{"answer": 1}') == []
    assert parse_tool_calls("<tool_call>\nnot json\n</tool_call>") == []  # a broken call is no call
    # A call whose object is followed by something else than the closing tag runs, recorded as not well-formed.
    misclosed = '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "理性恨"}}</tools>\n\n{"name": "x"}'
    assert parse_tool_calls(misclosed) == [ToolCall("qdrant-find", {"query": "理性恨"}, False)]
    two = tagged + '\n<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "吴沃尧"}}\n</tool_call>'
    assert [call.arguments["query"] for call in parse_tool_calls(two)] == ["九命奇冤", "吴沃尧"]


def test_tool_turns_are_rendered_in_the_hermes_format_for_plain_chat_engines() -> None:
    import json

    from zhrag.prompts.agent import AGENT_SYSTEM, agent_messages, render_tool_messages

    tool = {"type": "function", "function": {"name": "qdrant-find", "parameters": {}}}
    history = [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "qdrant-find", "arguments": '{"query": "甲"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "[1] 甲城：……"},
    ]
    rendered = render_tool_messages(agent_messages("问题？", history), [tool], required=True)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"].startswith(AGENT_SYSTEM) and json.dumps(tool, ensure_ascii=False) in rendered[0]["content"]
    assert rendered[0]["content"].endswith("这一步必须调用一个函数。")
    assert rendered[2]["content"] == '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "甲"}}\n</tool_call>'
    assert rendered[3]["content"] == "<tool_response>\n[1] 甲城：……\n</tool_response>"


def test_a_base_model_gets_the_tool_conversation_as_chatml_text_and_a_required_call_is_prefilled() -> None:
    from langchain_core.language_models.fake import FakeListLLM

    from zhrag.models.llm import LocalLLM
    from zhrag.prompts.agent import TURN_END, TURN_START, agent_messages, tool_chat_prompt, tool_chat_segments

    tool = {"type": "function", "function": {"name": "qdrant-find", "parameters": {}}}
    history = [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "qdrant-find", "arguments": {"query": "甲"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "[1] 甲城"},
    ]
    segments = tool_chat_segments(agent_messages("问题？", history), [tool])
    assert [text for text, learned in segments if learned] == [
        '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "甲"}}\n</tool_call>' + TURN_END]
    prompt = tool_chat_prompt(agent_messages("问题？", []), [tool])
    assert prompt.startswith(f"{TURN_START}system\n") and prompt.endswith(
        f"{TURN_START}user\n问题？{TURN_END}\n{TURN_START}assistant\n")

    fake = FakeListLLM(responses=['query": "九命奇冤"}}\n</tool_call>', "吴沃尧"])
    llm = LocalLLM.from_langchain(fake, is_chat=False)
    reply = llm.call_tools(agent_messages("问题？", []), [tool], tool_choice="required")
    [call] = reply.calls
    assert (call.name, call.arguments, call.well_formed) == ("qdrant-find", {"query": "九命奇冤"}, True)
    final = llm.call_tools(agent_messages("问题？", history), [tool])
    assert final.calls == () and final.content == "吴沃尧"
