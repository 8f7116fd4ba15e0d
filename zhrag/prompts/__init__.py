"""Chinese prompts for the answer, judge and requery nodes, and parsers of the model replies.

Each builder returns a few-shot completion text for base models (``chat=False``) or a list of chat
messages for chat models (``chat=True``).
"""

from zhrag.prompts.answer import UNKNOWN_ANSWER, answer_context, build_answer_prompt, clean_answer
from zhrag.prompts.common import Prompt, normalize_text
from zhrag.prompts.judge import (
    JUDGE_MAX_NEW_TOKENS,
    NO,
    YES,
    build_judge_prompt,
    parse_judgement,
    verdict_score,
    yes_score,
)
from zhrag.prompts.requery import (
    REQUERY_MAX_NEW_TOKENS,
    build_requery_prompt,
    clean_query,
)

__all__ = [
    "JUDGE_MAX_NEW_TOKENS",
    "NO",
    "YES",
    "REQUERY_MAX_NEW_TOKENS",
    "UNKNOWN_ANSWER",
    "Prompt",
    "answer_context",
    "build_answer_prompt",
    "build_judge_prompt",
    "build_requery_prompt",
    "clean_answer",
    "clean_query",
    "normalize_text",
    "parse_judgement",
    "verdict_score",
    "yes_score",
]
