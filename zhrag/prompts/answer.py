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
#: The edge junk without quotation marks, stripped before the first sentence is taken (a quotation stays whole).
_EDGE_MARKS = "".join(char for char in _EDGE_JUNK if char not in "\"'“”‘’「」『』")
#: Paired marks whose inside is never cut: a 《…》 title or a bracketed note keeps its commas and full stops.
_PAIRS = {"《": "》", "〈": "〉", "（": "）", "(": ")", "“": "”", "「": "」", "『": "』"}

#: Question words of the slot an answer fills: pronoun-like words stand for the whole answer (谁, 哪里, 哪一年),
#: determiners stand before the noun the answer names (什么工艺品, 哪个省, 多少首诗), which the answer keeps.
_QUESTION_WORD = re.compile(
    r"(?P<pronoun>(?<![称成作认视名译改叫])为什么|为何|什么时候|什么地方|谁|哪里|哪儿|哪一?年|哪一?天|哪国"
    r"|何时|何地|何处|何人|何年|怎么样?|怎样|如何)"
    r"|(?P<determiner>什么|哪一?[个位些种座家所条部本首]?|多少|几)"
)
#: What may join a restated subject to the answer: 甲城位于乙省 → 乙省 once 甲城 is cut.
_CONNECTOR = re.compile(r"^(?:就是|即是|乃是|称为|叫做|位于|是|为|乃|即|由|被|叫|在|于)")
#: An echoed opening is cut only from this many characters on (or the question's whole opening).
_MIN_ECHOED_OPENING = 3

#: Measure words and units a number keeps (数字 + 量词 / 单位), the longest alternatives first where one is
#: the start of another.
_UNITS = (
    "平方公里", "平方千米", "平方米", "立方米", "公里", "千米", "厘米", "毫米", "英里", "英尺", "公顷", "公斤", "千克",
    "美元", "港元", "欧元", "日元", "英镑", "世纪", "周年", "年代", "小时", "分钟", "个月", "万人", "亿元", "万元",
    "个", "位", "名", "人", "首", "年", "月", "日", "天", "岁", "次", "座", "条", "种", "部", "本", "件", "只",
    "头", "匹", "张", "家", "所", "间", "层", "届", "季", "场", "集", "章", "节", "卷", "篇", "项", "艘", "架",
    "辆", "枚", "颗", "株", "棵", "支", "队", "户", "米", "亩", "吨", "克", "元", "万", "亿", "度", "%", "％",
    "倍", "秒", "周", "回", "期", "号", "级", "里", "册", "幅", "代", "任", "站", "尊", "处", "栋", "批", "组",
    "对", "套", "份", "道", "则", "色", "门", "尾", "片", "声", "斤", "分", "票", "席", "页", "字", "句", "轮",
)
_UNIT = "|".join(re.escape(unit) for unit in sorted(_UNITS, key=len, reverse=True))
_BARE_NUMBER = re.compile(r"^(?:约|大约|共|共有)?(?:\d+(?:[.,，]\d+)*|[零〇一二两三四五六七八九十百千万亿]+)$")
#: The unit a question asks a count in: 多少首, else 几个, else 哪一年 (in this order: 那几年里写了多少首 asks 首).
_ASKED_UNITS = (
    re.compile(rf"多少({_UNIT})"), re.compile(rf"几({_UNIT})"), re.compile(r"(?:哪一|哪|何)(年)"),
)


def answer_context(passages: Sequence[Passage]) -> str:
    """The passage text an answer prompt shows (one line per passage), for :func:`clean_answer`'s ``context``."""
    return "\n".join(format_passage(p, ANSWER_PASSAGE_CHARS) for p in passages)


def clean_answer(text: str, question: str = "", context: str = "") -> str:
    """Reduce a raw model completion to a short answer.

    Keeps the first non-empty line, drops labels such as ``答案：``, passage citations like ``[1]``,
    markdown emphasis, everything after the first sentence break outside paired marks (a 《…》 title, a
    bracketed note or a quotation keeps its inner commas and full stops), surrounding quotes and trailing
    punctuation. Book-title marks 《》 and brackets are kept (they are part of many answers).

    With ``question``: returns ``UNKNOWN_ANSWER`` ("不知道") when the answer merely echoes the opening of
    ``question`` (at least 6 characters and half of the question); an answer that restates the question
    around the asked slot (甲城位于乙省 for 甲城位于哪个省？, 林慕远合成了蓝晶酮 for 谁合成了蓝晶酮？) is cut to
    that slot (:func:`_asked_span`); nothing is ever added but a unit.

    A bare number gets the unit it is counted in (98 → 98首): the measure word the question asks for
    (多少首, 几个, 哪一年), else the one unit that follows that number in ``context`` (the passages shown to
    the model), if there is exactly one. Returns ``UNKNOWN_ANSWER`` when nothing is left.
    """
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _CITATION.sub("", line.replace("**", "")).strip(_EDGE_MARKS)
    while (stripped := _LABEL.sub("", line).strip(_EDGE_MARKS)) != line:
        line = stripped
    line = _first_sentence(line).strip(_EDGE_JUNK)
    if _echoes(line, question):
        return UNKNOWN_ANSWER
    line = _with_unit(_asked_span(line, question), question, context)
    return line or UNKNOWN_ANSWER


