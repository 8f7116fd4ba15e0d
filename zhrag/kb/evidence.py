"""Evidence windows: the few sentences of a passage that best match a question.

A passage is cut into windows of consecutive sentences of at most ``EVIDENCE_CHARS`` characters (one
window starting at each sentence). A window's *coverage* is the share of the question's content character
bigrams (the question's jieba content terms, stop and question words removed, joined, then cut into
character pairs) found in the passage title plus the window. Character pairs rather than words make the
match indifferent to how jieba happens to segment an unknown name (朱一贵 → 朱/一/贵) in the question and in
the passage.

The window length (250 characters, under half the 560 characters the answer prompt gave a whole chunk
before) was chosen on the shared knowledge base's reading-comprehension pairs by a measurement that no
committed script reproduces, so no figure is quoted here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zhrag.kb import lexical
from zhrag.kb.passage import Passage

#: Longest evidence window in characters (a single longer sentence is kept whole).
EVIDENCE_CHARS = 250
_SENTENCE_BREAK = re.compile(r"(?<=[。！？；!?;\n])")
_NOT_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class Evidence:
    """The best window of a passage for a question.

    Attributes:
        window: The window text (consecutive sentences of the passage).
        coverage: Share of the question's content bigrams found in the title plus the window, 0–1.
    """

    window: str
    coverage: float


def character_bigrams(text: str) -> set[str]:
    """Lower-cased character pairs of ``text`` with punctuation and whitespace removed."""
    compact = _NOT_WORD.sub("", text.lower())
    return {compact[i : i + 2] for i in range(len(compact) - 1)}


def query_bigrams(question: str) -> set[str]:
    """Content character bigrams of a question: pairs of its joined jieba content terms."""
    return character_bigrams("".join(lexical.tokenize(question)))


def sentence_windows(text: str, max_chars: int = EVIDENCE_CHARS) -> list[str]:
    """Windows of consecutive sentences of at most ``max_chars`` characters, one starting at each sentence.

    A sentence longer than ``max_chars`` forms a window of its own; an empty text gives no window.
    """
    sentences = [sentence for sentence in _SENTENCE_BREAK.split(text.strip()) if sentence.strip()]
    windows: list[str] = []
    for first, sentence in enumerate(sentences):
        window = sentence
        for following in sentences[first + 1 :]:
            if len(window) + len(following) > max_chars:
                break
            window += following
        windows.append(window.strip())
    return windows


def best_evidence(question: str | set[str], title: str, text: str, max_chars: int = EVIDENCE_CHARS) -> Evidence:
    """The window of ``text`` whose title-plus-window covers most of the question (the earliest on ties).

    ``question`` may be given as its :func:`query_bigrams` already, to segment it once for many passages.
    """
    wanted = query_bigrams(question) if isinstance(question, str) else question
    best = Evidence(window="", coverage=-1.0)
    for window in sentence_windows(text, max_chars) or [text.strip()]:
        found = len(wanted & character_bigrams(title + window)) / len(wanted) if wanted else 0.0
        if found > best.coverage:
            best = Evidence(window=window, coverage=found)
    return best


def with_evidence(question: str | set[str], passage: Passage) -> Passage:
    """``passage`` with its best evidence window for ``question``, as the store's default reranker attaches it.

    Prompts show the window instead of the whole chunk, so training examples must carry it too, and the A3 agent
    reads the window chosen for the question rather than for its own query. ``question`` may be its
    :func:`query_bigrams`, to segment it once for several passages.
    """
    window = best_evidence(question, passage.get("title", ""), passage.get("text", "")).window
    return Passage(**{**passage, "evidence": window})
