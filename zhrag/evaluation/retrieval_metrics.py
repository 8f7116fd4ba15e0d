"""Does retrieval bring the gold answer? Answer recall and knowledge-base coverage of a question.

Both compare texts the way the rule grader does (``rule_grader.mentions_gold``: NFKC, Arabic numerals,
no punctuation, numbers as whole numbers). A passage is a ``Passage`` dict (its title and text are
searched) or a plain string.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from zhrag.evaluation.rule_grader import mentions_gold, normalize_answer

#: Characters of question words and the most common function words; bigrams holding one do not count as overlap.
_QUESTION_CHARS = frozenset("什么哪谁几多少吗呢的是了在有")
#: Shared character bigrams a passage needs with the question to count as being about it.
MIN_SHARED_BIGRAMS = 3

PassageLike = Mapping[str, object] | str


def passage_text(passage: PassageLike) -> str:
    """The searchable text of a passage: its title and text, or the string itself."""
    if isinstance(passage, str):
        return passage
    return f"{passage.get('title') or ''}\n{passage.get('text') or ''}"


def content_bigrams(text: str) -> set[str]:
    """Character bigrams of the normalised text, without those holding a question or function word character."""
    normalised = normalize_answer(text)
    pairs = (normalised[i : i + 2] for i in range(len(normalised) - 1))
    return {pair for pair in pairs if not _QUESTION_CHARS.intersection(pair)}


def answer_recall(gold: str, passages: Iterable[PassageLike]) -> bool:
    """Whether the gold answer appears in some passage."""
    return any(mentions_gold(gold, passage_text(passage)) for passage in passages)


def kb_covered(
    question: str, gold: str, passages: Iterable[PassageLike], *, min_shared_bigrams: int = MIN_SHARED_BIGRAMS
) -> bool:
    """Whether some passage both contains the gold answer and is about the question.

    "About the question" means sharing at least ``min_shared_bigrams`` content character bigrams with
    it, so a passage that merely contains a common answer ("1928年", "中国") does not count.
    """
    question_bigrams = content_bigrams(question)
    for passage in passages:
        text = passage_text(passage)
        if mentions_gold(gold, text) and len(question_bigrams & content_bigrams(text)) >= min_shared_bigrams:
            return True
    return False
