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
            "reason"}`` with ``source`` ``passages`` (the retrieved, kept or quoted passages), ``top_passage``
            (A2's fallback to the best-scored rejected passage) or ``closed_book`` (the model alone), ``passages``
            the ids given to the answer, and ``reason`` one English sentence.
        candidates: The answers considered, by knowledge path (``passages``, ``top_passage``, ``closed_book``):
            ``{"answer", "confidence", "passages"}`` each, before abstention. The answer node adds its own; A2's
            arbiter adds the closed-book answer and, where it may choose it, the answer from the best rejected passage.
        arbitration: A2 only: the arbiter's choice, ``{"arbiter", "path", "features", "reason"}``: the path whose
            candidate became the answer, the signals it was chosen from (best judge score, kept passages, each
            candidate's confidence, whether the grounded answer is stated in its passages and agrees with the
            closed-book one) and one English sentence saying why.
        plan: A4 only: the planner's plan, ``{"searches", "constraints", "proposal"}``: the queries the researcher
            runs first (the question, then the planner's entity + attribute query), the constraints the evaluator
            checks (:func:`zhrag.prompts.roles.question_constraints`) and the model's raw proposal.
        evidence: A4 only: the researcher's evidence, best first: one ``{"id", "title", "quote", "score",
            "query"}`` per passage read (the quote is the passage's sentences that best match the question, the
            score the judge's), accumulated over research rounds.
        feedback: A4 only: the evaluator's request for another research round, ``{"round", "reason", "query"}``
            (``None`` before any).
        review_rounds: A4 only: how many times the evaluator sent the work back to the researcher (bounded by
            ``Context.max_review_rounds``).
        verdicts: A4 only: one evaluator record per answer it checked: ``{"round", "answer", "stated", "support",
            "fits", "score", "decision", "reason"}`` with ``decision`` ``accept``, ``research`` or ``abstain``.
        handoffs: A4 only: every hand-off between roles, in order: ``{"from", "to", "round", "note"}``.
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
    candidates: Annotated[dict[str, dict[str, Any]], operator.or_]
    arbitration: dict[str, Any]
    plan: dict[str, Any]
    evidence: list[dict[str, Any]]
    feedback: dict[str, Any] | None
    review_rounds: int
    verdicts: Annotated[list[dict[str, Any]], operator.add]
    handoffs: Annotated[list[dict[str, Any]], operator.add]
    timings_ms: Annotated[dict[str, float], merge_timings]
    scores: Annotated[dict[str, Any], operator.or_]


# A4's roles run as subgraphs, each with its own state. A subgraph reads from the parent state only the keys of its
# input schema and returns only those of its output schema; the lists with reducers (handoffs, verdicts, queries,
# timings_ms) are outputs but never inputs, so a role returns only what it adds and the parent's reducer appends it.


class PlannerInput(TypedDict):
    """What the planner reads.

    Attributes:
        question: The question to plan for.
    """

    question: str


class PlannerOutput(TypedDict, total=False):
    """What the planner hands on.

    Attributes:
        plan: The plan (see ``GraphState.plan``).
        handoffs: The planner → researcher hand-off.
        timings_ms: Wall time of the planner's nodes.
    """

    plan: dict[str, Any]
    handoffs: Annotated[list[dict[str, Any]], operator.add]
    timings_ms: Annotated[dict[str, float], merge_timings]


class PlannerState(PlannerInput, PlannerOutput, total=False):
    """The planner's own state.

    Attributes:
        proposal: The model's raw search query, before cleaning.
    """

    proposal: str


class ResearcherInput(TypedDict, total=False):
    """What the researcher reads.

    Attributes:
        question: The question.
        plan: The planner's plan (its searches run in the first round).
        feedback: The evaluator's request for another round (its query runs in that round).
        evidence: Evidence of earlier rounds (those passages are not read again).
        review_rounds: How many times the evaluator sent the work back (the round number).
    """

    question: str
    plan: dict[str, Any]
    feedback: dict[str, Any] | None
    evidence: list[dict[str, Any]]
    review_rounds: int


class ResearcherOutput(TypedDict, total=False):
    """What the researcher hands on.

    Attributes:
        evidence: All evidence so far, best first.
        queries: The queries this round sent to ``qdrant-find``.
        retrieved: The passages this round found and read.
        handoffs: The researcher → answerer hand-off.
        timings_ms: Wall time of the researcher's nodes.
    """

    evidence: list[dict[str, Any]]
    queries: Annotated[list[str], operator.add]
    retrieved: list[Passage]
    handoffs: Annotated[list[dict[str, Any]], operator.add]
    timings_ms: Annotated[dict[str, float], merge_timings]


class ResearcherState(ResearcherInput, ResearcherOutput, total=False):
    """The researcher's own state.

    Attributes:
        found: The new passages of this round, each with its evidence window for the question, to be read.
        found_by: The query that found each passage of ``found`` (by id).
    """

    found: list[Passage]
    found_by: dict[str, str]


class AnswererInput(TypedDict, total=False):
    """What the answerer reads.

    Attributes:
        question: The question.
        evidence: The researcher's evidence, best first.
        review_rounds: The round number (for the hand-off record).
    """

    question: str
    evidence: list[dict[str, Any]]
    review_rounds: int


class AnswererOutput(TypedDict, total=False):
    """What the answerer hands on (the fields of ``GraphState`` of the same names).

    Attributes:
        contexts: The quotes given to the answer, as passages.
        answer: The short answer.
        answer_confidence: Its confidence.
        abstained: Whether it was replaced by 不知道 under ``abstain_below``.
        knowledge: Which knowledge it used and why.
        candidates: Its answer before abstention, under its knowledge path (a later round's replaces it).
        handoffs: The answerer → evaluator hand-off.
        timings_ms: Wall time of the answerer's nodes.
    """

    contexts: list[Passage]
    answer: str
    answer_confidence: float | None
    abstained: bool
    knowledge: dict[str, Any]
    candidates: Annotated[dict[str, dict[str, Any]], operator.or_]
    handoffs: Annotated[list[dict[str, Any]], operator.add]
    timings_ms: Annotated[dict[str, float], merge_timings]


class AnswererState(AnswererInput, AnswererOutput, total=False):
    """The answerer's own state (its input and output: it keeps nothing private)."""


class EvaluatorInput(TypedDict, total=False):
    """What the evaluator reads.

    Attributes:
        question: The question.
        answer: The answer to check.
        contexts: The quotes the answer was given.
        plan: The plan (its constraints are checked).
        queries: Every query searched so far (the next round's query must be new).
        review_rounds: How many times the work was sent back already.
    """

    question: str
    answer: str
    contexts: list[Passage]
    plan: dict[str, Any]
    queries: list[str]
    review_rounds: int


class EvaluatorOutput(TypedDict, total=False):
    """What the evaluator hands on.

    Attributes:
        answer: 不知道 when it abstains, else unchanged.
        abstained: True when it abstains.
        verdicts: Its record of this check.
        feedback: Its request for another research round.
        review_rounds: Incremented when it sends the work back.
        handoffs: The evaluator → researcher (or → end) hand-off.
        timings_ms: Wall time of the evaluator's nodes.
    """

    answer: str
    abstained: bool
    verdicts: Annotated[list[dict[str, Any]], operator.add]
    feedback: dict[str, Any] | None
    review_rounds: int
    handoffs: Annotated[list[dict[str, Any]], operator.add]
    timings_ms: Annotated[dict[str, float], merge_timings]


class EvaluatorState(EvaluatorInput, EvaluatorOutput, total=False):
    """The evaluator's own state.

    Attributes:
        checks: The cheap checks: ``{"stated", "support", "fits", "kind"}`` (whether the answer is written in a
            quote, the researcher's score of the best quote stating it, and whether it has the asked form).
        score: The evaluator model's P(是) that the answer is right (``None`` when the cheap checks settled it).
    """

    checks: dict[str, Any]
    score: float | None
