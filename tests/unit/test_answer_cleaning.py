"""Answer cleaning (``clean_answer``): the short answer span, no echo of the question, whole 《…》 titles and
numbers with their units. The sentences are invented, patterned on the failure modes of the reading runs."""

from __future__ import annotations

import pytest

from zhrag.kb.passage import Passage
from zhrag.prompts import UNKNOWN_ANSWER, answer_context, clean_answer


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("《长夜，未央》", "《长夜，未央》"),  # a title keeps its inner comma
        ("《长夜，未央》，是他的第一部小说", "《长夜，未央》"),  # ... and the sentence after it goes
        ("《谁在敲门？》。作者是沈书禾", "《谁在敲门？》"),  # sentence punctuation inside a title
        ("《江城子·密州出猎》", "《江城子·密州出猎》"),
        ("〈秋夜，雨〉", "〈秋夜，雨〉"),
        ("14355人（2002年，第五次普查）", "14355人（2002年，第五次普查）"),  # a bracketed note stays whole
        ("“宁静，致远”", "宁静，致远"),  # a quotation stays whole; the outer quotes go
        ("林慕远，他生于海宁。", "林慕远"),  # outside paired marks the first break still ends the answer
        ("《长夜，未央", "《长夜"),  # a title left open (cut by the budget): the first break, as before
    ],
)
def test_paired_marks_are_never_cut(raw: str, expected: str) -> None:
    assert clean_answer(raw) == expected


@pytest.mark.parametrize(
    ("raw", "question", "context", "expected"),
    [
        ("98", "他在那几年里一共写了多少首诗？", "", "98首"),  # the measure word the question asks in
        ("14", "该州下辖几个县？", "", "14个"),
        ("1753", "这座庙建于哪一年？", "", "1753年"),
        ("十二", "这条河有几座桥？", "", "十二座"),
        ("14355", "该镇的人口是多少？", "该镇人口14355人（2002年）。", "14355人"),  # the unit after it in the passages
        ("1753", "这座庙什么时候建成？", "建于清朝乾隆十八年（1753年）。", "1753年"),
        ("3.5", "这段城墙有多长？", "城墙长3.5公里，宽4米。", "3.5公里"),
        ("300", "这条河有多长？", "全长300公里，流域面积300平方公里。", "300"),  # two units: none chosen
        ("300", "这条河有多长？", "全长1300公里。", "300"),  # only whole numbers count
        ("300", "这条河有多长？", "", "300"),  # no passage, no unit asked: unchanged
        ("98首", "他一共写了多少首诗？", "", "98首"),  # a unit already there stays as it is
        ("98首诗", "他一共写了多少首诗？", "", "98首诗"),
    ],
)
def test_a_bare_number_keeps_its_unit(raw: str, question: str, context: str, expected: str) -> None:
    assert clean_answer(raw, question, context) == expected


@pytest.mark.parametrize(
    ("raw", "question", "expected"),
    [
        # the answer restates the question around the asked slot: only the slot is kept
        ("白塔寺是由商人陈远山出资兴建的", "白塔寺是由谁出资兴建的？", "商人陈远山"),
        ("白塔寺由陈远山出资兴建", "白塔寺是由谁出资兴建的？", "陈远山"),
        ("沈书禾谱写了这首交响诗", "谁谱写了这首交响诗？", "沈书禾"),
        ("甲城位于乙省", "甲城位于哪个省？", "乙省"),
        ("青溪镇以出产竹编工艺品闻名", "青溪镇以出产什么闻名？", "竹编工艺品"),
        ("《远山谣》是在1987年首演的", "交响诗《远山谣》是在哪一年首演的？", "1987年"),
        ("1987年首演", "交响诗《远山谣》是在哪一年首演的？", "1987年首演"),  # an ending alone is not cut
        ("十六路公交车是往返东站和西湖的线路", "十六路公交车是往返哪里的线路？", "东站和西湖"),
        ("明朝抗击瓦剌的名臣是于谦", "明朝抗击瓦剌的名臣是谁？", "于谦"),  # a name that opens with 于 keeps it
        ("周远为人正直且乐于助人", "周远为何受到乡邻敬重？", "为人正直且乐于助人"),  # 为 of 为人 is no joining word
        ("他在1969年迁居香港", "他在哪一年迁居香港？", "1969年"),
        # the noun after a determiner (什么, 哪个, 哪一种) names what is asked and stays
        ("猫科动物", "狮子属于哪一种动物？", "猫科动物"),
        ("狮子属于猫科动物", "狮子属于哪一种动物？", "猫科动物"),
        ("竹编工艺品闻名", "青溪镇以出产什么工艺品闻名？", "竹编工艺品闻名"),
        ("呈东西走向", "这条山脉呈什么走向？", "呈东西走向"),  # annotated answers often keep such a verb
        # what only shares a word with the question is not an echo
        ("北京大学医学部", "他毕业于北京大学的哪个学院？", "北京大学医学部"),
        ("乙省", "甲城位于哪个省？", "乙省"),
        ("位于哪个省份", "甲城位于哪个省份？", "位于哪个省份"),
        ("青溪书院", "青溪书院和白鹭书院哪一座建成更早？", "青溪书院"),
        ("陈远山", "白塔寺是由谁出资兴建的？", "陈远山"),
        # a restatement with nothing in the slot is kept (never invented), a bare echo is not an answer
        ("白塔寺是由", "白塔寺是由谁出资兴建的？", "白塔寺是由"),
        ("白塔寺是由谁出资兴建的", "白塔寺是由谁出资兴建的？", UNKNOWN_ANSWER),
    ],
)
def test_an_echo_of_the_question_is_cut_to_the_asked_span(raw: str, question: str, expected: str) -> None:
    assert clean_answer(raw, question) == expected


def test_answer_context_is_the_passage_text_the_prompt_shows() -> None:
    passages = [Passage(id="a#0", title="白鹭湖", text="湖面面积约12平方公里。", score=1.0)]
    assert answer_context(passages) == "【白鹭湖】湖面面积约12平方公里。"
    assert clean_answer("12", "白鹭湖的湖面面积是多少？", answer_context(passages)) == "12平方公里"
