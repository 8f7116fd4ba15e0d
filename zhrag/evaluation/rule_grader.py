"""Deterministic offline grading of short Chinese answers by normalised string matching.

``grade_by_rules`` needs no model, so it grades a whole run in milliseconds and gives the same result
every time; the official LLM grader (``official_grader``) is the reference when a judge is available.

Both texts are normalised the same way: Unicode NFKC (full-width letters and digits become half-width),
lower case, Chinese numerals rewritten as Arabic numerals by ``cn2an`` (一九二八年 → 1928年, 十二 → 12,
三百 → 300, 三点五 → 3.5, 百分之五十 → 50%), thousands separators dropped, then whitespace and
punctuation removed (a decimal point between digits is kept; other punctuation between two digits becomes
a boundary, so "3，5" does not read as 35). Numbers match as whole numbers: gold "100" matches "100年" but
not "1000000", "1100", "2100" or "100.5".

Grades, in this order:

1. NOT_ATTEMPTED when the answer is empty after normalisation;
2. CORRECT when a normalised gold form appears in the normalised answer; the gold forms are the whole gold
   answer and, for a gold answer written ``X（Y）``, also ``X`` and ``Y`` (the dataset puts translations
   and alternative names in brackets: "德国（德意志帝国）", "孔德 (Auguste Comte)");
3. NOT_ATTEMPTED when the answer contains a refusal ("不知道", "无法回答", "抱歉", ...);
4. INCORRECT otherwise.

Known limits (the official grader handles these, this one does not):

- synonyms, aliases, abbreviations and translations not given in the gold answer (二战 vs 第二次世界大战,
  鲁滨逊 vs 鲁滨孙), traditional vs simplified characters;
- partial names: an answer that drops a part of the gold answer (玛丽亚 for 玛丽亚·奥巴马) is INCORRECT,
  even when the dropped part is implied by the question ("撒丁岛" for "意大利撒丁岛");
- units and magnitudes: "3万" vs "三万" / "30000", "1.5公里" vs "1500米", rounding ("3518" for "3518.17");
- bracketed qualifiers are taken as alternatives ("张三（作家）" accepts "作家"), and a gold list must appear
  in the same order;
- an answer that contains the gold answer among wrong statements, or hedges around it, is CORRECT; a wrong
  answer that also apologises is NOT_ATTEMPTED;
- ``cn2an`` also rewrites numerals inside words (统一 → 统1, 五六个 → 56个); both sides are rewritten alike,
  so this rarely changes a grade.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from functools import lru_cache

import cn2an

from zhrag.evaluation.metrics import Grade

#: Phrases that mark an answer as a refusal or an admission of not knowing (matched after normalisation).
REFUSAL_MARKERS: tuple[str, ...] = (
    "不知道",
    "无法回答",
    "不能回答",
    "不清楚",
    "无法确定",
    "无法得知",
    "不得而知",
    "无从得知",
    "没有相关信息",
    "无相关信息",
    "没有提到",
    "没有提及",
    "未提及",
    "无法提供",
    "抱歉",
    "对不起",
    "idontknow",
)

_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_SEPARATOR_RUN = re.compile(r"[\W_]+")
_BRACKETED = re.compile(r"[(（]([^()（）]*)[)）]")


def _rewrite_chinese_numerals(text: str) -> str:
    """Chinese numerals in ``text`` as Arabic numerals (``cn2an`` warns about and keeps what it cannot parse)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cn2an.transform(text, "cn2an")


def _drop_separators(text: str) -> str:
    """Remove whitespace and punctuation, keeping decimal points and a boundary between two numbers."""

    def replace(match: re.Match[str]) -> str:
        start, end = match.span()
        between_digits = start > 0 and end < len(text) and text[start - 1].isdigit() and text[end].isdigit()
        if not between_digits:
            return ""
        return "." if match.group() == "." else " "

    return _SEPARATOR_RUN.sub(replace, text)


@lru_cache(maxsize=8192)
def normalize_answer(text: str) -> str:
    """Comparison form of a text: NFKC, lower case, Arabic numerals, no punctuation or spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _rewrite_chinese_numerals(text)
    text = _THOUSANDS_SEPARATOR.sub("", text)
    return _drop_separators(text)


def gold_forms(gold: str) -> list[str]:
    """The normalised forms of a gold answer that count as a match: the whole answer and, for ``X（Y）``, X and Y."""
    forms = [gold, _BRACKETED.sub("", gold), *_BRACKETED.findall(gold)]
    normalised = dict.fromkeys(normalize_answer(form) for form in forms)
    return [form for form in normalised if form] or [unicodedata.normalize("NFKC", gold).strip().lower()]


def contains_normalized(text: str, form: str) -> bool:
    """Whether the normalised ``form`` occurs in the normalised ``text``, numbers compared as whole numbers."""
    pattern = re.escape(form)
    if form[:1].isdigit():
        pattern = r"(?<![\d.])" + pattern
    if form[-1:].isdigit():
        pattern += r"(?![\d.])"
    return re.search(pattern, text) is not None


def mentions_gold(gold: str, text: str) -> bool:
    """Whether some form of the gold answer appears in ``text`` (both normalised, whole-number matching)."""
    normalised = normalize_answer(text)
    return any(contains_normalized(normalised, form) for form in gold_forms(gold))


def is_refusal(answer: str) -> bool:
    """Whether the answer declines to answer (empty, or contains a refusal phrase such as 不知道 or 抱歉)."""
    normalised = normalize_answer(answer)
    return not normalised or any(marker in normalised for marker in REFUSAL_MARKERS)


def grade_by_rules(question: str, gold: str, answer: str) -> Grade:
    """Grade ``answer`` against ``gold`` by normalised matching (see the module docstring for rules and limits).

    ``question`` is unused; it keeps the signature of the other graders.
    """
    del question
    if not normalize_answer(answer):
        return Grade.NOT_ATTEMPTED
    if mentions_gold(gold, answer):
        return Grade.CORRECT
    if is_refusal(answer):
        return Grade.NOT_ATTEMPTED
    return Grade.INCORRECT
