"""LangChain interop for real: the KB subset as a LangChain retriever over the MCP server, and a collection written
by langchain-qdrant's QdrantVectorStore (with zhrag's packaged e5 embedder) searched as a zhrag knowledge base."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore

from zhrag import settings
from zhrag.kb.indexing import index_sources
from zhrag.kb.langchain_store import ZhragEmbeddings
from zhrag.kb.retrieval import Retriever
from zhrag.kb.store import KnowledgeStore
from zhrag.mcp.client import ServerConfig, get_knowledge_client
from zhrag.mcp.retriever import KnowledgeRetriever

pytestmark = [pytest.mark.integration]

QUESTION = "《九命奇冤》是由哪位作者所著？"
COLLECTION = "langchain_test_kb"
LANGCHAIN_COLLECTION = "langchain_app_docs"
PASSAGES = [
    ("changjiang", "长江", "长江是中国第一长河，全长约6300公里，发源于青藏高原的唐古拉山脉，最终注入东海。"),
    ("everest", "珠穆朗玛峰", "珠穆朗玛峰是世界海拔最高的山峰，海拔8848.86米，位于中国与尼泊尔的边境线上。"),
    ("luxun", "鲁迅", "鲁迅，原名周樟寿，后改名周树人，浙江绍兴人，代表作有《狂人日记》和《阿Q正传》。"),
    ("panda", "大熊猫", "大熊猫是中国特有的熊科动物，主要以竹子为食，栖息在四川、陕西和甘肃的山区。"),
    ("libai", "李白", "李白，字太白，号青莲居士，唐代浪漫主义诗人，被后人誉为诗仙。"),
]


def close_client(config: ServerConfig) -> None:
    get_knowledge_client(config).close()


@pytest.fixture(scope="module")
def subset_config(kb_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerConfig]:
    """The KB subset in embedded Qdrant (default engine), served by a spawned MCP server.

    BM25 only (``dense=False``: seconds instead of minutes of embedding); the hybrid search falls back to it.
    """
    path = tmp_path_factory.mktemp("langchain_kb") / "qdrant"
    with KnowledgeStore(COLLECTION, path=path) as store:
        index_sources(store, [kb_subset], progress=False, dense=False)
    config = ServerConfig(collection=COLLECTION, qdrant_path=str(path))
    yield config
    close_client(config)


def test_knowledge_retriever_finds_the_answer_passage(subset_config: ServerConfig):
    retriever = KnowledgeRetriever(config=subset_config, top_k=3)
    documents = retriever.invoke(QUESTION)
    assert len(documents) == 3
    first = documents[0]
    assert first.metadata["id"].startswith("cmrc2018-140#") and first.id == first.metadata["id"]
    assert "吴沃尧" in first.page_content and "吴沃尧" in first.metadata["evidence"]
    assert first.metadata["title"] and isinstance(first.metadata["score"], float)
    again = asyncio.run(retriever.ainvoke(QUESTION))
    assert [document.metadata["id"] for document in again] == [document.metadata["id"] for document in documents]


@pytest.fixture(scope="module")
def langchain_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded local-mode directory that a LangChain app filled with QdrantVectorStore (unnamed dense vector)."""
    path = tmp_path_factory.mktemp("langchain_app") / "qdrant"
    documents = [Document(page_content=text, metadata={"id": id_, "title": title}) for id_, title, text in PASSAGES]
    store = QdrantVectorStore.from_documents(
        documents, ZhragEmbeddings(settings.E5_EMBEDDER), path=str(path), collection_name=LANGCHAIN_COLLECTION
    )
    store.client.close()
    return path


@pytest.mark.parametrize(
    ("query", "expected"),
    [("世界海拔最高的山峰是哪座？", "everest"), ("被誉为诗仙的唐代诗人是谁？", "libai"), ("大熊猫主要吃什么？", "panda")],
)
def test_langchain_collection_is_searched_by_the_store(langchain_path: Path, query: str, expected: str):
    with KnowledgeStore(LANGCHAIN_COLLECTION, path=langchain_path, engine="local") as store:
        assert store.langchain_collection() is not None
        candidates = store.candidates(query, 3)
        assert candidates[0]["id"] == expected
        assert candidates[0]["text"] == next(text for id_, _, text in PASSAGES if id_ == expected)
        assert Retriever(store).search(query, 1)[0]["id"] == expected


def test_langchain_collection_through_the_mcp_server(langchain_path: Path):
    config = ServerConfig(collection=LANGCHAIN_COLLECTION, qdrant_path=str(langchain_path), qdrant_engine="local")
    try:
        client = get_knowledge_client(config)
        [passage] = client.find("鲁迅的原名叫什么？", top_k=1)
        assert (passage["id"], passage["title"]) == ("luxun", "鲁迅")
        [document] = KnowledgeRetriever(config=config, top_k=1).invoke("长江最终注入哪里？")
        assert document.metadata["id"] == "changjiang" and "东海" in document.page_content
    finally:
        close_client(config)
