"""A4 planner: read the question's constraints and plan the searches (the question, and an entity + attribute query
the planner's model writes)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import PlannerState
from zhrag.nodes.common import require_question, role_llm, timed
from zhrag.nodes.roles import handoff
from zhrag.prompts import clean_query, normalize_text
from zhrag.prompts.roles import PLAN_MAX_NEW_TOKENS, build_planner_prompt, question_constraints


@timed("planner:propose")
def propose(state: PlannerState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the planner's model for one search query naming the question's entity and the attribute asked for."""
    question = require_question(state)  # type: ignore[arg-type]  # any state with a question
    llm = role_llm(runtime.context, "planner")
    [raw] = llm.generate([build_planner_prompt(question, chat=llm.is_chat)], max_new_tokens=PLAN_MAX_NEW_TOKENS,
                         stop=("\n",))
    return {"proposal": raw}


def grounded_query(proposal: str, question: str) -> str:
    """``proposal`` without the terms the model made up: a term is kept when at least half of its characters occur
    in the question (a small planner otherwise adds guessed names and years to the search)."""
    terms = [term for term in proposal.split() if 2 * sum(char in question for char in term) >= len(term)]
    return " ".join(terms)


@timed("planner:plan")
def plan(state: PlannerState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The plan: the question itself first (what A1 searches), then the model's query (without made-up terms) when
    it is a different one; the constraints the evaluator will check; hand the plan to the researcher."""
    question = require_question(state)  # type: ignore[arg-type]
    searches = [question]
    query = grounded_query(clean_query(state.get("proposal", "")), question)
    if query and normalize_text(query) != normalize_text(question) and len(query) <= len(question) * 2:
        searches.append(query)
    constraints = question_constraints(question)
    note = f"search {len(searches)} quer{'y' if len(searches) == 1 else 'ies'}: " + " | ".join(searches)
    if constraints["kind"] != "any":
        note += f"; the answer must be a {constraints['kind']}"
    return {
        "plan": {"searches": searches, "constraints": constraints, "proposal": state.get("proposal", "")},
        "handoffs": [handoff("planner", "researcher", 0, note)],
    }
