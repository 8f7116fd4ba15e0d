"""The evaluation metrics as terminal graph nodes: ``grade``, ``faithfulness``, ``answer_correctness``, ``retrieval``.

Each scorer turns a finished run (``zhrag.nodes.metrics.MetricSample``), with the run's context and the
evaluation's settings (:class:`~zhrag.evaluation.eval_settings.EvalSettings`, bound in when
:func:`metric_terminal_nodes` builds the nodes), into ``scores`` entries:

- ``grade``: ``{"grade": "CORRECT" | "INCORRECT" | "NOT_ATTEMPTED", "grader": "rules" | "official"}``,
  plus ``"grade_raw"`` (the judge's reply) for the official grader. A judge failure raises: every
  evaluated answer needs a grade.
- ``faithfulness`` / ``answer_correctness``: ``{name: float | None, name + "_reason": str | None}``
  (RAGAS, see ``ragas_metrics``); ``None`` with a reason when the score is undefined or failed.
- ``strings``: ``{"string_presence": float, "string_similarity": float}``, RAGAS's judge-free string metrics of
  the answer against the gold answer (``ragas_metrics.string_scores``); computed offline for every answer.
- ``retrieval``: ``{"recall_retrieved": bool | None, "recall_kept": bool | None}``: does the gold
  answer appear in the retrieved passages / in the passages given to the answer node. ``None`` for
  A0 (no retrieval). "Retrieved" is the last retrieval round plus every passage A2's judge kept in
  earlier rounds (passages rejected in earlier rounds are not kept in the graph state).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from zhrag.errors import ConfigError
from zhrag.evaluation import ragas_metrics
from zhrag.evaluation.eval_settings import EvalSettings
from zhrag.evaluation.judges import grading_judge, ragas_embedder, ragas_judge
from zhrag.evaluation.official_grader import OfficialGrader
from zhrag.evaluation.retrieval_metrics import answer_recall, passage_text
from zhrag.evaluation.rule_grader import grade_by_rules
from zhrag.graph.context import Context
from zhrag.kb.passage import Passage
from zhrag.nodes.metrics import MetricNode, MetricSample, Scorer, metric_node

#: A scorer of the evaluation: a :data:`zhrag.nodes.metrics.Scorer` that also takes the evaluation's settings.
EvalScorer = Callable[[MetricSample, Context, EvalSettings], Mapping[str, Any]]


def grade_scores(sample: MetricSample, context: Context, evaluation: EvalSettings) -> dict[str, Any]:
    """Grade the answer with the rule grader or, for ``evaluation.grader == "official"``, the official grader."""
    if evaluation.grader == "official":
        grader = OfficialGrader(grading_judge(context, evaluation))
        grade, raw = grader.grade_with_output(sample.question, sample.gold, sample.answer)
        return {"grade": grade.value, "grader": "official", "grade_raw": raw}
    return {"grade": grade_by_rules(sample.question, sample.gold, sample.answer).value, "grader": "rules"}


def faithfulness_scores(sample: MetricSample, context: Context, evaluation: EvalSettings) -> dict[str, Any]:
    """RAGAS faithfulness of the answer to the passages it was given.

    Not applicable (``None``) with reason "no context" when the answer node got no passage (A0, or
    A2 with nothing relevant), and "empty answer" when there is no answer.
    """
    if not sample.contexts:
        return {"faithfulness": None, "faithfulness_reason": "no context"}
    if not sample.answer.strip():
        return {"faithfulness": None, "faithfulness_reason": "empty answer"}
    texts = [passage_text(passage) for passage in sample.contexts]
    value, reason = ragas_metrics.faithfulness(sample.question, sample.answer, texts, ragas_judge(context, evaluation))
    return {"faithfulness": value, "faithfulness_reason": reason}


def answer_correctness_scores(sample: MetricSample, context: Context, evaluation: EvalSettings) -> dict[str, Any]:
    """RAGAS answer correctness against the gold answer (``None``, "empty answer" without an answer)."""
    if not sample.answer.strip():
        return {"answer_correctness": None, "answer_correctness_reason": "empty answer"}
    value, reason = ragas_metrics.answer_correctness(
        sample.question, sample.answer, sample.gold, ragas_judge(context, evaluation), ragas_embedder(context, evaluation)
    )
    return {"answer_correctness": value, "answer_correctness_reason": reason}


def string_metric_scores(sample: MetricSample, context: Context, evaluation: EvalSettings) -> dict[str, Any]:
    """RAGAS string presence and non-LLM string similarity of the answer against the gold answer."""
    del context, evaluation
    ragas_metrics.require_ragas()
    return ragas_metrics.string_scores(sample.answer, sample.gold)


def _unique(passages: Iterable[Passage]) -> list[Passage]:
    return list({passage["id"]: passage for passage in passages}.values())


def retrieval_scores(sample: MetricSample, context: Context, evaluation: EvalSettings) -> dict[str, Any]:
    """Whether the gold answer is in the retrieved and in the kept passages (``None`` for A0)."""
    del context, evaluation
    if not sample.ran_retrieval:
        return {"recall_retrieved": None, "recall_kept": None}
    return {
        "recall_retrieved": answer_recall(sample.gold, _unique([*sample.retrieved, *sample.relevant])),
        "recall_kept": answer_recall(sample.gold, sample.contexts),
    }


#: Metric name → scorer, in the order metrics are usually listed.
SCORERS: Mapping[str, EvalScorer] = {
    "grade": grade_scores,
    "faithfulness": faithfulness_scores,
    "answer_correctness": answer_correctness_scores,
    "strings": string_metric_scores,
    "retrieval": retrieval_scores,
}


def metric_terminal_nodes(
    metrics: Sequence[str], evaluation: EvalSettings | None = None
) -> list[tuple[str, MetricNode]]:
    """``(name, node)`` pairs for ``build_graph``'s terminal nodes, one per metric, in the given order.

    Each node's scorer gets the run's context and ``evaluation`` (default: ``EvalSettings()``, the rule grader).

    Raises:
        ConfigError: an unknown metric name (the message lists the valid ones), or a metric listed twice.
    """
    unknown = [name for name in metrics if name not in SCORERS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}: use {', '.join(SCORERS)}")
    if len(set(metrics)) != len(metrics):
        raise ConfigError(f"a metric is listed twice: {', '.join(metrics)}")
    settings = evaluation or EvalSettings()
    return [(name, metric_node(name, _with_settings(SCORERS[name], settings))) for name in metrics]


def _with_settings(scorer: EvalScorer, evaluation: EvalSettings) -> Scorer:
    """``scorer`` as a metric node's :data:`~zhrag.nodes.metrics.Scorer`, with ``evaluation`` bound in."""

    def score(sample: MetricSample, context: Context) -> Mapping[str, Any]:
        return scorer(sample, context, evaluation)

    return score
