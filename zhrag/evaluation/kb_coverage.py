"""Does the knowledge base hold the answer to a question at all? ``kb_covered`` over a whole KB source.

A question is *covered* when some document of the knowledge-base sources (as read by
``zhrag.kb.sources.iter_documents``, before chunking) contains the gold answer and is about the
question: ``zhrag.evaluation.retrieval_metrics.kb_covered``, i.e. it shares at least
``MIN_SHARED_BIGRAMS`` content character bigrams with the question. This is a property of the KB and
the question only, independent of any retriever, so it separates "retrieval missed it" from "the KB
does not have it".

Checking every document for every question would normalise the whole KB each time; ``KBCoverage``
normalises it once and keeps an inverted index from content bigrams to documents, so a question only
checks the documents that share enough bigrams with it. The answer is the same as running
``kb_covered`` over all documents.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from zhrag.evaluation.retrieval_metrics import (
    MIN_SHARED_BIGRAMS,
    content_bigrams,
    kb_covered,
    passage_text,
)
from zhrag.kb.sources import iter_documents


class KBCoverage:
    """An index of knowledge-base sources for answering ``covers(question, gold)`` quickly.

    Args:
        sources: KB sources ``iter_documents`` reads (jsonl, text, WikiExtractor output, SQuAD json).

    Raises:
        KnowledgeBaseError: a source is missing or malformed.
    """

    def __init__(self, sources: Iterable[str | Path]) -> None:
        self._texts: list[str] = []
        self._index: dict[str, list[int]] = defaultdict(list)
        documents = (document for source in sources for document in iter_documents(source))
        for number, document in enumerate(documents):
            text = passage_text({"title": document.title, "text": document.text})
            self._texts.append(text)
            for bigram in content_bigrams(text):
                self._index[bigram].append(number)

    def __len__(self) -> int:
        """Number of documents indexed."""
        return len(self._texts)

    def covers(self, question: str, gold: str) -> bool:
        """Whether some document contains ``gold`` and shares enough content bigrams with ``question``."""
        shared = Counter(number for bigram in content_bigrams(question) for number in self._index.get(bigram, ()))
        candidates = [self._texts[number] for number, count in shared.items() if count >= MIN_SHARED_BIGRAMS]
        return kb_covered(question, gold, candidates)
