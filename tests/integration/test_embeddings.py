"""The packaged embedders behind one interface, and the embedding cache, on real models and real Qdrant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zhrag.errors import ConfigError, KnowledgeBaseError, ModelLoadError
from zhrag.kb import indexing
from zhrag.kb.embedding_cache import EmbeddingCache, embed_documents, text_key
from zhrag.kb.embeddings import E5_EMBEDDER, USE_EMBEDDER, load_embedder
from zhrag.kb.indexing import build_dense, ensure_index, index_documents, index_sources
from zhrag.kb.retrieval import Retriever
from zhrag.kb.sources import Document
from zhrag.kb.store import KnowledgeStore

from test_store import TINY_KB

pytestmark = pytest.mark.integration

QUESTION = "《九命奇冤》是由哪位作者所著？"


@pytest.fixture
def kb_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in TINY_KB), encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "dimension"), [(E5_EMBEDDER, 384), (USE_EMBEDDER, 512)])
def test_packaged_chinese_embedders_rank_the_answering_passage_first(name, dimension):
    embedder = load_embedder(name)
    assert embedder.dimension == dimension
    passages = embedder.documents([row["text"] for row in TINY_KB])
    query = embedder.queries([QUESTION])[0]
    assert passages.shape == (len(TINY_KB), dimension) and passages.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    assert [row["id"] for row in TINY_KB][int(np.argmax(passages @ query))] == "jiuming"
    assert embedder.documents([]).shape == (0, dimension)


def test_a_dense_only_store_with_e5_finds_the_answer(tmp_path, kb_file):
    with KnowledgeStore("tiny", path=tmp_path / "qdrant", embedder=E5_EMBEDDER) as store:
        index_sources(store, [kb_file], progress=False)
        assert store.index_settings()["embedder"] == E5_EMBEDDER and store.index_settings()["dimension"] == 384
        hits = Retriever(store).search(QUESTION, 3, mode="dense", reranker="none")
        assert hits[0]["id"].startswith("jiuming")


def test_unknown_local_embedder_is_a_one_line_model_error(tmp_path):
    with pytest.raises(ModelLoadError, match="embedder directory not found"):
        load_embedder(str(tmp_path / "missing"))


def test_the_cache_embeds_each_text_once_per_embedder(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    embedder = load_embedder(E5_EMBEDDER)
    texts = [row["text"] for row in TINY_KB]
    first, embedded = embed_documents(embedder, texts + texts[:2], cache)
    assert embedded == len(texts) and cache.count(embedder) == len(texts) and cache.count() == len(texts)
    again, embedded = embed_documents(embedder, list(reversed(texts)), cache)
    assert embedded == 0
    assert np.array_equal(again, first[: len(texts)][::-1])
    assert np.allclose(first[: len(texts)], embedder.documents(texts), atol=1e-6)
    assert set(cache.get(embedder, [text_key(t) for t in texts])) == {text_key(t) for t in texts}
    other = load_embedder("all-minilm-l6-v2")
    assert cache.get(other, [text_key(texts[0])]) == {}  # keyed by embedder


def test_reindexing_into_another_collection_or_after_an_edit_embeds_only_new_chunks(tmp_path, kb_file):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    with KnowledgeStore("first", path=tmp_path / "one") as store:
        report = index_documents(store, _documents(TINY_KB), cache=cache)
        assert report.embedded == report.chunks == len(TINY_KB)
        before = [hit["id"] for hit in Retriever(store).search(QUESTION, 3)]
    edited = [dict(row) for row in TINY_KB]
    edited[0]["text"] += "它是世界文化遗产。"
    with KnowledgeStore("second", path=tmp_path / "two") as store:
        assert index_documents(store, _documents(TINY_KB), cache=cache).embedded == 0
        assert [hit["id"] for hit in Retriever(store).search(QUESTION, 3)] == before
        assert index_documents(store, _documents(edited), cache=cache).embedded == 1


def test_an_interrupted_index_resumes_without_re_embedding_finished_batches(tmp_path, kb_file, monkeypatch):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    with KnowledgeStore("tiny", path=tmp_path / "qdrant") as store:
        written = []

        def upsert_then_die(points):
            if written:
                raise KeyboardInterrupt  # killed while writing the second batch
            written.append(len(points))
            original(points)

        original = store.upsert
        with monkeypatch.context() as patched:
            patched.setattr(store, "upsert", upsert_then_die)
            with pytest.raises(KeyboardInterrupt):
                index_documents(store, _documents(TINY_KB), batch_size=3, cache=cache)
        assert cache.count() == 6  # two batches embedded, the second lost in the write
        report = index_documents(store, _documents(TINY_KB), batch_size=3, cache=cache)
        assert report.embedded == len(TINY_KB) - 6 and store.count() == len(TINY_KB)


def test_the_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("ZHRAG_EMBEDDING_CACHE", "off")
    with KnowledgeStore("tiny", path=tmp_path / "qdrant") as store:
        assert index_documents(store, _documents(TINY_KB)).embedded == len(TINY_KB)
        assert index_documents(store, _documents(TINY_KB)).embedded == len(TINY_KB)


def _documents(rows: list[dict]) -> list[Document]:
    return [Document(id=row["id"], title=row["title"], text=row["text"], source="tiny") for row in rows]


def test_a_slow_first_use_indexes_bm25_alone_until_index_dense_embeds_every_chunk(tmp_path, kb_file, monkeypatch):
    monkeypatch.setenv("ZHRAG_EMBEDDING_CACHE", str(tmp_path / "cold.sqlite"))
    monkeypatch.delenv("ZHRAG_FIRST_USE_DENSE", raising=False)
    # the tiny KB embeds in ~1.4 s at e5's measured rate: a smaller budget stands for the real KB's 19 minutes
    monkeypatch.setattr(indexing, "FIRST_USE_BUDGET_S", len(TINY_KB) / indexing.EMBEDDING_RATES[E5_EMBEDDER] / 2)
    with KnowledgeStore("tiny", path=tmp_path / "qdrant", embedder=E5_EMBEDDER) as store:
        report = ensure_index(store, kb_file, progress=False)
        assert report.embedded == 0 and store.count() == len(TINY_KB)
        assert not store.dense_ready()
        assert Retriever(store).search(QUESTION, 3, reranker="none")[0]["id"].startswith("jiuming")  # BM25 alone
        with pytest.raises(KnowledgeBaseError, match="zhrag index --dense"):
            store.candidates(QUESTION, 3, mode="dense")
        assert ensure_index(store, kb_file, progress=False) is None  # first use is done
        built = build_dense(store, progress=False)
        assert built.embedded == len(TINY_KB) and store.dense_ready()
        assert store.index_settings()["dense"] == "complete"
        assert store.candidates(QUESTION, 3, mode="dense")[0]["id"].startswith("jiuming")
        assert build_dense(store, progress=False) is None
    with KnowledgeStore("again", path=tmp_path / "qdrant", embedder=E5_EMBEDDER) as store:
        # the cache now holds every vector: the next first use embeds at once, for free
        report = ensure_index(store, kb_file, progress=False)
        assert report.embedded == 0 and store.dense_ready()
        assert store.candidates(QUESTION, 3, mode="dense")[0]["id"].startswith("jiuming")


def test_first_use_dense_can_be_refused_or_forced_and_a_bad_value_is_named(tmp_path, kb_file, monkeypatch):
    monkeypatch.setenv("ZHRAG_EMBEDDING_CACHE", str(tmp_path / "cold.sqlite"))
    monkeypatch.setenv("ZHRAG_FIRST_USE_DENSE", "never")
    with KnowledgeStore("never", path=tmp_path / "qdrant", embedder=E5_EMBEDDER) as store:
        assert ensure_index(store, kb_file, progress=False).embedded == 0 and not store.dense_ready()
    monkeypatch.setenv("ZHRAG_FIRST_USE_DENSE", "auto")
    with KnowledgeStore("quick", path=tmp_path / "qdrant", embedder=E5_EMBEDDER) as store:
        # a cold cache, but ~1.4 s of embedding at e5's measured rate: within the budget
        assert ensure_index(store, kb_file, progress=False).embedded == len(TINY_KB) and store.dense_ready()
    monkeypatch.setenv("ZHRAG_FIRST_USE_DENSE", "always")
    monkeypatch.setenv("ZHRAG_EMBEDDING_CACHE", str(tmp_path / "another_cold.sqlite"))
    monkeypatch.setattr(indexing, "FIRST_USE_BUDGET_S", 0.0)  # auto would index BM25 alone now
    with KnowledgeStore("always", path=tmp_path / "qdrant", embedder=E5_EMBEDDER) as store:
        assert ensure_index(store, kb_file, progress=False).embedded == len(TINY_KB) and store.dense_ready()
    monkeypatch.setenv("ZHRAG_FIRST_USE_DENSE", "sometimes")
    with (
        KnowledgeStore("bad", path=tmp_path / "qdrant", embedder=E5_EMBEDDER) as store,
        pytest.raises(ConfigError, match="ZHRAG_FIRST_USE_DENSE must be one of auto, always, never"),
    ):
        ensure_index(store, kb_file, progress=False)
