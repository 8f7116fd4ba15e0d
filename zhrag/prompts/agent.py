"""Prompt of the A3 agent (the model calls ``qdrant-find`` itself) and the parser of its tool calls.

Chat models get OpenAI-style messages with a ``tools`` list; engines that format tools through the model's own
chat template (llama.cpp with jinja) receive them natively. For other engines, :func:`render_tool_messages` writes the
same conversation the way Qwen2.5's template does (Hermes style: a ``<tools>`` section in the system message,
``<tool_call>{json}</tool_call>`` in assistant turns, ``<tool_response>`` user turns), and :func:`parse_tool_calls`
reads calls back from the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The agent's instructions (Chinese, like the task).
AGENT_SYSTEM = (
    "你是知识问答助手，可以使用工具 qdrant-find 在中文维基百科知识库中检索资料。"
    "回答问题前先检索；资料里没有答案时，换一个更短或更具体的检索词再检索。"
    "找到答案后，只输出答案本身（人名、地名、年份、数字等），不要解释。"
)
#: The text ``qdrant-find`` results are shown with, per passage (evidence window, else the text start).
PASSAGE_CHARS = 300

_TOOL_CALL = re.compile(r"<tool_call>\s*")
_DECODER = json.JSONDecoder()
_CODE_BLOCK = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """One tool call of the model.

    Attributes:
        name: The tool's name.
        arguments: Its arguments (a JSON object).
        well_formed: Whether the call came in the chat template's own tool-call format (parsed by the engine or
            as ``<tool_call>{json}</tool_call>``); ``False`` for a call recovered from a bare JSON object.
        id: The call's id (echoed by its tool message).
    """

    name: str
    arguments: dict[str, Any]
    well_formed: bool
    id: str = ""


@dataclass(frozen=True)
class ToolReply:
    """A model turn that may call tools: its text and the calls it makes (none: the turn is final)."""

    content: str
    calls: tuple[ToolCall, ...] = field(default_factory=tuple)


def agent_messages(question: str, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The agent's conversation: system instructions, the question, then the turns so far (OpenAI style)."""
    return [{"role": "system", "content": AGENT_SYSTEM}, {"role": "user", "content": question}, *history]


def call_message(calls: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """The OpenAI-style assistant message of ``(id, name, arguments)`` tool calls (arguments as a JSON string), as the
    agent keeps it in its history and as a trace's reference history shows it."""
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": id, "type": "function",
             "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}
            for id, name, arguments in calls
        ],
    }


def _object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def tool_call(value: Any, well_formed: bool, id: str = "") -> ToolCall | None:
    """The call a ``{"name", "arguments"}`` object describes (arguments as an object or a JSON string), or
    ``None`` when it names no tool."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = _object(arguments) or {}
    return ToolCall(value["name"], arguments if isinstance(arguments, dict) else {}, well_formed, id)


def parse_tool_calls(text: str) -> list[ToolCall]:
    """The tool calls written in ``text``: ``<tool_call>{json}</tool_call>`` blocks (well-formed; an object followed
    by other text than the closing tag is recovered, not well-formed), else one JSON object with a ``name`` (in a code
    block or alone; recovered). No call: an empty list."""
    calls = [call for call in map(_tagged_call, _TOOL_CALL.finditer(text or "")) if call is not None]
    if calls or "<tool_call>" in (text or ""):
        return calls
    for candidate in [*_CODE_BLOCK.findall(text or ""), (text or "").strip()]:
        call = tool_call(_object(candidate), False)
        if call is not None:
            return [call]
    return []


#: Turn markers of the text chat format in which models without a chat template (base models such as
#: Gemma-3-270M) hold the agent's conversation: ChatML, as Qwen2.5's template writes it (plain text to such a model;
#: a tool-use adapter teaches it the format).
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"


def call_prefill(tools: list[dict[str, Any]], tool_choice: str) -> str:
    """What a turn is prefilled with: for ``tool_choice="required"`` with one tool, the opening of a call to it in the
    Hermes format (the model writes the arguments); otherwise nothing."""
    if tool_choice != "required" or len(tools) != 1:
        return ""
    return '<tool_call>\n{"name": ' + json.dumps(tools[0]["function"]["name"], ensure_ascii=False) + ', "arguments": {"'


def tool_chat_segments(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, required: bool = False
) -> list[tuple[str, bool]]:
    """A tool conversation as ChatML text for a model without a chat template, in segments ``(text, assistant)``:
    ``assistant`` marks each assistant turn's content and end marker (what a tool-use adapter learns)."""
    segments: list[tuple[str, bool]] = []
    for message in render_tool_messages(messages, tools, required=required):
        segments.append((f"{TURN_START}{message['role']}\n", False))
        segments.append((message["content"] + TURN_END, message["role"] == "assistant"))
        segments.append(("\n", False))
    return segments


def tool_chat_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, required: bool = False) -> str:
    """The completion prompt of the next assistant turn of a tool conversation (see :func:`tool_chat_segments`)."""
    return "".join(text for text, _ in tool_chat_segments(messages, tools, required=required)) + (
        f"{TURN_START}assistant\n"
    )


def _tagged_call(match: re.Match[str]) -> ToolCall | None:
    """The call whose JSON object follows a ``<tool_call>`` tag: well-formed when ``</tool_call>`` (or the end of
    the text: engines drop the tag's special token) follows the object, recovered when other text does."""
    try:
        value, end = _DECODER.raw_decode(match.string, match.end())
    except ValueError:
        return None
    rest = match.string[end:].lstrip()
    return tool_call(value, not rest or rest.startswith("</tool_call>"))


def render_tool_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, required: bool = False
) -> list[dict[str, str]]:
    """``messages`` with tool calls and results written as text in Qwen2.5's (Hermes) format, for engines that
    take plain chat messages; the tool list goes into the system message (``required``: a call is demanded)."""
    specs = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    tool_text = (
        "\n\n# 工具\n\n可以调用下面的函数：\n<tools>\n" + specs + "\n</tools>\n\n"
        '调用函数时输出：<tool_call>\n{"name": 函数名, "arguments": 参数对象}\n</tool_call>'
        + ("\n这一步必须调用一个函数。" if required else "")
    )
    rendered: list[dict[str, str]] = []
    for message in messages:
        role, content = message["role"], str(message.get("content") or "")
        if role == "system":
            rendered.append({"role": "system", "content": content + tool_text})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [
                "<tool_call>\n" + json.dumps({"name": call["function"]["name"],
                                              "arguments": arguments_object(call["function"]["arguments"])},
                                             ensure_ascii=False) + "\n</tool_call>"
                for call in message["tool_calls"]
            ]
            rendered.append({"role": "assistant", "content": "\n".join(filter(None, [content, *calls]))})
        elif role == "tool":
            rendered.append({"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"})
        else:
            rendered.append({"role": role, "content": content})
    return rendered


def arguments_object(value: Any) -> Any:
    """A call's arguments as an object (OpenAI messages hold them as a JSON string, chat templates as a dict)."""
    return json.loads(value) if isinstance(value, str) else value


def format_passages(passages: Sequence[Mapping[str, Any]]) -> str:
    """``qdrant-find`` results as the agent reads them: numbered, title and evidence (or text start)."""
    if not passages:
        return "没有找到相关资料。"
    lines = []
    for number, passage in enumerate(passages, 1):
        shown = (passage.get("evidence") or passage.get("text") or "")[:PASSAGE_CHARS]
        lines.append(f"[{number}] {passage.get('title', '')}：{shown}")
    return "\n".join(lines)
