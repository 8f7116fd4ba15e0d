"""Requery node (A2): rewrite the search query when no relevant passage was found."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import GraphState
from zhrag.kb.lexical import tokenize
from zhrag.nodes.common import judge_llm, require_question, timed
from zhrag.prompts import (
    REQUERY_MAX_NEW_TOKENS,
    build_requery_prompt,
    clean_query,
    normalize_text,
)


def fallback_queries(question: str) -> Iterator[str]:
    """Deterministic rewrites of ``question``, broadest first, never ending.

    The keyword form (jieba terms without question words), then its three longest terms, then each
    term alone (longest first), then the question tagged with a round number so a fresh query always exists.
    """
    terms = list(dict.fromkeys(tokenize(question)))
    longest = sorted(terms, key=len, reverse=True)
    yield " ".join(terms)
    yield " ".join(t for t in terms if t in longest[:3])
    yield from longest
    for n in itertools.count(2):
        yield f"{question} {n}"


def next_query(question: str, proposal: str, tried: Sequence[str]) -> str:
    """``proposal`` unless it is empty or already tried (compared normalised), else the first untried fallback."""
    used = {normalize_text(q) for q in tried}
    candidates = itertools.chain([proposal], fallback_queries(question))
    return next(q for q in candidates if (key := normalize_text(q)) and key not in used)


@timed("requery")
def requery(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask the judge model for a new query unlike every query tried so far and count the rewrite.

    Sets ``query`` (the next retrieval round searches it) and increments ``requeries``. An empty or
    repeated proposal is replaced by a deterministic keyword rewrite of the question.
    """
    question = require_question(state)
    tried = state.get("queries", [])
    llm = judge_llm(runtime.context)
    prompt = build_requery_prompt(question, tried, chat=llm.is_chat)
    [raw] = llm.generate([prompt], max_new_tokens=REQUERY_MAX_NEW_TOKENS, stop=("\n",))
    return {"query": next_query(question, clean_query(raw), tried), "requeries": state.get("requeries", 0) + 1}
