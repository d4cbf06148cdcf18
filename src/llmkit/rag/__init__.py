"""Retrieval over a user's documents: loaders, chunking, BM25 and dense indexes, hybrid search,
evaluation, and grounded prompts with numbered sources (see docs/rag.md)."""
