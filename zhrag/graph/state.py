"""Typed state of the zhrag question-answering graph.

The input is just a question (plus, for evaluation, the gold answer). Every node returns a partial
update; the fields below are the whole of what flows between nodes.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from typing_extensions import NotRequired, TypedDict

from zhrag.tools.passage import Passage


def merge_timings(left: dict[str, float] | None, right: dict[str, float] | None) -> dict[str, float]:
    """Reducer for ``timings_ms``: add per-node wall times (a node that runs twice is summed)."""
    merged = dict(left or {})
    for node, ms in (right or {}).items():
        merged[node] = merged.get(node, 0.0) + ms
    return merged


class InputState(TypedDict):
    """What a caller passes to ``invoke``.

    Attributes:
        question: The Chinese question to answer (non-empty).
        gold_answer: Reference answer, only read by terminal metric nodes during evaluation.
    """

    question: str
    gold_answer: NotRequired[str]


class GraphState(InputState, total=False):
    """Full state of one graph run.

    Attributes:
        query: The search query of the current retrieval round (starts as the question).
        queries: Every query sent to ``qdrant-find`` so far, in order; never holds a duplicate.
        retrieved: Passages returned by the latest retrieval round.
        judgements: A2 only: one record per judged passage, ``{"id", "relevant", "raw"}`` where
            ``raw`` is the judge model's text, for auditing the parser.
        relevant: A2 only: passages the judge kept, accumulated over all rounds without duplicates.
        contexts: Passages given to the answer node (A1: ``retrieved``; A2: ``relevant``; A0: none).
        requeries: How many times the query was rewritten (bounded by ``Context.max_requeries``).
        answer: The short Chinese answer.
        timings_ms: Wall time per node in milliseconds, summed over repeated runs of a node.
        scores: Terminal metric nodes write their results here, one key per metric.
    """

    query: str
    queries: list[str]
    retrieved: list[Passage]
    judgements: list[dict[str, Any]]
    relevant: list[Passage]
    contexts: list[Passage]
    requeries: int
    answer: str
    timings_ms: Annotated[dict[str, float], merge_timings]
    scores: Annotated[dict[str, Any], operator.or_]
