"""Arbitrate node (A2): choose between what the model knows and what the passages say.

The answer node answers from the passages the judge kept (or closed-book when it kept none). The arbiter then
weighs that answer against the model's closed-book answer (and, when nothing was kept, the answer from the best
rejected passage) and picks one path:

- ``passages``: the answer from the kept passages, best judge score first;
- ``top_passage``: the answer from the highest-scored passage the judge rejected;
- ``closed_book``: the model's own answer, no passage given.

With ``a2_arbiter="judge"`` the judge's verdict alone decides (the kept passages, else ``a2_fallback``), as before
the arbiter existed; with ``"rule"`` :func:`choose` decides from the signals in :func:`signals`. Either way the
choice, its signals and the reason are written to ``arbitration`` and ``knowledge``.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import GraphState
from zhrag.kb.passage import Passage
from zhrag.nodes.answer import draft, final_answer
from zhrag.nodes.common import answer_llm, require_question, timed
from zhrag.prompts import UNKNOWN_ANSWER, normalize_text
from zhrag.prompts.roles import stated_in

#: The knowledge paths an A2 answer can take, grounded ones first.
PATHS = ("passages", "top_passage", "closed_book")


def same_answer(first: str | None, second: str | None) -> bool:
    """Whether two answers agree: both say something other than 不知道 and, compared normalised, one holds the other."""
    a, b = normalize_text(first or ""), normalize_text(second or "")
    unknown = normalize_text(UNKNOWN_ANSWER)
    return bool(a) and bool(b) and unknown not in (a, b) and (a in b or b in a)


def stated(answer: str | None, passages: list[Passage]) -> bool:
    """Whether ``answer`` (not 不知道) is written in one of ``passages``, title included (:func:`stated_in`)."""
    if not answer or normalize_text(answer) == normalize_text(UNKNOWN_ANSWER):
        return False
    return stated_in(answer, [f"{passage.get('title', '')} {passage['text']}" for passage in passages])


def best_score(state: GraphState) -> float | None:
    """The highest judge score of the run (``None`` before any judgement)."""
    return max((record["score"] for record in state.get("judgements", [])), default=None)


def grounded_path(candidates: dict[str, dict[str, Any]]) -> str | None:
    """The grounded path among ``candidates``: the kept passages', else the best rejected passage's, else none."""
    return next((path for path in PATHS[:2] if path in candidates), None)


def signals(state: GraphState, candidates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the rule decides from: the best judge score and the number of kept passages, the closed-book and
    grounded answers' confidences, whether the grounded answer is stated in its passages, and whether the two agree."""
    judgements = state.get("judgements", [])
    path = grounded_path(candidates)
    grounded = candidates.get(path) if path else None
    closed = candidates.get("closed_book")
    passages = list(state.get("relevant", [])) if path == "passages" else []
    if path == "top_passage" and state.get("best_rejected"):
        passages = [state["best_rejected"]]  # type: ignore[list-item]
    return {
        "best_score": best_score(state),
        "kept": sum(1 for record in judgements if record["relevant"]),
        "grounded_path": path,
        "closed_confidence": closed["confidence"] if closed else None,
        "grounded_confidence": grounded["confidence"] if grounded else None,
        "stated": stated(grounded["answer"], passages) if grounded else False,
        "agree": same_answer(grounded["answer"], closed["answer"]) if grounded and closed else False,
    }


def choose(features: dict[str, Any], context: Context) -> tuple[str, str]:
    """The path the arbitration rule picks from :func:`signals`, with the reason in one English clause.

    In order: no grounded answer → closed-book; the grounded and closed-book answers agree → grounded; the grounded
    answer is stated in its passages and the best judge score reaches ``arbiter_stated_score`` → grounded; the
    closed-book answer's confidence reaches ``arbiter_closed_confidence`` → closed-book; the grounded answer's
    confidence reaches ``arbiter_grounded_confidence`` (or the model gives no confidence) → grounded; else closed-book.
    """
    path = features["grounded_path"]
    if path is None:
        return "closed_book", "no passage to answer from"
    if features["agree"]:
        return path, "the grounded and closed-book answers agree"
    best = features["best_score"]
    if features["stated"] and best is not None and best >= context.arbiter_stated_score:
        return path, f"its passages state the grounded answer and the best judge score {best} >= " \
                     f"{context.arbiter_stated_score}"
    closed = features["closed_confidence"]
    if closed is not None and closed >= context.arbiter_closed_confidence:
        return "closed_book", f"the closed-book answer's confidence {closed} >= {context.arbiter_closed_confidence}"
    grounded = features["grounded_confidence"]
    if grounded is None:
        return path, "the model gives no confidence: the passages decide"
    if grounded >= context.arbiter_grounded_confidence:
        return path, f"the grounded answer's confidence {grounded} >= {context.arbiter_grounded_confidence}"
    return "closed_book", "no signal favours the grounded answer"


def needs_top_passage(state: GraphState, closed: dict[str, Any], context: Context) -> bool:
    """Whether the answer from the best rejected passage is worth writing: nothing was kept, such a passage
    exists, and the rule may choose it (``a2_candidates="all"`` writes it whenever it exists)."""
    if state.get("relevant") or not state.get("best_rejected"):
        return False
    if context.a2_candidates == "all":
        return True
    if context.a2_arbiter != "rule":
        return False
    confident = closed["confidence"] is not None and closed["confidence"] >= context.arbiter_closed_confidence
    return (best_score(state) or 0.0) >= context.arbiter_stated_score or not confident


@timed("arbitrate")
def arbitrate(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Add the candidates the arbiter needs, choose a path and answer with its candidate (see the module doc)."""
    context = runtime.context
    knowledge = dict(state.get("knowledge") or {})
    candidates = dict(state.get("candidates") or {})
    if context.a2_arbiter == "judge" and context.a2_candidates == "needed":
        path = knowledge.get("source", "closed_book")
        return {"arbitration": {"arbiter": "judge", "path": path, "features": signals(state, candidates),
                                "reason": "the judge's verdict decides"}}
    question = require_question(state)
    llm = answer_llm(context)
    added: dict[str, dict[str, Any]] = {}
    if "closed_book" not in candidates:
        added["closed_book"] = draft(llm, question, [], context.max_new_tokens)
        candidates.update(added)
    if "top_passage" not in candidates and needs_top_passage(state, candidates["closed_book"], context):
        best: Passage = state["best_rejected"]  # type: ignore[assignment]  # needs_top_passage checked it
        added["top_passage"] = draft(llm, question, [best], context.max_new_tokens)
        candidates.update(added)
    features = signals(state, candidates)
    if context.a2_arbiter == "rule":
        path, why = choose(features, context)
    else:
        path, why = knowledge.get("source", "closed_book"), "the judge's verdict decides"
    chosen = candidates[path]
    knowledge.update(source=path, passages=chosen["passages"],
                     reason=f"{knowledge.get('reason', '')}; the arbiter ({context.a2_arbiter}) chose {path}: {why}")
    return {
        **final_answer(chosen, context),
        "candidates": added,
        "knowledge": knowledge,
        "arbitration": {"arbiter": context.a2_arbiter, "path": path, "features": features, "reason": why},
    }
