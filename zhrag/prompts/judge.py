"""Relevance-judge prompt (question + one passage → 是/否), the verdict's score, and a tolerant parser of verdict text.

The A2 judge scores a passage by the next-token probabilities of 是 and 否 after the prompt (one forward pass,
no text to parse): ``score = P(是) / (P(是) + P(否))``. Models that give no probabilities (a wrapped LangChain
model) write the verdict instead, read by :func:`parse_judgement` into 1.0 / 0.0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from langchain_core.messages import HumanMessage, SystemMessage

from zhrag.kb.passage import Passage
from zhrag.prompts.common import Prompt, format_passage

#: Characters kept from the judged passage.
JUDGE_PASSAGE_CHARS = 560
#: Generation budget of one verdict (enough for "不相关" or a short sentence).
JUDGE_MAX_NEW_TOKENS = 8
#: The verdict words whose next-token probabilities make the judge's score.
YES, NO = "是", "否"

JUDGE_INSTRUCTION = "阅读资料，判断资料中是否有问题的答案，只回答“是”或“否”。"
JUDGE_QUESTION = "资料中有答案吗？"

#: (question, passage, verdict) few-shot examples, invented; balanced, ending on a "否".
JUDGE_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    ("青溪镇以出产什么闻名？", "青溪镇位于云岭省东部，始建于明朝万历年间，以出产竹编工艺品闻名。", "是"),
    ("蓝晶酮是由哪位化学家首次合成的？", "白鹭湖是一座人工湖，湖面面积约十二平方公里，湖心岛上建有观鸟塔。", "否"),
    ("交响诗《远山谣》是在哪一年首演的？", "《远山谣》是作曲家沈书禾创作的一部交响诗，1987年在上海首演。", "是"),
    ("丁县的县城叫什么名字？", "沈书禾是一位作曲家，代表作有交响诗《远山谣》和歌剧《海燕》。", "否"),
)

CHAT_JUDGE_SYSTEM = "阅读资料，判断资料中是否写出了问题的答案。写出了就回答“是”，没有写出就回答“否”。只输出“是”或“否”。"
CHAT_JUDGE_QUESTION = "资料中写出了这个问题的答案吗？"


def _block(question: str, passage: str, verdict: str = "") -> str:
    return f"问题：{question}\n资料：{passage}\n{JUDGE_QUESTION}{verdict}"


def build_judge_prompt(question: str, passage: Passage, *, chat: bool) -> Prompt:
    """Prompt asking whether ``passage`` helps answer ``question`` (expected reply: 是 or 否).

    The chat form shows the passage (cut to ``JUDGE_PASSAGE_CHARS``), then the question, then asks whether the
    passage states the answer (passage first scored a higher AUC than question first on training-split judge
    examples). The completion form puts the question first, then the passage, then asks "资料中有答案吗？" after
    four invented examples.
    """
    text = format_passage(passage, JUDGE_PASSAGE_CHARS)
    if chat:
        return [
            SystemMessage(CHAT_JUDGE_SYSTEM),
            HumanMessage(f"资料：{text}\n\n问题：{question}\n\n{CHAT_JUDGE_QUESTION}"),
        ]
    shots = [_block(q, p, v) for q, p, v in JUDGE_EXAMPLES]
    return "\n\n".join([JUDGE_INSTRUCTION, *shots, _block(question, text)])


# Verdict words. Where several match at one position the longest wins ("不相关" over "不", "相关").
_NEGATIVE = (
    "不", "无", "不是", "否", "不相关", "无关", "不相干", "没有关系", "没关系", "没有帮助", "没帮助", "无帮助",
    "帮助不大", "不能", "不可以", "不行", "不包含", "没有提到", "未提到", "没有提及", "未提及", "无法", "没有",
)
_POSITIVE = ("是", "有", "对", "相关", "有关", "有帮助", "能", "可以", "包含", "提到", "提及")
# Positive words that only count as the opening word of a reply (inside a sentence they are copulas/modals).
_OPENING_ONLY = frozenset({"不", "无", "是", "有", "对", "能", "可以"})
_ENGLISH = {"yes": True, "true": True, "relevant": True, "no": False, "not": False, "false": False, "irrelevant": False}
# Phrases that echo the question instead of answering it.
_NEUTRAL = re.compile(r"是否|能否|可否|有没有|是不是|能不能|对于")
_LEADING_JUNK = re.compile(r"^[\s\W_]+")
_LABEL = re.compile(r"^(?:判断|答案|回答|答|结论|verdict|answer)\s*[:：]", re.IGNORECASE)
_OPTION_LETTER = re.compile(r"^([ab])(?![a-z])")
_WORD = re.compile(r"[a-z]+")


def _alternation(words: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(sorted(map(re.escape, words), key=len, reverse=True)))


_OPENING = _alternation(_NEGATIVE + _POSITIVE)
_NEGATIVE_IN_TEXT = _alternation(w for w in _NEGATIVE if w not in _OPENING_ONLY)
_POSITIVE_IN_TEXT = _alternation(w for w in _POSITIVE if w not in _OPENING_ONLY)


def parse_judgement(text: str) -> bool | None:
    """Read a relevance verdict from noisy model text: True (relevant), False, or None (unreadable).

    Accepts 是/否/不, 有/没有/无, 相关/不相关/无关, 有帮助/没有帮助, 能/不能, yes/no, option letters A (yes) / B (no),
    after leading punctuation, markdown and labels like ``判断：``. Only the first non-empty line is read.
    An opening verdict word decides (negations such as "不是" and "不相关" are no). Otherwise, in a
    sentence, any negative phrase ("无关", "没有提到", "not") means no and a positive one ("相关",
    "有帮助", "relevant") yes; question echoes such as "是否" are ignored.
    """
    line = next((ln for ln in text.splitlines() if ln.strip()), "").lower()
    line = _LEADING_JUNK.sub("", line)
    while (stripped := _LEADING_JUNK.sub("", _LABEL.sub("", line))) != line:
        line = stripped
    if match := _OPTION_LETTER.match(line):
        return match.group(1) == "a"
    if (word := _WORD.match(line)) and word.group() in _ENGLISH:
        return _ENGLISH[word.group()]
    line = _NEUTRAL.sub(" ", line)
    if match := _OPENING.match(line):
        return match.group() in _POSITIVE
    words = {w.group() for w in _WORD.finditer(line)}
    if _NEGATIVE_IN_TEXT.search(line) or any(_ENGLISH.get(w) is False for w in words):
        return False
    if _POSITIVE_IN_TEXT.search(line) or any(_ENGLISH.get(w) for w in words):
        return True
    return None


def yes_score(probabilities: dict[str, float]) -> float:
    """The judge's score from next-token probabilities: ``P(是) / (P(是) + P(否))``; 0.5 when neither is likely."""
    yes, no = probabilities.get(YES, 0.0), probabilities.get(NO, 0.0)
    return yes / (yes + no) if yes + no > 0 else 0.5


def verdict_score(text: str) -> float:
    """A written verdict as a score: 1.0 for yes, 0.0 for no or an unreadable reply."""
    return 1.0 if parse_judgement(text) is True else 0.0
