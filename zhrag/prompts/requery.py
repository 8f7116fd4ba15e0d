"""Query-rewrite prompt (question + queries already tried → a new search query) and its cleaner."""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.messages import HumanMessage, SystemMessage

from zhrag.prompts.common import Prompt

#: Generation budget of one rewritten query.
REQUERY_MAX_NEW_TOKENS = 24

REQUERY_INSTRUCTION = "把问题改写成用于检索百科资料的新查询（关键词，用空格分隔），不要与已试过的查询相同。"

#: (question, tried queries, new query) few-shot examples, invented.
REQUERY_EXAMPLES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("青溪镇以出产什么闻名？", ("青溪镇以出产什么闻名？",), "青溪镇 特产 工艺品"),
    (
        "交响诗《远山谣》是在哪一年首演的？",
        ("交响诗《远山谣》是在哪一年首演的？", "远山谣 首演"),
        "远山谣 交响诗 作曲家 首演年份",
    ),
)

CHAT_REQUERY_SYSTEM = (
    "你负责改写搜索查询。之前的查询没有找到有用的资料，请根据问题写一个新的检索查询："
    "使用关键词（用空格分隔），换用同义词或相关实体，不要与已试过的查询相同。只输出新查询。"
)

_SEPARATOR = "；"


def _block(question: str, tried: Sequence[str], new_query: str = "") -> str:
    return f"问题：{question}\n已试查询：{_SEPARATOR.join(tried)}\n新查询：{new_query}"


def build_requery_prompt(question: str, tried: Sequence[str], *, chat: bool) -> Prompt:
    """Prompt asking for a new search query for ``question`` unlike any query in ``tried``."""
    if chat:
        tried_lines = "\n".join(f"- {q}" for q in tried)
        return [SystemMessage(CHAT_REQUERY_SYSTEM), HumanMessage(f"问题：{question}\n已试查询：\n{tried_lines}")]
    shots = [_block(q, t, n) for q, t, n in REQUERY_EXAMPLES]
    return "\n\n".join([REQUERY_INSTRUCTION, *shots, _block(question, tried)])


_LABEL = re.compile(r"^(?:新查询|查询|检索词|关键词|query)\s*[:：]\s*", re.IGNORECASE)
_EDGE_JUNK = " \t\u3000*_:：.,，。；;！!？?\"'“”‘’「」『』`-"


def clean_query(text: str) -> str:
    """The rewritten query from a raw completion: first non-empty line, without labels, quotes and edge punctuation."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "").strip(_EDGE_JUNK)
    while (stripped := _LABEL.sub("", line).strip(_EDGE_JUNK)) != line:
        line = stripped
    return " ".join(line.split(_SEPARATOR)[0].split())
