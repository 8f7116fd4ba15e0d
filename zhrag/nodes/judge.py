"""Judge node (A2): keep only the retrieved passages the judge model finds helpful."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from zhrag.nodes.common import judge_llm, require_question, timed
from zhrag.prompts import JUDGE_MAX_NEW_TOKENS, build_judge_prompt, parse_judgement


@timed("judge")
def judge(state: Mapping[str, Any], runtime: Runtime[Any]) -> dict[str, Any]:
    """Ask the judge model, in one batched call, whether each newly retrieved passage helps answer the question.

    Passages already judged in an earlier round are not asked again. Appends one
    ``{"id", "relevant", "raw"}`` record per judged passage to ``judgements`` (an unreadable reply
    counts as not relevant), adds the relevant ones to ``relevant`` (no duplicate ids across rounds)
    and sets ``contexts`` to ``relevant``.
    """
    question = require_question(state)
    judgements = list(state.get("judgements", []))
    relevant = list(state.get("relevant", []))
    seen = {record["id"] for record in judgements}
    fresh = list({p["id"]: p for p in state.get("retrieved", []) if p["id"] not in seen}.values())
    if fresh:
        llm = judge_llm(runtime.context)
        prompts = [build_judge_prompt(question, passage, chat=llm.is_chat) for passage in fresh]
        replies = llm.generate(prompts, max_new_tokens=JUDGE_MAX_NEW_TOKENS, stop=("\n",))
        for passage, reply in zip(fresh, replies, strict=True):
            verdict = parse_judgement(reply) is True
            judgements.append({"id": passage["id"], "relevant": verdict, "raw": reply})
            if verdict:
                relevant.append(passage)
    return {"judgements": judgements, "relevant": relevant, "contexts": relevant}
