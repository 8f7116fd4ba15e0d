"""Answer node: a short Chinese answer from the numbered passages in ``contexts`` (or closed-book)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import GraphState
from zhrag.kb.passage import Passage
from zhrag.models import LLM
from zhrag.nodes.common import answer_llm, require_question, timed
from zhrag.prompts import UNKNOWN_ANSWER, answer_context, build_answer_prompt, clean_answer


def abstains(answer: str, confidence: float | None, threshold: float | None) -> bool:
    """Whether an answer is replaced by 不知道: a threshold is set and the answer's confidence is below it.

    An answer that already is 不知道, or has no confidence (a model without probabilities), is left as it is.
    """
    return threshold is not None and confidence is not None and answer != UNKNOWN_ANSWER and confidence < threshold


def knowledge_used(state: GraphState, context: Context) -> dict[str, Any]:
    """Which knowledge the answer node is given (``contexts``) and why, from what the earlier nodes recorded.

    A2's reason names the judge's verdicts (kept passages and the threshold, or the fallback when it kept none);
    A4's the researcher's quotes; A3's the agent's searches; A1's the retrieval; A0 answers closed-book.
    """
    passages = [passage["id"] for passage in state.get("contexts", [])]
    judgements = state.get("judgements", [])
    source = "passages" if passages else "closed_book"
    if judgements:
        kept = [record for record in judgements if record["relevant"]]
        rounds = state.get("requeries", 0) + 1
        if kept:
            best = max(record["score"] for record in kept)
            reason = (
                f"the judge kept {len(kept)} of {len(judgements)} passages in {rounds} round(s) "
                f"(score >= {context.judge_threshold}; best {best})"
            )
        else:
            best = max(record["score"] for record in judgements)
            source = "top_passage" if passages else "closed_book"
            reason = (
                f"the judge kept none of {len(judgements)} passages in {rounds} round(s) (best score {best} < "
                f"{context.judge_threshold}): a2_fallback={context.a2_fallback}"
            )
    elif "evidence" in state:  # the A4 researcher ran
        evidence = state.get("evidence", [])
        reason = (
            f"the researcher read {len(evidence)} passage(s) and quoted {len(passages)} (score >= "
            f"{context.quote_threshold})" + ("" if passages else ": the answerer answers closed-book")
        )
    elif "pending_calls" in state:  # the A3 agent ran (it sets pending_calls on every turn)
        searches = len(state.get("tool_calls", []))
        reason = f"the agent searched {searches} time(s)" + (
            f" and found {len(passages)} passage(s)" if passages else " and found nothing to answer from"
        )
    elif state.get("queries"):
        reason = f"retrieval returned {len(passages)} passage(s), all given to the answer"
    else:
        reason = "no retrieval in this variant: the model answers alone"
    return {"source": source, "passages": passages, "reason": reason}


def draft(llm: LLM, question: str, passages: Sequence[Passage], max_new_tokens: int) -> dict[str, Any]:
    """One answer of ``llm`` to ``question`` from ``passages`` (none: closed-book), before any abstention.

    Greedy, stopped at the first newline and cleaned to a short answer. Returns ``{"answer", "confidence",
    "passages"}``: the confidence is the geometric-mean probability of the answer's tokens (``None`` for a model
    without probabilities), ``passages`` the ids given to the model.
    """
    prompt = build_answer_prompt(question, passages, chat=llm.is_chat)
    confidence = None
    if llm.supports_logprobs:
        [scored] = llm.generate_scored([prompt], max_new_tokens=max_new_tokens, stop=("\n",))
        raw, confidence = scored.text, scored.confidence()
    else:
        [raw] = llm.generate([prompt], max_new_tokens=max_new_tokens, stop=("\n",))
    return {
        "answer": clean_answer(raw, question, answer_context(passages)),
        "confidence": None if confidence is None else round(confidence, 4),
        "passages": [passage["id"] for passage in passages],
    }


def final_answer(candidate: dict[str, Any], context: Context) -> dict[str, Any]:
    """The state update that gives ``candidate`` (a :func:`draft`) as the answer, 不知道 where it abstains."""
    abstained = abstains(candidate["answer"], candidate["confidence"], context.abstain_below)
    return {
        "answer": UNKNOWN_ANSWER if abstained else candidate["answer"],
        "answer_confidence": candidate["confidence"],
        "abstained": abstained,
    }


@timed("answer")
def answer(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Generate the answer greedily, stopping at the first newline, and clean it to a short answer.

    Uses the passages in ``contexts``; with none (A0, or A2 when nothing was judged relevant) the prompt is
    closed-book. Where the model gives token probabilities, ``answer_confidence`` is their geometric mean over
    the answer, and with ``abstain_below`` set an answer below it becomes 不知道 (``abstained``): Chinese-SimpleQA's
    F counts a wrong answer worse than none. The answer before abstention is also recorded in ``candidates``
    under its knowledge source (A2's arbiter may add others).
    """
    question = require_question(state)
    context = runtime.context
    candidate = draft(answer_llm(context), question, state.get("contexts", []), context.max_new_tokens)
    knowledge = knowledge_used(state, context)
    return {**final_answer(candidate, context), "knowledge": knowledge, "candidates": {knowledge["source"]: candidate}}
