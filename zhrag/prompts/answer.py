"""Answer prompts (with numbered passages, or closed-book) and the answer cleaner.

Base models get a few-shot completion prompt ending in ``答案：`` so the next line-free completion is
the answer; chat models get a system instruction and the passages with the question in one user message
(closed-book: three common-knowledge questions as earlier user / assistant turns, then the question), through
the model's own chat template. The passage examples of the completion form are invented (fictional places and
people), so they leak no benchmark answer.

The chat form with passages has no example turns: on 90 reading-comprehension answer examples of the training
split, two invented example turns gave 44 exact / 49 contained answers against 37 / 51 without them
(Qwen2.5-Coder-1.5B), but with them the model answered the demo question 《九命奇冤》是由哪位作者所著？ with a person
from an example's passage (林慕远) although passage [1] names 吴沃尧; without them it reads 清吴沃尧.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from zhrag.kb.passage import Passage
from zhrag.prompts.common import Prompt, format_passage, normalize_text

#: Characters kept from each passage in the answer prompt (a knowledge-base chunk is at most 500, plus its title).
ANSWER_PASSAGE_CHARS = 560
#: What ``clean_answer`` returns when the model produced nothing usable.
UNKNOWN_ANSWER = "不知道"

RAG_INSTRUCTION = "根据资料回答问题。答案要简短，只写出答案本身。"
CLOSED_BOOK_INSTRUCTION = "回答下列问题。答案要简短，只写出答案本身。"

#: (passages, question, answer) few-shot examples for the passage-grounded prompt.
RAG_EXAMPLES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("青溪镇位于云岭省东部，始建于明朝万历年间，以出产竹编工艺品闻名，每年秋季举办竹编节。",),
        "青溪镇以出产什么闻名？",
        "竹编工艺品",
    ),
    (
        (
            "白鹭湖是一座人工湖，湖面面积约十二平方公里，湖心岛上建有观鸟塔。",
            "化学家林慕远生于海宁，1958年首次合成了化合物蓝晶酮，后任东岳大学校长。",
        ),
        "蓝晶酮是由哪位化学家首次合成的？",
        "林慕远",
    ),
    (
        ("《远山谣》是作曲家沈书禾创作的一部交响诗，1987年在上海首演，全曲分为四个乐章。",),
        "交响诗《远山谣》是在哪一年首演的？",
        "1987年",
    ),
)

#: (question, answer) few-shot examples for the closed-book prompt (common knowledge; no "who wrote" question,
#: whose answer a small model would copy for the many author questions of the benchmark).
CLOSED_BOOK_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("太阳系中体积最大的行星是哪一颗？", "木星"),
    ("中华人民共和国成立于哪一年？", "1949年"),
    ("水的化学式是什么？", "H2O"),
)

CHAT_RAG_SYSTEM = (
    "你是知识问答助手。阅读资料，回答问题。答案尽量使用资料中的原词，只输出答案本身（人名、地名、年份、数字或短语），"
    "不要写完整的句子，不要解释。资料中没有答案时，凭你的知识回答。"
)
CHAT_CLOSED_BOOK_SYSTEM = (
    "你是知识问答助手。请用简短的中文回答问题，只输出答案本身（人名、地名、年份、数字或短语），不要写完整的句子，不要解释。"
)


def _numbered(passages: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {text}" for i, text in enumerate(passages, start=1))


def _chat_rag_request(passages: Sequence[str], question: str) -> str:
    return f"资料：\n{_numbered(passages)}\n\n问题：{question}"


def _rag_block(passages: Sequence[str], question: str, answer: str = "") -> str:
    return f"资料：\n{_numbered(passages)}\n问题：{question}\n答案：{answer}"


def _closed_block(question: str, answer: str = "") -> str:
    return f"问题：{question}\n答案：{answer}"


def build_answer_prompt(question: str, passages: Sequence[Passage], *, chat: bool) -> Prompt:
    """Prompt asking for a short answer to ``question``.

    With ``passages`` the prompt numbers them ([1], [2], …, each cut to ``ANSWER_PASSAGE_CHARS``);
    without, it is closed-book. ``chat`` selects messages (chat models) over a few-shot completion
    text (base models).
    """
    texts = [format_passage(p, ANSWER_PASSAGE_CHARS) for p in passages]
    if chat:
        if texts:
            return [SystemMessage(CHAT_RAG_SYSTEM), HumanMessage(_chat_rag_request(texts, question))]
        shots = [message for q, a in CLOSED_BOOK_EXAMPLES for message in (HumanMessage(q), AIMessage(a))]
        return [SystemMessage(CHAT_CLOSED_BOOK_SYSTEM), *shots, HumanMessage(question)]
    if texts:
        blocks = [_rag_block(p, q, a) for p, q, a in RAG_EXAMPLES]
        return "\n\n".join([RAG_INSTRUCTION, *blocks, _rag_block(texts, question)])
    blocks = [_closed_block(q, a) for q, a in CLOSED_BOOK_EXAMPLES]
    return "\n\n".join([CLOSED_BOOK_INSTRUCTION, *blocks, _closed_block(question)])


_LABEL = re.compile(
    r"^(?:(?:最终|正确)?答案\s*(?:是|为|[:：])|(?:回答|答|answer)\s*[:：]|(?:(?:最终|正确)?答案|回答|答|answer)$)",
    re.IGNORECASE,
)
_CITATION = re.compile(r"[\[【［]\s*\d+\s*[\]】］]")
_SENTENCE_END = re.compile(r"[。！？；，!?;]|\.(?:\s|$)")
_MIN_ECHO_CHARS = 6
_EDGE_JUNK = " \t\u3000*_:：.,，、。；;！!？?\"'“”‘’「」『』`"


def clean_answer(text: str, question: str = "") -> str:
    """Reduce a raw model completion to a short answer.

    Keeps the first non-empty line, drops labels such as ``答案：``, passage citations like ``[1]``,
    markdown emphasis, everything after the first sentence break, surrounding quotes and trailing
    punctuation. Book-title marks 《》 and brackets are kept (they are part of many answers).
    Returns ``UNKNOWN_ANSWER`` ("不知道") when nothing is left, or when the answer merely echoes the
    opening of ``question`` (at least 6 characters and half of the question).
    """
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _CITATION.sub("", line.replace("**", "")).strip(_EDGE_JUNK)
    while (stripped := _LABEL.sub("", line).strip(_EDGE_JUNK)) != line:
        line = stripped
    if match := _SENTENCE_END.search(line):
        line = line[: match.start()]
    line = line.strip(_EDGE_JUNK)
    if _echoes(line, question):
        return UNKNOWN_ANSWER
    return line or UNKNOWN_ANSWER


def _echoes(answer: str, question: str) -> bool:
    """Whether ``answer`` is just the beginning of ``question`` repeated (a small model's failure mode)."""
    key, asked = normalize_text(answer), normalize_text(question)
    return len(key) >= max(_MIN_ECHO_CHARS, len(asked) / 2) and asked.startswith(key)
