"""Typed state of the zhrag question-answering graph.

The input is just a question (plus, for evaluation, the gold answer). Every node returns a partial
update; the fields below are the whole of what flows between nodes. The lists that grow over A2's rounds
(``queries``, ``judgements``, ``relevant``) have reducers: a node returns only what it adds.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from typing_extensions import NotRequired, TypedDict

from zhrag.kb.passage import Passage


def merge_timings(left: dict[str, float] | None, right: dict[str, float] | None) -> dict[str, float]:
    """Reducer for ``timings_ms``: add per-node wall times (a node that runs twice is summed)."""
    merged = dict(left or {})
    for node, ms in (right or {}).items():
        merged[node] = merged.get(node, 0.0) + ms
    return merged


def add_new_passages(left: list[Passage] | None, right: list[Passage] | None) -> list[Passage]:
    """Reducer for ``relevant``: append the passages of ``right`` whose id is not there yet."""
    merged = list(left or [])
    seen = {passage["id"] for passage in merged}
    for passage in right or []:
        if passage["id"] not in seen:
            seen.add(passage["id"])
            merged.append(passage)
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
        judgements: A2 only: one record per judged passage, ``{"id", "score", "relevant"}`` (the judge's
            score in [0, 1] and whether it reached ``Context.judge_threshold``); ``"raw"`` holds the verdict
            text of a judge that gives no probabilities.
        relevant: A2 only: passages the judge kept, accumulated over all rounds without duplicates.
        best_rejected: A2 only: the highest-scored passage the judge did not keep (the ``top_passage``
            fallback when nothing is kept).
        contexts: Passages given to the answer node (A1: ``retrieved``; A2: ``relevant`` ordered by judge
            score; A3: what the agent's searches found, latest first, at most ``top_k``; A0: none).
        requeries: How many times the query was rewritten (bounded by ``Context.max_requeries``).
        answer: The short Chinese answer.
        answer_confidence: Geometric-mean probability of the answer's tokens (``None`` when the model
            gives no probabilities).
        abstained: Whether the answer was replaced by 不知道 because its confidence was below
            ``Context.abstain_below``.
        agent_messages: A3 only: the agent's turns after the question (OpenAI-style assistant messages with
            their ``tool_calls``, and the ``tool`` messages holding the results).
        pending_calls: A3 only: the tool calls of the agent's latest turn, not yet run.
        tool_calls: A3 only: one record per tool call run: ``{"round", "name", "arguments", "well_formed",
            "passages"}`` (ids of the passages found) or ``"error"``.
        tool_rounds: A3 only: how many rounds of tool calls ran (bounded by ``Context.max_tool_rounds``).
        agent_reply: A3 only: the agent's final text (the answer node then answers from what it found).
        knowledge: Which knowledge the answer used and why, set by the answer node: ``{"source", "passages",
            "reason"}`` with ``source`` ``passages`` (the retrieved or kept passages), ``top_passage`` (A2's
            fallback to the best-scored rejected passage) or ``closed_book`` (the model alone), ``passages`` the
            ids given to the answer, and ``reason`` one English sentence.
        timings_ms: Wall time per node in milliseconds, summed over repeated runs of a node.
        scores: Terminal metric nodes write their results here, one key per metric.
    """

    query: str
    queries: Annotated[list[str], operator.add]
    retrieved: list[Passage]
    judgements: Annotated[list[dict[str, Any]], operator.add]
    relevant: Annotated[list[Passage], add_new_passages]
    best_rejected: Passage | None
    contexts: list[Passage]
    requeries: int
    answer: str
    answer_confidence: float | None
    abstained: bool
    agent_messages: Annotated[list[dict[str, Any]], operator.add]
    pending_calls: list[dict[str, Any]]
    tool_calls: Annotated[list[dict[str, Any]], operator.add]
    tool_rounds: int
    agent_reply: str
    knowledge: dict[str, Any]
    timings_ms: Annotated[dict[str, float], merge_timings]
    scores: Annotated[dict[str, Any], operator.or_]
