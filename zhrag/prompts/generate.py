"""Prompts that make an LLM write question/answer pairs from a passage, and check one pair, with their parsers.

Generation: base models get a few-shot completion text ending in ``问题：`` (the completion continues with the
first question); chat models get a system instruction and one user message asking for ``n`` pairs in the same
``问题：…`` / ``答案：…`` line format. Check: the passage, question and answer, then "资料支持这个答案吗？",
answered 是 / 否 (read with :func:`zhrag.prompts.judge.parse_judgement`). The few-shot passages are invented
(fictional places and people), so they leak no benchmark answer.
"""

from __future__ import annotations

import re

from langchain_core.messages import HumanMessage, SystemMessage

from zhrag.prompts.answer import UNKNOWN_ANSWER, clean_answer
from zhrag.prompts.common import Prompt

#: Generation budget per requested pair (a question and a short answer).
GENERATE_TOKENS_PER_PAIR = 40
#: Generation budget of a check verdict.
CHECK_MAX_NEW_TOKENS = 4
#: Strings that end a completion-form generation: a blank line or the start of a new passage block.
GENERATE_STOP = ("\n\n", "资料：")

GENERATE_INSTRUCTION = (
    "根据资料写出问答对。问题要能单独看懂，用自己的话提问，不要照抄资料的原句；"
    "答案是资料中原样出现的一个简短短语（人名、地名、年份、数字或名称）。"
)

#: (passage, ((question, answer), ...)) few-shot examples for the completion form, invented.
GENERATE_EXAMPLES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "【青溪镇】青溪镇位于云岭省东部，始建于明朝万历年间，以出产竹编工艺品闻名，每年秋季举办竹编节。",
        (("云岭省东部哪个镇以竹编工艺品出名？", "青溪镇"), ("青溪镇最早建于哪个朝代？", "明朝"),
         ("青溪镇在什么季节举办竹编节？", "秋季")),
    ),
    (
        "【林慕远】林慕远，化学家，生于海宁。1958年他首次合成了化合物蓝晶酮，后来担任东岳大学校长。",
        (("首次合成蓝晶酮的化学家是谁？", "林慕远"), ("林慕远后来在哪所大学当校长？", "东岳大学"),
         ("蓝晶酮是哪一年第一次被合成的？", "1958年")),
    ),
    (
        "【远山谣】《远山谣》是作曲家沈书禾创作的一部交响诗，1987年在上海首演，全曲分为四个乐章。",
        (("交响诗《远山谣》由哪位作曲家创作？", "沈书禾"), ("《远山谣》首演于哪座城市？", "上海"),
         ("《远山谣》一共有几个乐章？", "四个")),
    ),
)
#: Most pairs per passage that the few-shot examples can show.
MAX_EXAMPLE_PAIRS = min(len(pairs) for _, pairs in GENERATE_EXAMPLES)

CHAT_GENERATE_SYSTEM = (
    "你根据用户给出的资料出题，用于阅读理解训练。每个问题要能单独看懂，用自己的话提问，不要照抄资料的原句；"
    "答案必须是资料中原样出现的一个简短短语（人名、地名、年份、数字或名称）。"
    "每个问答对写两行：第一行“问题：……”，第二行“答案：……”。不要写其他内容。"
)

CHECK_INSTRUCTION = "阅读资料、问题和答案，判断资料是否直接说明了这个答案，只回答“是”或“否”。"
CHECK_QUESTION = "资料支持这个答案吗？"

#: (passage, question, answer, verdict) few-shot examples of the check, invented; balanced, ending on a "否".
CHECK_EXAMPLES: tuple[tuple[str, str, str, str], ...] = (
    ("【青溪镇】青溪镇位于云岭省东部，以出产竹编工艺品闻名。", "云岭省东部哪个镇以竹编工艺品出名？", "青溪镇", "是"),
    ("【林慕远】林慕远，化学家，生于海宁，后任东岳大学校长。", "林慕远出生在哪里？", "东岳大学", "否"),
    ("【远山谣】《远山谣》是沈书禾创作的交响诗，1987年在上海首演。", "《远山谣》是哪一年首演的？", "1987年", "是"),
    ("【白鹭湖】白鹭湖是一座人工湖，湖心岛上建有观鸟塔。", "白鹭湖的面积有多大？", "观鸟塔", "否"),
)

CHAT_CHECK_SYSTEM = (
    "你负责检查阅读理解题。资料直接说明了问题的答案就是给出的答案时回答“是”，否则回答“否”。只输出“是”或“否”。"
)

_PAIR = re.compile(r"问题\s*\d*\s*[:：]\s*(?P<question>[^\n]*?)\s*\n+\s*答案\s*\d*\s*[:：]\s*(?P<answer>[^\n]*)")


def _pairs_block(passage: str, pairs: tuple[tuple[str, str], ...]) -> str:
    lines = "\n".join(f"问题：{question}\n答案：{answer}" for question, answer in pairs)
    return f"资料：{passage}\n{lines}"


def build_generate_prompt(passage: str, *, chat: bool, n_pairs: int = 1) -> Prompt:
    """Prompt asking for ``n_pairs`` question/answer pairs about ``passage`` (one line of text, title included).

    The completion form shows ``min(n_pairs, MAX_EXAMPLE_PAIRS)`` pairs per example and ends with
    ``资料：<passage>\\n问题：``; the chat form asks for ``n_pairs`` pairs in the ``问题：`` / ``答案：`` format.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    if chat:
        request = f"资料：{passage}\n\n请根据资料写出{n_pairs}个问答对。"
        return [SystemMessage(CHAT_GENERATE_SYSTEM), HumanMessage(request)]
    shown = min(n_pairs, MAX_EXAMPLE_PAIRS)
    shots = [_pairs_block(text, pairs[:shown]) for text, pairs in GENERATE_EXAMPLES]
    return "\n\n".join([GENERATE_INSTRUCTION, *shots, f"资料：{passage}\n问题："])


def parse_pairs(text: str, *, completion: bool) -> list[tuple[str, str]]:
    """The (question, answer) pairs in a generation, in order; unusable ones are left out.

    ``completion=True`` reads a completion of the few-shot form, which starts inside the first question
    (the prompt ended with ``问题：``). Each answer is reduced with :func:`clean_answer` (first sentence, no
    labels or citations); a pair with an empty question or no usable answer is dropped.
    """
    if completion:
        text = "问题：" + text
    pairs = []
    for match in _PAIR.finditer(text):
        question = match.group("question").strip().strip("*").strip()
        answer = clean_answer(match.group("answer"))
        if question and answer != UNKNOWN_ANSWER:
            pairs.append((question, answer))
    return pairs


def _check_block(passage: str, question: str, answer: str, verdict: str = "") -> str:
    return f"资料：{passage}\n问题：{question}\n答案：{answer}\n{CHECK_QUESTION}{verdict}"


def build_check_prompt(passage: str, question: str, answer: str, *, chat: bool) -> Prompt:
    """Prompt asking whether ``passage`` states ``answer`` as the answer to ``question`` (reply: 是 or 否)."""
    if chat:
        return [SystemMessage(CHAT_CHECK_SYSTEM), HumanMessage(_check_block(passage, question, answer))]
    shots = [_check_block(p, q, a, v) for p, q, a, v in CHECK_EXAMPLES]
    return "\n\n".join([CHECK_INSTRUCTION, *shots, _check_block(passage, question, answer)])
