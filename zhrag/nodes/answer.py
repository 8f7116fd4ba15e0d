"""Answer node: a short Chinese answer from the numbered passages in ``contexts`` (or closed-book)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import GraphState

from zhrag.nodes.common import answer_llm, require_question, timed
from zhrag.prompts import UNKNOWN_ANSWER, answer_context, build_answer_prompt, clean_answer


def abstains(answer: str, confidence: float | None, threshold: float | None) -> bool:
    """Whether an answer is replaced by 不知道: a threshold is set and the answer's confidence is below it.

    An answer that already is 不知道, or has no confidence (a model without probabilities), is left as it is.
    """
    return threshold is not None and confidence is not None and answer != UNKNOWN_ANSWER and confidence < threshold


@timed("answer")
def answer(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Generate the answer greedily, stopping at the first newline, and clean it to a short answer.

    Uses the passages in ``contexts``; with none (A0, or A2 when nothing was judged relevant) the prompt is
    closed-book. Where the model gives token probabilities, ``answer_confidence`` is their geometric mean over
    the answer, and with ``abstain_below`` set an answer below it becomes 不知道 (``abstained``): Chinese-SimpleQA's
    F counts a wrong answer worse than none.
    """
    question = require_question(state)
    context = runtime.context
    llm = answer_llm(context)
    passages = state.get("contexts", [])
    prompt = build_answer_prompt(question, passages, chat=llm.is_chat)
    confidence = None
    if llm.supports_logprobs:
        [scored] = llm.generate_scored([prompt], max_new_tokens=context.max_new_tokens, stop=("\n",))
        raw, confidence = scored.text, scored.confidence()
    else:
        [raw] = llm.generate([prompt], max_new_tokens=context.max_new_tokens, stop=("\n",))
    text = clean_answer(raw, question, answer_context(passages))
    abstained = abstains(text, confidence, context.abstain_below)
    return {
        "answer": UNKNOWN_ANSWER if abstained else text,
        "answer_confidence": None if confidence is None else round(confidence, 4),
        "abstained": abstained,
    }
