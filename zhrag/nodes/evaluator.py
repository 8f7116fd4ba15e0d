"""A4 evaluator: check the answer against the quotes it was given and the question's constraints; accept it, send
the work back to the researcher with a new query (bounded by ``max_review_rounds``), or answer 不知道.

Cheap checks come first: 不知道, or an answer without the form the question asks for (a numeral for a year or number
question), is rejected. An answer a quote states is judged by its support, the researcher's score of the best quote
stating it, against ``stated_threshold``; no model call. Any other answer is put to the evaluator's model (P(是)
that it is right, given the quotes) and accepted when that reaches ``evaluator_threshold``.
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import EvaluatorState, GraphState
from zhrag.kb.passage import Passage
from zhrag.nodes.common import require_question, role_llm, timed
from zhrag.nodes.judge import judge_scores
from zhrag.nodes.requery import next_query
from zhrag.nodes.roles import handoff
from zhrag.prompts import UNKNOWN_ANSWER
from zhrag.prompts.common import format_passage
from zhrag.prompts.roles import answer_fits, build_evaluator_prompt, question_constraints, stated_in

#: Characters of each quote shown to the evaluator's model.
EVALUATOR_QUOTE_CHARS = 300


def quotes_of_passages(passages: list[Passage]) -> list[str]:
    """Quotes as the answer prompt showed them."""
    return [format_passage(passage, EVALUATOR_QUOTE_CHARS) for passage in passages]


def quotes_of(state: EvaluatorState) -> list[str]:
    """The quotes the answer was given, as the answer prompt showed them."""
    return quotes_of_passages(state.get("contexts", []))


@timed("evaluator:check")
def check(state: EvaluatorState) -> dict[str, Any]:
    """The cheap checks: is the answer written in a quote, and how well supported (the best score of a quote
    stating it); has it the form the question asks for."""
    question = require_question(state)  # type: ignore[arg-type]
    answer = state.get("answer", "")
    kind = state.get("plan", {}).get("constraints", {}).get("kind") or question_constraints(question)["kind"]
    known = answer != UNKNOWN_ANSWER
    stating = [passage for passage in state.get("contexts", []) if known and stated_in(answer, quotes_of_passages([passage]))]
    support = max((float(passage["score"]) for passage in stating), default=None)
    return {"checks": {"stated": bool(stating), "support": support, "fits": known and answer_fits(kind, answer),
                       "kind": kind}}


def route_after_check(state: EvaluatorState) -> Literal["verify", "decide"]:
    """Ask the evaluator's model only about an answer of the asked form that no quote states."""
    checks = state.get("checks", {})
    return "verify" if checks.get("fits") and not checks.get("stated") else "decide"


@timed("evaluator:verify")
def verify(state: EvaluatorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The evaluator model's P(是) that the answer is right, given the quotes (none: its own knowledge)."""
    question = require_question(state)  # type: ignore[arg-type]
    llm = role_llm(runtime.context, "evaluator")
    prompt = build_evaluator_prompt(question, state.get("answer", ""), quotes_of(state), chat=llm.is_chat)
    [(score, _)] = judge_scores(llm, [prompt])
    return {"score": round(score, 4)}


def decision(state: EvaluatorState, context: Context) -> tuple[str, str]:
    """``(decision, reason)``: ``accept``, ``research`` (rounds left) or ``abstain``."""
    checks, score = state.get("checks", {}), state.get("score")
    support = checks.get("support")
    if checks.get("fits") and checks.get("stated") and support is not None and support >= context.stated_threshold:
        return "accept", f"a quote states it (support {support} >= {context.stated_threshold})"
    if checks.get("fits") and score is not None and score >= context.evaluator_threshold:
        return "accept", f"no quote states it; the evaluator's model finds it right ({score} >= {context.evaluator_threshold})"
    if not checks.get("fits"):
        why = "no answer" if state.get("answer") in (None, "", UNKNOWN_ANSWER) else f"not a {checks.get('kind')}"
    elif checks.get("stated"):
        why = f"only weak quotes state it (support {support} < {context.stated_threshold})"
    else:
        why = f"no quote states it and the evaluator's model doubts it ({score} < {context.evaluator_threshold})"
    if state.get("review_rounds", 0) < context.max_review_rounds:
        return "research", why
    return "abstain", why


@timed("evaluator:decide")
def decide(state: EvaluatorState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Record the verdict and act on it: accept, ask the researcher for one more round with a new query, or answer
    不知道."""
    context = runtime.context
    question = require_question(state)  # type: ignore[arg-type]
    rounds = state.get("review_rounds", 0)
    verdict, reason = decision(state, context)
    checks = state.get("checks", {})
    record = {"round": rounds, "answer": state.get("answer", ""), "stated": checks.get("stated", False),
              "support": checks.get("support"), "fits": checks.get("fits", False), "score": state.get("score"),
              "decision": verdict, "reason": reason}
    update: dict[str, Any] = {"verdicts": [record]}
    if verdict == "research":
        tried = state.get("queries", [])
        proposal = next((q for q in state.get("plan", {}).get("searches", []) if q not in tried), "")
        query = next_query(question, proposal, tried)
        update["feedback"] = {"round": rounds + 1, "reason": reason, "query": query}
        update["review_rounds"] = rounds + 1
        update["handoffs"] = [handoff("evaluator", "researcher", rounds, f"{reason}; search {query!r}")]
    elif verdict == "abstain":
        update.update(answer=UNKNOWN_ANSWER, abstained=True)
        update["handoffs"] = [handoff("evaluator", "end", rounds, f"answer {UNKNOWN_ANSWER}: {reason}")]
    else:
        update["handoffs"] = [handoff("evaluator", "end", rounds, f"accept: {reason}")]
    return update


def route_after_evaluator(state: GraphState) -> Literal["researcher", "done"]:
    """A4 branch: back to the researcher when the evaluator asked for another round, else done."""
    verdicts = state.get("verdicts", [])
    return "researcher" if verdicts and verdicts[-1]["decision"] == "research" else "done"
