"""Answer recall and knowledge-base coverage of retrieved passages."""

from __future__ import annotations

from zhrag.evaluation.retrieval_metrics import answer_recall, kb_covered
from zhrag.kb.passage import Passage


def passage(text: str, title: str = "") -> Passage:
    return Passage(id="d#0", title=title, text=text, score=1.0)


QUESTION = "《九命奇冤》的作者是谁？"
ON_TOPIC = passage("《九命奇冤》是清末小说家吴沃尧创作的长篇小说，共三十六回。", "九命奇冤")
OFF_TOPIC = passage("吴沃尧，字小允，广东南海人，清末谴责小说家。")


def test_answer_recall_finds_normalised_gold_in_any_passage() -> None:
    assert answer_recall("吴沃尧", [OFF_TOPIC])
    assert answer_recall("36回", [passage("无关"), ON_TOPIC])  # 三十六回 → 36回
    assert not answer_recall("李伯元", [ON_TOPIC, OFF_TOPIC])
    assert not answer_recall("吴沃尧", [])


def test_answer_recall_matches_whole_numbers_and_plain_strings() -> None:
    assert answer_recall("1928年", ["他生于一九二八年。"])
    assert not answer_recall("100", ["人口约1100人", "面积2100平方公里"])


def test_answer_recall_searches_titles() -> None:
    assert answer_recall("九命奇冤", [passage("一部清末小说。", "九命奇冤")])


def test_kb_covered_needs_gold_in_a_passage_about_the_question() -> None:
    assert kb_covered(QUESTION, "吴沃尧", [OFF_TOPIC, ON_TOPIC])
    # The gold answer is there, but the passage shares no content bigram with the question.
    assert not kb_covered(QUESTION, "吴沃尧", [OFF_TOPIC])
    # About the question, but without the answer.
    assert not kb_covered(QUESTION, "李伯元", [ON_TOPIC])
    # Question words alone ("是谁", "的作者" → only 作者) do not make a passage on topic.
    assert not kb_covered(QUESTION, "吴沃尧", [passage("这本书的作者是谁？吴沃尧。")])
    # ON_TOPIC shares exactly 九命, 命奇, 奇冤 with the question.
    assert kb_covered(QUESTION, "吴沃尧", [ON_TOPIC], min_shared_bigrams=3)
    assert not kb_covered(QUESTION, "吴沃尧", [ON_TOPIC], min_shared_bigrams=4)
