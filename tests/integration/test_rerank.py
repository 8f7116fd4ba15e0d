"""A sentence-transformers cross-encoder reranks through the same path as a real bge / mmarco reranker.

No cross-encoder ships offline, so the test builds a tiny randomly initialised BERT classifier with the packaged
MiniLM's tokenizer: it checks the wiring (loading by path, scoring pairs, ordering, evidence windows), not quality.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zhrag.errors import ModelLoadError
from zhrag.kb.passage import Passage
from zhrag.kb.rerank import CrossEncoderReranker, load_reranker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from zhrag import settings
    from zhrag.kb.embeddings import resolve_embedder

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_embedder(settings.PACKAGED_EMBEDDER))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_cross_encoder_orders_by_its_own_scores_and_attaches_evidence(tiny_cross_encoder: Path) -> None:
    reranker = load_reranker(str(tiny_cross_encoder))
    assert isinstance(reranker, CrossEncoderReranker)
    passages = [
        Passage(id=f"d{n}#0", title=title, text=text, score=1.0 / (n + 1))
        for n, (title, text) in enumerate(
            [("甲城", "甲城位于乙省北部。甲城有一座古桥。"), ("丙河", "丙河全长三百公里。"), ("白湖", "白湖是一座人工湖。")]
        )
    ]
    reranked = reranker.rerank("甲城位于哪个省？", passages)
    assert sorted(p["id"] for p in reranked) == ["d0#0", "d1#0", "d2#0"]
    scores = [p["score"] for p in reranked]
    assert scores == sorted(scores, reverse=True)
    # the scores are the model's own predictions for (question, title + evidence window)
    expected = reranker.model.predict([("甲城位于哪个省？", f"{p['title']}\n{p['evidence']}") for p in reranked])
    assert scores == pytest.approx([float(value) for value in expected], abs=1e-5)
    assert all(p["evidence"] and p["evidence"] in p["text"] for p in reranked)


def test_missing_cross_encoder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load reranker"):
        load_reranker(str(tmp_path / "no-such-reranker"))
