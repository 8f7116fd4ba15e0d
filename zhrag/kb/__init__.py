"""The knowledge base: passage store (Qdrant), indexing, embeddings, lexical and hybrid retrieval, reranking."""
