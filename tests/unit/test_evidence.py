"""Evidence windows and the offline evidence reranker."""

from __future__ import annotations

import pytest

from zhrag.errors import ConfigError
from zhrag.kb.evidence import best_evidence, character_bigrams, query_bigrams, sentence_windows
from zhrag.kb.passage import Passage
from zhrag.kb.rerank import EvidenceReranker, load_reranker

TEXT = "阿瓦隆尼亚大陆是古代的微大陆。它在寒武纪早期自冈瓦那大陆分离。在奥陶纪末期，它与波罗地大陆碰撞。后来又与劳伦大陆相连。"


def test_windows_start_at_every_sentence_and_respect_the_length() -> None:
    windows = sentence_windows(TEXT, max_chars=40)
    assert windows[0].startswith("阿瓦隆尼亚大陆是")
    assert [window[:2] for window in windows] == ["阿瓦", "它在", "在奥", "后来"]
    assert all(len(window) <= 40 for window in windows)
    # consecutive sentences join while they fit
    assert sentence_windows(TEXT, max_chars=200)[0] == TEXT


def test_a_sentence_longer_than_the_window_is_kept_whole() -> None:
    long_sentence = "很" * 80 + "。"
    assert sentence_windows(long_sentence + "短句。", max_chars=50) == [long_sentence, "短句。"]
    assert sentence_windows("   ") == []


def test_bigrams_ignore_punctuation_case_and_question_words() -> None:
    assert character_bigrams("A，b c") == {"ab", "bc"}
    # 哪个 / 是 are removed before the pairs are cut
    assert query_bigrams("波罗地大陆与哪个大陆碰撞？") == character_bigrams("波罗地大陆大陆碰撞")


def test_best_evidence_picks_the_window_holding_the_question_terms() -> None:
    evidence = best_evidence("在奥陶纪末期，波罗地大陆与哪个大陆碰撞？", "阿瓦隆尼亚大陆", TEXT, max_chars=40)
    assert "在奥陶纪末期" in evidence.window
    assert "后来" not in evidence.window
    assert 0.5 < evidence.coverage <= 1.0
    unrelated = best_evidence("九命奇冤的作者是谁？", "阿瓦隆尼亚大陆", TEXT, max_chars=40)
    assert unrelated.coverage < evidence.coverage


def _passage(pid: str, title: str, text: str, score: float) -> Passage:
    return Passage(id=pid, title=title, text=text, score=score)


def test_evidence_reranker_promotes_the_passage_that_states_the_fact() -> None:
    candidates = [
        _passage("a#0", "邮票", "青天白日满地红旗出现在多枚邮票上。邮票由邮政发行。", 0.5),
        _passage("b#0", "孙中山", "干部会议决定采用陆皓东设计之青天白日旗为起义军旗。", 0.45),
    ]
    reranked = EvidenceReranker().rerank("青天白日图案最初是谁设计的？", candidates)
    assert [p["id"] for p in reranked] == ["b#0", "a#0"]
    assert reranked[0]["evidence"].startswith("干部会议")
    assert reranked[0]["score"] > reranked[1]["score"]
    # weight 0 keeps the fused order
    assert [p["id"] for p in EvidenceReranker(weight=0).rerank("青天白日图案最初是谁设计的？", candidates)] == ["a#0", "b#0"]


def test_reranker_specs() -> None:
    assert load_reranker(None) is None
    assert load_reranker("none") is None
    assert isinstance(load_reranker("evidence"), EvidenceReranker)
    with pytest.raises(ConfigError):
        EvidenceReranker(weight=-1)
