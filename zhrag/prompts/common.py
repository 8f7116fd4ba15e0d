"""Shared prompt types and text helpers."""

from __future__ import annotations

import re
import unicodedata

from langchain_core.messages import BaseMessage

from zhrag.kb.passage import Passage

#: A prompt is plain text for base (completion) models, or a message list for chat models (what the builders
#: return; models take any :data:`zhrag.models.base.Prompt`, which also allows other message sequences).
Prompt = str | list[BaseMessage]

_BRACKETED_TITLE = "【{title}】"


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, marking a cut with "…"."""
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def format_passage(passage: Passage, max_chars: int) -> str:
    """One passage as a single line: its title in 【】 (unless the text already opens with it), then its text.

    A passage with an evidence window (set by the reranker) shows that window instead of the whole text.
    """
    title = passage.get("title", "").strip()
    text = passage.get("evidence") or passage.get("text", "")
    if title and not text.lstrip().startswith(title):
        text = _BRACKETED_TITLE.format(title=title) + text
    return truncate(text, max_chars)


_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Comparison key of a short text: NFKC, lower-cased, without whitespace and punctuation."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text).lower())
