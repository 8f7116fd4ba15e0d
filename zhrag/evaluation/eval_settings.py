"""Settings of an evaluation run that are not the graph's: the grader and the evaluation judge.

The graph runs with a :class:`zhrag.graph.context.Context`; evaluation adds :class:`EvalSettings`, bound into the
metric nodes when it builds them (``zhrag.evaluation.scorers.metric_terminal_nodes``) and recorded beside the
context in a run folder's ``run.json``. The evaluation judge (official grader, RAGAS) is unrelated to the A2
relevance judge (``Context.judge_model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zhrag import settings
from zhrag.errors import ConfigError

#: Graders of the evaluation: offline rules, or the official prompt sent to the evaluation judge.
GRADERS = ("rules", "official")


@dataclass(kw_only=True, frozen=True)
class EvalSettings:
    """The grader and evaluation judge of a run (immutable); invalid values raise :class:`~zhrag.errors.ConfigError`."""

    grader: Literal["rules", "official"] = field(
        default="rules",
        metadata={
            "description": "rules (offline normalised string matching, default) or official (the Chinese-SimpleQA "
            "grading prompt sent to the evaluation judge)."
        },
    )
    eval_model: str | None = field(
        default=None,
        metadata={
            "description": "Local model used as the evaluation judge (official grader and RAGAS metrics) when no "
            "eval_base_url is given; None uses the context's model without adapter."
        },
    )
    eval_base_url: str | None = field(
        default=None,
        metadata={
            "description": "OpenAI-compatible endpoint (http://host:8000/v1) serving the evaluation judge instead "
            "of a local model; the key comes from OPENAI_API_KEY."
        },
    )
    eval_api_model: str | None = field(
        default=None, metadata={"description": "Model name the eval_base_url endpoint serves (required with it)."}
    )
    eval_embedder: str = field(
        default=settings.PACKAGED_EMBEDDER,
        metadata={
            "description": "sentence-transformers embedder for the answer-similarity part of RAGAS "
            "answer_correctness (packaged MiniLM by default, a local path, or a hub id)."
        },
    )

    def __post_init__(self) -> None:
        if self.grader not in GRADERS:
            raise ConfigError(f"unknown grader {self.grader!r}: use {' or '.join(GRADERS)}")
        if bool(self.eval_base_url) != bool(self.eval_api_model):
            raise ConfigError("eval_base_url and eval_api_model go together: give both or neither")
