"""Prompts of the A4 roles that have their own: the planner (question → one search query) and the evaluator
(question + answer [+ quoted evidence] → 是/否), with the cheap checks the evaluator runs before asking a model.

The researcher reads with the judge prompt (:mod:`zhrag.prompts.judge`) and the answerer with the answer prompt
(:mod:`zhrag.prompts.answer`). Examples are invented (fictional places, people and works), so they leak no benchmark
answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from zhrag.prompts.common import Prompt, normalize_text

#: Generation budget of the planner's search query.
PLAN_MAX_NEW_TOKENS = 24

CHAT_PLANNER_SYSTEM = (
    "你是检索规划员。为问题写一条检索词：问题里的实体名称，加上问题要问的属性，用空格隔开。"
    "不要回答问题，只输出检索词。"
)
PLANNER_INSTRUCTION = "为问题写一条检索词：实体名称加上要问的属性，用空格隔开。"
#: (question, search query) examples of the planner.
PLANNER_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("交响诗《远山谣》是在哪一年首演的？", "远山谣 首演 年份"),
    ("蓝晶酮是由哪位化学家首次合成的？", "蓝晶酮 首次合成 化学家"),
    ("青溪镇位于云岭省的哪个方位？", "青溪镇 云岭省 位置"),
)


def build_planner_prompt(question: str, *, chat: bool) -> Prompt:
    """Prompt asking for one search query (entity + asked attribute) for ``question``; the reply is one line."""
    if chat:
        shots = [message for q, s in PLANNER_EXAMPLES for message in (HumanMessage(q), AIMessage(s))]
        return [SystemMessage(CHAT_PLANNER_SYSTEM), *shots, HumanMessage(question)]
    blocks = [f"问题：{q}\n检索词：{s}" for q, s in PLANNER_EXAMPLES]
    return "\n\n".join([PLANNER_INSTRUCTION, *blocks, f"问题：{question}\n检索词："])


CHAT_EVALUATOR_SYSTEM = (
    "你是答案审核员。判断答案是否正确回答了问题；给出资料时以资料为准。"
    "答案正确就回答“是”，错误或无法确定就回答“否”。只输出“是”或“否”。"
)
EVALUATOR_INSTRUCTION = "判断答案是否正确回答了问题；给出资料时以资料为准。只回答“是”或“否”。"
EVALUATOR_QUESTION = "这个答案正确吗？"
#: (quotes, question, answer, verdict) examples of the completion form, invented; balanced.
EVALUATOR_EXAMPLES: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (("《远山谣》是作曲家沈书禾创作的一部交响诗，1987年在上海首演。",), "交响诗《远山谣》是在哪一年首演的？", "1987年", "是"),
    (("化学家林慕远生于海宁，1958年首次合成了化合物蓝晶酮。",), "蓝晶酮是由哪位化学家首次合成的？", "海宁", "否"),
    ((), "水的化学式是什么？", "H2O", "是"),
    ((), "太阳系中体积最大的行星是哪一颗？", "土星", "否"),
)


def _numbered(quotes: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {quote}" for i, quote in enumerate(quotes, start=1))


def _evaluator_request(quotes: Sequence[str], question: str, answer: str) -> str:
    head = f"资料：\n{_numbered(quotes)}\n\n" if quotes else ""
    return f"{head}问题：{question}\n答案：{answer}"


def build_evaluator_prompt(question: str, answer: str, quotes: Sequence[str], *, chat: bool) -> Prompt:
    """Prompt asking whether ``answer`` answers ``question`` correctly, given the researcher's ``quotes`` (none:
    the model's own knowledge); the expected reply is 是 or 否."""
    if chat:
        request = f"{_evaluator_request(quotes, question, answer)}\n\n{EVALUATOR_QUESTION}"
        return [SystemMessage(CHAT_EVALUATOR_SYSTEM), HumanMessage(request)]
    blocks = [f"{_evaluator_request(q, qu, a)}\n{EVALUATOR_QUESTION}{v}" for q, qu, a, v in EVALUATOR_EXAMPLES]
    request = f"{_evaluator_request(quotes, question, answer)}\n{EVALUATOR_QUESTION}"
    return "\n\n".join([EVALUATOR_INSTRUCTION, *blocks, request])


# What kind of answer a question asks for, from its question word. Only kinds a string can be checked for.
_ASKS_YEAR = re.compile(r"哪一?年|哪个年份|什么年份|年份是|何年")
_ASKS_NUMBER = re.compile(r"多少|几[个位名次种部座条本届项层只家所岁天倍米度]|多[大长高重远深宽久]")
_DIGITS = re.compile(r"[0-9０-９]|[零〇一二两三四五六七八九十百千万亿]")
_YEARS = re.compile(r"(?<![0-9])(\d{3,4})年")
_TITLES = re.compile(r"《([^》]+)》")


_ASKS_OTHER = re.compile(r"哪|谁|什么|何")


def question_constraints(question: str) -> dict[str, object]:
    """The constraints the planner reads off ``question`` and the evaluator checks: the kind of answer asked for
    (``year``, ``number`` or ``any``), and the years and 《titles》 the question names.

    A number is asked for only when no other question word is there (「带领几个同伙建立哪个国家」 asks for a name)."""
    if _ASKS_YEAR.search(question):
        kind = "year"
    elif _ASKS_NUMBER.search(question) and not _ASKS_OTHER.search(question):
        kind = "number"
    else:
        kind = "any"
    return {"kind": kind, "years": _YEARS.findall(question), "titles": _TITLES.findall(question)}


def answer_fits(kind: object, answer: str) -> bool:
    """Whether ``answer`` has the form the question asks for: a year or number question needs a numeral."""
    return kind == "any" or bool(_DIGITS.search(answer))


def stated_in(answer: str, quotes: Sequence[str]) -> bool:
    """Whether ``answer`` (compared normalised, at least one character) is written in one of ``quotes``."""
    key = normalize_text(answer)
    return bool(key) and any(key in normalize_text(quote) for quote in quotes)