def _first_sentence(line: str) -> str:
    """``line`` up to its first sentence break outside paired marks (the first break at all when a mark is
    left open, as in an answer cut by the generation budget)."""
    closing: list[str] = []
    for index, char in enumerate(line):
        if closing and char == closing[-1]:
            closing.pop()
        elif char in _PAIRS:
            closing.append(_PAIRS[char])
        elif not closing and _SENTENCE_END.match(line, index):
            return line[:index]
    if closing and (match := _SENTENCE_END.search(line)):
        return line[: match.start()]
    return line


def _echoes(answer: str, question: str) -> bool:
    """Whether ``answer`` is just the beginning of ``question`` repeated (a small model's failure mode)."""
    key, asked = normalize_text(answer), normalize_text(question)
    return len(key) >= max(_MIN_ECHO_CHARS, len(asked) / 2) and asked.startswith(key)


def _asked_span(answer: str, question: str) -> str:
    """The part of ``answer`` that fills the question's slot, when the answer restates the question around it.

    The question splits at its first question word into an opening and an ending (鲤鱼门天后庙是由 | 谁 | 兴建的).
    An answer that starts with the question's whole opening (at least two characters), with its first three or
    more characters followed by a joining word (是, 由, 位于, ...), or with at least three characters of the
    opening's end (the words just before the question word) loses them and one joining word; an answer that only
    shares a word with the opening (卢安达语 for 卢安达境内使用哪种语言) keeps it.

    After a determiner (什么, 哪个, 多少, 几) the ending's leading nouns name what is asked (什么工艺品 →
    竹编工艺品) and stay. Only a restated question (an echoed opening, or a question that opens with its question
    word: 沈书禾谱写了这首交响诗 for 谁谱写了这首交响诗？) also loses the rest of the ending where it ends with it
    (all of it, or at least three characters after an echoed opening; a trailing 的 aside): the annotated
    answers of the training pairs often keep a verb the question ends with (呈南北走向 for 呈什么走向), so an
    ending alone is never cut. Nothing is cut when nothing would be left, and the answer is never rewritten
    otherwise.
    """
    asked = question.strip().rstrip("？?。.！! \u3000")
    match = _QUESTION_WORD.search(asked)
    if not answer or not match:
        return answer
    opening, ending = asked[: match.start()], asked[match.end() :]
    span = answer
    shared = _shared_prefix(span, opening)
    # the question's opening word for word (or its first words, then a joining word): 鲤鱼门天后庙由 | 郑连昌
    echoed_opening = shared >= 2 and (
        shared == len(opening) or shared >= _MIN_ECHOED_OPENING and bool(_CONNECTOR.match(span[shared:]))
    )
    restated = _restated_tail(span, opening)
    if restated > shared and restated >= _MIN_ECHOED_OPENING:
        shared, echoed_opening = restated, True
    if echoed_opening:  # one joining word, unless the echo ended with one (明朝的名臣是 | 于谦 keeps its 于)
        span = span[shared:] if _CONNECTOR.search(span[shared - 1 : shared]) else _without_connector(span[shared:])
    if match.group("determiner"):
        ending = ending[len(_head_nouns(ending)) :]
    ending, trimmed = ending.removesuffix("的"), span.removesuffix("的")
    tail = _shared_suffix(trimmed, ending)
    whole = tail == len(ending)
    if tail and (echoed_opening and (whole or tail >= 3) or not opening and whole and tail >= 2):
        span = trimmed[: len(trimmed) - tail]
    span = span.strip(_EDGE_JUNK)
    return span if normalize_text(span) else answer


def _without_connector(text: str) -> str:
    """``text`` without the joining word it opens with, when that is a word of its own (由 of 由郑连昌兴建, not
    为 of 为人风流), by jieba's segmentation."""
    from zhrag.kb.lexical import tagged_words  # jieba loads only when an answer needs it

    match = _CONNECTOR.match(text)
    if not match:
        return text
    words = tagged_words(text)
    return text[match.end() :] if words and words[0][0] == match.group() else text


def _head_nouns(text: str) -> str:
    """The nouns ``text`` opens with (工艺品 of 工艺品闻名), by jieba's part-of-speech tags."""
    from zhrag.kb.lexical import tagged_words  # jieba loads only when a question needs it

    head = ""
    for word, flag in tagged_words(text):
        if not flag.startswith(("n", "z", "q", "m")) and flag != "vn":  # nouns (工作 too), measure words, numerals
            break
        head += word
    return head


def _restated_tail(answer: str, opening: str) -> int:
    """Length of the longest end of ``opening`` that ``answer`` starts with (《远山谣》是在 of 交响诗《远山谣》是在)."""
    return next((k for k in range(len(opening), 0, -1) if answer.startswith(opening[-k:])), 0)


def _shared_prefix(a: str, b: str) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def _shared_suffix(a: str, b: str) -> int:
    return _shared_prefix(a[::-1], b[::-1])


def _with_unit(answer: str, question: str, context: str) -> str:
    """A bare number with the unit it is counted in (see :func:`clean_answer`); any other answer unchanged."""
    if not _BARE_NUMBER.match(answer):
        return answer
    for pattern in _ASKED_UNITS:
        if asked := pattern.search(question):
            return answer if answer.endswith(asked.group(1)) else answer + asked.group(1)  # 三十万 for 几万
    number = re.escape(answer.removeprefix("大约").removeprefix("约").removeprefix("共有").removeprefix("共"))
    units = set(re.findall(rf"(?<![\d.]){number}\s*({_UNIT})", context)) if context else set()
    return answer + units.pop() if len(units) == 1 else answer
