"""Prompt of the A3 agent (the model calls ``qdrant-find`` itself): its instructions, its conversation and the
passages it reads.

These are OpenAI-style messages with a ``tools`` list; the engines write tools and calls in the model's tool-call
format and parse calls back (:mod:`zhrag.models.tool_calls`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

#: The agent's instructions (Chinese, like the task).
AGENT_SYSTEM = (
    "你是知识问答助手，可以使用工具 qdrant-find 在中文维基百科知识库中检索资料。"
    "回答问题前先检索；资料里没有答案时，换一个更短或更具体的检索词再检索。"
    "找到答案后，只输出答案本身（人名、地名、年份、数字等），不要解释。"
)
#: The text ``qdrant-find`` results are shown with, per passage (evidence window, else the text start).
PASSAGE_CHARS = 300


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


def format_passages(passages: Sequence[Mapping[str, Any]]) -> str:
    """``qdrant-find`` results as the agent reads them: numbered, title and evidence (or text start)."""
    if not passages:
        return "没有找到相关资料。"
    lines = []
    for number, passage in enumerate(passages, 1):
        shown = (passage.get("evidence") or passage.get("text") or "")[:PASSAGE_CHARS]
        lines.append(f"[{number}] {passage.get('title', '')}：{shown}")
    return "\n".join(lines)
