"""Answer node: a short Chinese answer from the numbered passages in ``contexts`` (or closed-book)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from zhrag.nodes.common import answer_llm, require_question, timed
from zhrag.prompts import build_answer_prompt, clean_answer


@timed("answer")
def answer(state: Mapping[str, Any], runtime: Runtime[Any]) -> dict[str, Any]:
    """Generate the answer greedily, stopping at the first newline, and clean it to a short answer.

    Uses the passages in ``contexts``; with none (A0, or A2 when nothing was judged relevant) the
    prompt is closed-book.
    """
    question = require_question(state)
    llm = answer_llm(runtime.context)
    prompt = build_answer_prompt(question, state.get("contexts", []), chat=llm.is_chat)
    [raw] = llm.generate([prompt], max_new_tokens=runtime.context.max_new_tokens, stop=("\n",))
    return {"answer": clean_answer(raw, question)}
