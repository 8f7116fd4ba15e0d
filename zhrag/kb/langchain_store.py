"""Collections written by LangChain's ``QdrantVectorStore`` (PyPI ``langchain-qdrant``) as zhrag knowledge bases.

A LangChain app that filled a Qdrant collection with ``QdrantVectorStore`` (payload ``page_content`` +
``metadata``, one dense vector, unnamed by default) can hand that collection to zhrag: ``qdrant-find``,
``zhrag search`` and the graph's retrieve node search it through langchain-qdrant itself, with zhrag's
embedder wrapped as a LangChain :class:`~langchain_core.embeddings.Embeddings` (:class:`ZhragEmbeddings`).
:class:`~zhrag.kb.store.KnowledgeStore` recognises such a collection (no zhrag metadata, a point with a
``page_content`` payload) and answers :meth:`~zhrag.kb.store.KnowledgeStore.candidates` from
:class:`LangChainCollection`.

These collections live where qdrant-client puts them: an embedded local-mode directory (zhrag's ``local``
engine, ``--qdrant-engine local``) or a Qdrant server (``--qdrant-url``); the default ``edge`` engine's
shards are zhrag's own. The embedder must be the one the collection was written with (``--embedder``):
langchain-qdrant checks the dimension, the names cannot be checked (the collection does not record one).
Such a collection has dense vectors only, so its search is dense; BM25 (``--mode sparse``) is not available.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from zhrag import settings
from zhrag.errors import KnowledgeBaseError
from zhrag.kb.embeddings import Embedder, load_embedder
from zhrag.kb.passage import Passage

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

#: Payload keys of ``QdrantVectorStore``'s defaults.
CONTENT_KEY = "page_content"
METADATA_KEY = "metadata"
#: Metadata keys that give a passage's id (first found wins; else the Qdrant point id).
ID_KEYS = ("id", "chunk_id", "doc_id")


class ZhragEmbeddings(Embeddings):
    """A zhrag embedder (:func:`zhrag.kb.embeddings.load_embedder`) as LangChain embeddings.

    Args:
        embedder: A loaded :class:`~zhrag.kb.embeddings.Embedder`, or the name to load (alias, path or hub id).
        device: Device when loading by name (``None``: automatic).
    """

    def __init__(self, embedder: Embedder | str = settings.DEFAULT_EMBEDDER, device: str | None = None) -> None:
        self._embedder = embedder if isinstance(embedder, Embedder) else None
        self._name = embedder.name if isinstance(embedder, Embedder) else embedder
        self._device = device

    @property
    def embedder(self) -> Embedder:
        """The zhrag embedder, loaded on first use (once per process for a name)."""
        if self._embedder is None:
            self._embedder = load_embedder(self._name, self._device)
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Passage vectors (e5 adds its ``passage:`` prefix)."""
        return self.embedder.documents(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """A query vector (e5 adds its ``query:`` prefix)."""
        return self.embedder.query(text)


def dense_vector_name(client: QdrantClient, collection: str) -> str | None:
    """The name of the collection's one dense vector (``""`` when unnamed), or None when it has none or several."""
    vectors = client.get_collection(collection).config.params.vectors
    if vectors is None:
        return None
    if isinstance(vectors, dict):
        return next(iter(vectors)) if len(vectors) == 1 else None
    return ""


def is_langchain_collection(client: QdrantClient, collection: str) -> bool:
    """Whether ``collection`` looks written by ``QdrantVectorStore``: one dense vector and a ``page_content`` payload."""
    if not client.collection_exists(collection) or dense_vector_name(client, collection) is None:
        return False
    points, _ = client.scroll(collection, limit=1, with_payload=True, with_vectors=False)
    return bool(points) and isinstance((points[0].payload or {}).get(CONTENT_KEY), str)


def to_passage(document: Any, score: float) -> Passage:
    """A ``QdrantVectorStore`` hit as a zhrag passage: id and title from its metadata (else the point id)."""
    metadata = document.metadata or {}
    found = next((metadata[key] for key in ID_KEYS if metadata.get(key) not in (None, "")), None)
    return Passage(
        id=str(found if found is not None else document.id or metadata.get("_id", "")),
        title=str(metadata.get("title") or ""),
        text=document.page_content,
        score=float(score),
    )


class LangChainCollection:
    """A ``QdrantVectorStore`` collection searched through langchain-qdrant.

    Args:
        client: The qdrant-client of the collection's storage (embedded local mode or a server); not closed here.
        collection: Collection name.
        embeddings: The embeddings the collection was written with.

    Raises:
        KnowledgeBaseError: the collection has no single dense vector, or its dimension or distance does not
            match ``embeddings``.
    """

    def __init__(self, client: QdrantClient, collection: str, embeddings: Embeddings) -> None:
        from langchain_qdrant import QdrantVectorStore
        from langchain_qdrant.qdrant import QdrantVectorStoreError

        vector_name = dense_vector_name(client, collection)
        if vector_name is None:
            raise KnowledgeBaseError(f"collection {collection!r} has no single dense vector to search")
        vectors = client.get_collection(collection).config.params.vectors
        params = vectors[vector_name] if isinstance(vectors, dict) else vectors
        if params is None:  # dense_vector_name found one, so this does not happen
            raise KnowledgeBaseError(f"collection {collection!r} has no single dense vector to search")
        try:
            self.vector_store = QdrantVectorStore(
                client=client,
                collection_name=collection,
                embedding=embeddings,
                vector_name=vector_name,
                distance=params.distance,
                content_payload_key=CONTENT_KEY,
                metadata_payload_key=METADATA_KEY,
            )
        except QdrantVectorStoreError as error:
            reason = str(error).split(". ")[0]
            raise KnowledgeBaseError(
                f"collection {collection!r} (written by LangChain's QdrantVectorStore) does not fit this embedder: "
                f"{reason}; use the embedder it was written with (--embedder)"
            ) from None
        self.collection = collection

    def search(self, query: str, top_k: int) -> list[Passage]:
        """The ``top_k`` nearest passages (the collection's distance: cosine similarity by default)."""
        hits = self.vector_store.similarity_search_with_score(query, k=top_k)
        return [to_passage(document, score) for document, score in hits]

    def add(self, texts: Sequence[str], metadatas: Sequence[dict[str, Any]] | None = None) -> list[str]:
        """Add texts as ``QdrantVectorStore`` does (one point each, metadata under ``metadata``); their point ids."""
        ids = [str(uuid.uuid4()) for _ in texts]  # as Qdrant spells them (langchain-qdrant's own are unhyphenated)
        self.vector_store.add_texts(list(texts), list(metadatas or []) or None, ids=ids)
        return ids
