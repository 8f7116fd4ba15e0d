"""The Hermes tool-call format the engines write and parse (zhrag.models.tool_calls), and the engine-neutral
tool-calling turn on a model without a chat template (no real model)."""

from __future__ import annotations

import json

from langchain_core.language_models.fake import FakeListLLM

from zhrag.models import LocalLLM
from zhrag.models.tool_calls import (
    TURN_END,
    TURN_START,
    ToolCall,
    parse_tool_calls,
    render_tool_messages,
    tool_chat_prompt,
    tool_chat_segments,
)
from zhrag.prompts.agent import AGENT_SYSTEM, agent_messages


def test_tool_calls_are_parsed_from_the_template_format_and_recovered_from_bare_json() -> None:
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
