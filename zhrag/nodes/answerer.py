"""A4 answerer: answer from the researcher's quotes that reach ``quote_threshold``, or closed-book when none does
(the shared answer node does the answering)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import AnswererState
from zhrag.kb.passage import Passage
from zhrag.nodes.common import timed
from zhrag.nodes.roles import handoff


def quoted_passages(evidence: list[dict[str, Any]], threshold: float, top_k: int) -> list[Passage]:
    """The evidence the answerer is given, as passages whose evidence window is the quote: at most ``top_k``,
    best first, each reaching ``threshold``."""
    return [
        Passage(id=item["id"], title=item["title"], text=item["quote"], score=item["score"], evidence=item["quote"])
        for item in evidence
        if item["score"] >= threshold
    ][:top_k]


@timed("answerer:quote")
def quote(state: AnswererState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Set ``contexts`` to the quotes the answer node reads."""
    context = runtime.context
    return {"contexts": quoted_passages(state.get("evidence", []), context.quote_threshold, context.top_k)}


@timed("answerer:hand_over")
def hand_over(state: AnswererState) -> dict[str, Any]:
    """Hand the answer and where it came from to the evaluator."""
    knowledge = state.get("knowledge", {})
    note = f"answer {state.get('answer', '')!r} from {knowledge.get('source', 'closed_book')}"
    if knowledge.get("passages"):
        note += " " + ", ".join(knowledge["passages"])
    return {"handoffs": [handoff("answerer", "evaluator", state.get("review_rounds", 0), note)]}
