"""LangChain interop on a toy embedder: QdrantVectorStore collections as knowledge bases, the MCP-backed retriever."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore
from pydantic import ValidationError
from qdrant_client import QdrantClient, models

from zhrag.errors import KnowledgeBaseError
from zhrag.kb import store as store_module
from zhrag.kb.embeddings import Embedder
from zhrag.kb.langchain_store import ZhragEmbeddings, to_passage
from zhrag.kb.retrieval import Retriever
from zhrag.kb.store import KnowledgeStore
from zhrag.mcp import retriever as retriever_module
from zhrag.mcp.client import ServerConfig
from zhrag.mcp.retriever import KnowledgeRetriever
from zhrag.mcp.server import KnowledgeService

#: The toy embedder counts these characters: a text's vector says which of them it contains.
VOCABULARY = "山河诗城"
DOCUMENTS = [
    Document(page_content="珠穆朗玛峰是世界最高的山。", metadata={"id": "everest", "title": "珠穆朗玛峰"}),
    Document(page_content="长江是中国最长的河。", metadata={"title": "长江"}),
    Document(page_content="李白是唐代诗人，被誉为诗仙。", metadata={"id": "libai", "title": "李白", "source": "wiki"}),
]


def toy_vectors(texts: list[str]) -> np.ndarray:
    return np.array([[text.count(character) + 0.01 for character in VOCABULARY] for text in texts], dtype=np.float32)


@pytest.fixture
def toy_embedder(monkeypatch: pytest.MonkeyPatch) -> Embedder:
    """A 4-d embedder the store loads by the name ``toy``."""
    embedder = Embedder(name="toy", dimension=len(VOCABULARY), _queries=toy_vectors, _documents=toy_vectors)
    monkeypatch.setattr(store_module, "load_embedder", lambda name, device=None: embedder)
    return embedder


def write_langchain_collection(path: Path, embedder: Embedder, *, vector_name: str = "") -> None:
    """What a LangChain app does: QdrantVectorStore over an embedded local-mode directory."""
    client = QdrantClient(path=str(path))
    client.create_collection(
        "lc",
        vectors_config=(
            {vector_name: models.VectorParams(size=embedder.dimension, distance=models.Distance.COSINE)}
            if vector_name
            else models.VectorParams(size=embedder.dimension, distance=models.Distance.COSINE)
        ),
    )
    QdrantVectorStore(client, "lc", ZhragEmbeddings(embedder), vector_name=vector_name).add_documents(DOCUMENTS)
    client.close()


@pytest.mark.parametrize("vector_name", ["", "dense-vector"])
def test_store_searches_a_langchain_collection(tmp_path: Path, toy_embedder: Embedder, vector_name: str) -> None:
    write_langchain_collection(tmp_path, toy_embedder, vector_name=vector_name)
    with KnowledgeStore("lc", path=tmp_path, engine="local", embedder="toy") as store:
        assert store.langchain_collection() is not None and store.count() == 3
        [mountain] = store.candidates("哪座山最高？", 1)
        assert (mountain["id"], mountain["title"], mountain["text"]) == ("everest", "珠穆朗玛峰", DOCUMENTS[0].page_content)
        river, *_ = store.candidates("最长的河", 3, mode="dense")
        assert river["title"] == "长江" and river["text"] == DOCUMENTS[1].page_content
        assert river["id"] and river["id"] not in ("everest", "libai")  # no id in its metadata: the point id
        with pytest.raises(KnowledgeBaseError, match="no BM25"):
            store.candidates("诗", 1, mode="sparse")
        poet = Retriever(store).search("诗仙是谁", 1)[0]  # reranked as qdrant-find does
        assert poet["id"] == "libai" and poet["evidence"] == DOCUMENTS[2].page_content


def test_notes_go_into_a_langchain_collection_as_langchain_writes_them(tmp_path: Path, toy_embedder: Embedder) -> None:
    write_langchain_collection(tmp_path, toy_embedder)
    with KnowledgeStore("lc", path=tmp_path, engine="local", embedder="toy") as store:
        [point_id] = KnowledgeService(store, "none").add("长城是一座城。", title="长城", metadata={"tag": "note"})
        assert store.count() == 4
        [wall] = store.candidates("城", 1)
        assert wall["title"] == "长城" and wall["id"] == point_id
    client = QdrantClient(path=str(tmp_path))
    [record] = client.retrieve("lc", [point_id], with_payload=True)
    client.close()
    assert record.payload == {"page_content": "长城是一座城。", "metadata": {"title": "长城", "tag": "note"}}


def test_a_langchain_collection_of_another_dimension_is_a_clear_error(tmp_path: Path, toy_embedder: Embedder) -> None:
    client = QdrantClient(path=str(tmp_path))
    client.create_collection("lc", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE))
    client.upsert("lc", [models.PointStruct(id=1, vector=[0.1] * 8, payload={"page_content": "山", "metadata": {}})])
    client.close()
    with (
        KnowledgeStore("lc", path=tmp_path, engine="local", embedder="toy") as store,
        pytest.raises(KnowledgeBaseError, match="8 dimensions.*--embedder"),
    ):
        store.candidates("山", 1)


def test_zhrag_collections_are_not_taken_for_langchain_ones(tmp_path: Path, toy_embedder: Embedder) -> None:
    with KnowledgeStore("kb", path=tmp_path, engine="local", embedder="toy") as store:
        store.create({"bm25": {"avgdl": 3.0, "k1": 1.2, "b": 0.75}})
        assert store.langchain_collection() is None
    with KnowledgeStore("kb", path=tmp_path, engine="local", embedder="toy") as store:  # read back, not created
        assert store.langchain_collection() is None
        assert store.candidates("山", 1) == []


def test_langchain_documents_map_to_passages() -> None:
    document = Document(page_content="正文", metadata={"chunk_id": "doc#0", "title": "标题", "_id": "point"})
    assert to_passage(document, 0.5) == {"id": "doc#0", "title": "标题", "text": "正文", "score": 0.5}
    bare = Document(page_content="正文", metadata={"_id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"})
    assert to_passage(bare, 1) == {"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "title": "", "text": "正文", "score": 1.0}


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def find(self, query: str, top_k: int = 5) -> list[dict[str, Any]]:
        self.calls.append((query, top_k))
        return [
            {"id": "cmrc2018-140#0", "title": "九命奇冤", "text": "《九命奇冤》，清吴沃尧所著。", "score": 3.0,
             "evidence": "清吴沃尧所著"},
            {"id": "other#1", "title": "其他", "text": "别的段落。", "score": 0.5},
        ][:top_k]


def test_retriever_turns_found_passages_into_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, configs = FakeClient(), []
    monkeypatch.setattr(retriever_module, "get_knowledge_client", lambda config: configs.append(config) or fake)
    config = ServerConfig(collection="kb", qdrant_path="/data/qdrant")
    retriever = KnowledgeRetriever(config=config, top_k=2)
    documents = retriever.invoke("《九命奇冤》是由哪位作者所著？")
    assert [document.page_content for document in documents] == ["《九命奇冤》，清吴沃尧所著。", "别的段落。"]
    assert documents[0].metadata == {"id": "cmrc2018-140#0", "title": "九命奇冤", "score": 3.0, "evidence": "清吴沃尧所著"}
    assert documents[0].id == "cmrc2018-140#0" and "evidence" not in documents[1].metadata
    [first] = asyncio.run(KnowledgeRetriever(config=config, top_k=1).ainvoke("九命奇冤"))
    assert first.metadata["id"] == "cmrc2018-140#0"
    assert fake.calls == [("《九命奇冤》是由哪位作者所著？", 2), ("九命奇冤", 1)] and configs == [config, config]


def test_retriever_top_k_is_checked() -> None:
    with pytest.raises(ValidationError):
        KnowledgeRetriever(top_k=0)
