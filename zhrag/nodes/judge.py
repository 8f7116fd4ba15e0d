"""Judge node (A2): score each retrieved passage, keep those above the threshold, ordered by score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import GraphState
from zhrag.kb.passage import Passage
from zhrag.models import LLM
from zhrag.nodes.common import judge_llm, require_question, timed
from zhrag.prompts import JUDGE_MAX_NEW_TOKENS, NO, YES, Prompt, build_judge_prompt, verdict_score, yes_score


def judge_scores(llm: LLM, prompts: Sequence[Prompt]) -> list[tuple[float, str | None]]:
    """The judge's score in [0, 1] for each prompt, with the verdict text where the score was read from text.

    Models that give probabilities are scored by the next-token probabilities of 是 and 否 (one forward pass
    per prompt, all prompts in one call); others write a verdict, read by the parser as 1.0 (yes) or 0.0.
    """
    if llm.supports_logprobs:
        return [(yes_score(p), None) for p in llm.next_token_probabilities(prompts, (YES, NO))]
    replies = llm.generate(prompts, max_new_tokens=JUDGE_MAX_NEW_TOKENS, stop=("\n",))
    return [(verdict_score(reply), reply) for reply in replies]


def score_passages(llm: LLM, question: str, passages: Sequence[Passage]) -> list[tuple[float, str | None]]:
    """:func:`judge_scores` of each passage for ``question``, with the judge prompt in the model's form."""
    return judge_scores(llm, [build_judge_prompt(question, passage, chat=llm.is_chat) for passage in passages])


@timed("judge")
def judge(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Score the newly retrieved passages and keep those whose score reaches ``judge_threshold``.

    Passages already judged in an earlier round are not scored again. Adds one ``{"id", "score",
    "relevant"}`` record per judged passage to ``judgements`` and the kept passages to ``relevant``; sets
    ``contexts`` to every kept passage so far, highest score first (filter and rank), and ``best_rejected``
    to the highest-scored passage not kept. When nothing has been kept and the requery budget is spent (this
    is the last judgement before answering), ``a2_fallback="top_passage"`` answers from ``best_rejected``;
    ``closed_book`` answers without passages.
    """
    question = require_question(state)
    context = runtime.context
    scores = {record["id"]: record["score"] for record in state.get("judgements", [])}
    fresh = list({p["id"]: p for p in state.get("retrieved", []) if p["id"] not in scores}.values())
    records: list[dict[str, Any]] = []
    kept: list[Passage] = []
    best = state.get("best_rejected")
    if fresh:
        llm = judge_llm(context)
        for passage, (score, raw) in zip(fresh, score_passages(llm, question, fresh), strict=True):
            relevant = score >= context.judge_threshold
            record: dict[str, Any] = {"id": passage["id"], "score": round(score, 4), "relevant": relevant}
            if raw is not None:
                record["raw"] = raw
            records.append(record)
            scores[passage["id"]] = record["score"]
            if relevant:
                kept.append(passage)
            elif best is None or record["score"] > scores.get(best["id"], -1.0):
                best = passage
    contexts = sorted([*state.get("relevant", []), *kept], key=lambda p: scores[p["id"]], reverse=True)
    budget_spent = state.get("requeries", 0) >= context.max_requeries
    if not contexts and budget_spent and context.a2_fallback == "top_passage" and best is not None:
        contexts = [best]
    return {"judgements": records, "relevant": kept, "contexts": contexts, "best_rejected": best}
