"""A4 researcher: run the planned searches (or the evaluator's) over the MCP session, read each new passage with the
judge model, and hand short quotes with their passage ids to the answerer, best first."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import ResearcherState
from zhrag.kb.evidence import query_bigrams, with_evidence
from zhrag.kb.passage import MAX_TOP_K, Passage
from zhrag.nodes import retrieve
from zhrag.nodes.common import judge_llm, require_question, timed
from zhrag.nodes.judge import score_passages
from zhrag.nodes.roles import handoff


def round_queries(state: ResearcherState) -> list[str]:
    """This round's queries: the plan's searches in the first round, the evaluator's query in a later one."""
    feedback = state.get("feedback")
    if feedback and feedback.get("round") == state.get("review_rounds", 0):
        return [feedback["query"]]
    return list(state.get("plan", {}).get("searches") or [require_question(state)])  # type: ignore[arg-type]


@timed("researcher:search")
def search(state: ResearcherState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Run this round's queries; keep, in turn from each query's results, up to ``top_k`` passages not read before,
    each with its evidence window chosen for the question."""
    context = runtime.context
    question = require_question(state)  # type: ignore[arg-type]
    queries = round_queries(state)
    seen = {item["id"] for item in state.get("evidence", [])}
    client = retrieve.get_knowledge_client(retrieve.server_config(context))
    wanted = query_bigrams(question)
    results = [(query, client.find(query, min(context.top_k + len(seen), MAX_TOP_K))) for query in queries]
    found: list[Passage] = []
    found_by: dict[str, str] = {}
    ranked = (  # the queries' results interleaved: each query's first, then each one's second, ...
        (query, passages[rank])
        for rank in range(max((len(passages) for _, passages in results), default=0))
        for query, passages in results
        if rank < len(passages)
    )
    for query, passage in ranked:
        if len(found) == context.top_k:
            break
        if passage["id"] not in seen and passage["id"] not in found_by:
            found.append(with_evidence(wanted, passage))
            found_by[passage["id"]] = query
    return {"queries": queries, "found": found, "found_by": found_by, "retrieved": found}


@timed("researcher:read")
def read(state: ResearcherState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Score each new passage's quote with the judge model (P(是) that it states the answer) and merge it into the
    evidence, best first; hand the quotes that reach ``quote_threshold`` to the answerer."""
    context = runtime.context
    question = require_question(state)  # type: ignore[arg-type]
    found = state.get("found", [])
    scores = score_passages(judge_llm(context), question, found) if found else []
    fresh = [
        {"id": passage["id"], "title": passage.get("title", ""), "quote": passage.get("evidence", passage["text"]),
         "score": round(score, 4), "query": state.get("found_by", {}).get(passage["id"], "")}
        for passage, (score, _) in zip(found, scores, strict=True)
    ]
    evidence = sorted([*state.get("evidence", []), *fresh], key=lambda item: item["score"], reverse=True)
    quoted = [item for item in evidence if item["score"] >= context.quote_threshold]
    round_number = state.get("review_rounds", 0)
    note = f"read {len(fresh)} new passage(s); {len(quoted)} quote(s) reach {context.quote_threshold}"
    if evidence:
        note += f" (best {evidence[0]['id']}: {evidence[0]['score']})"
    return {"evidence": evidence, "handoffs": [handoff("researcher", "answerer", round_number, note)]}
