"""Jieba tokenisation, stable term ids and BM25 sparse weights (no model, no Qdrant)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zhrag.kb import lexical


def test_question_keeps_content_terms_only():
    tokens = lexical.tokenize("《九命奇冤》是由哪位作者所著？")
    assert "".join(tokens) == "九命奇冤作者所著"  # 《》？ and the function words 是 由 哪位 are gone
    assert "作者" in tokens


@pytest.mark.parametrize("word", ["什么", "哪位", "哪一年", "是", "的", "了", "吗", "呢", "谁", "多少"])
def test_stop_and_question_words_are_dropped(word):
    assert word in lexical.STOP_WORDS
    assert word not in lexical.tokenize(f"长江{word}黄河")


def test_punctuation_and_whitespace_are_dropped_and_text_lower_cased():
    tokens = lexical.tokenize("  Python，PYTHON！\n\t《红楼梦》……（曹雪芹）  ")
    assert tokens == ["python", "python", "红楼梦", "曹雪芹"]


def test_empty_and_punctuation_only_text_have_no_terms():
    assert lexical.tokenize("") == []
    assert lexical.tokenize("？！……  \n") == []


def test_term_ids_are_31_bit_distinct_and_stable_across_processes():
    terms = ["九命", "奇冤", "吴沃尧", "python"]
    ids = [lexical.term_id(term) for term in terms]
    assert all(0 <= i < 2**31 for i in ids)
    assert len(set(ids)) == len(ids)
    code = f"from zhrag.kb.lexical import term_id; print([term_id(t) for t in {terms!r}])"
    for seed in ("1", "2"):  # a process-salted hash() would differ between these runs
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == str(ids)


def test_document_vector_has_bm25_term_weights():
    vector = lexical.document_vector(["长江", "长江", "黄河"], avgdl=3.0)
    weights = dict(zip(vector.indices, vector.values, strict=True))
    k1 = lexical.K1
    # dl == avgdl, so the length norm is k1 and weight = tf (k1+1) / (tf + k1)
    assert weights[lexical.term_id("长江")] == pytest.approx(2 * (k1 + 1) / (2 + k1))
    assert weights[lexical.term_id("黄河")] == pytest.approx((k1 + 1) / (1 + k1))
    assert vector.indices == sorted(vector.indices)


def test_longer_documents_get_lower_weights_for_the_same_term_frequency():
    short = lexical.document_vector(["长江", "黄河"], avgdl=4.0)
    long = lexical.document_vector(["长江", "黄河", "珠江", "淮河", "汉江", "湘江"], avgdl=4.0)
    river = lexical.term_id("长江")
    assert dict(zip(long.indices, long.values, strict=True))[river] < dict(zip(short.indices, short.values, strict=True))[river]


def test_average_length():
    assert lexical.average_length([["a", "b"], ["c", "d", "e", "f"]]) == 3.0
    assert lexical.average_length([]) == 1.0


def test_query_vector_has_unit_weight_per_distinct_term():
    vector = lexical.query_vector("长江和长江是什么？")
    assert vector.indices == [lexical.term_id("长江")]
    assert vector.values == [1.0]


def test_query_of_stop_words_only_is_empty():
    assert lexical.query_vector("是什么？").indices == []
