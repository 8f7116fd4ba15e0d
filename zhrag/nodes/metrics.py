"""Terminal metric nodes: score a finished graph run against the gold answer of its input.

A metric node runs after ``answer`` (``build_graph(..., terminal_nodes=metric_terminal_nodes([...]))``
chains them) and writes its
results into ``scores``. What it computes is a *scorer* handed in when the node is built, because
the scoring code (graders, RAGAS, recall) lives in ``zhrag.evaluation``, a layer nodes may not import.
A scorer gets the sample and the run's :class:`~zhrag.graph.context.Context`; settings of its own (the
evaluation's grader and judge) are bound into it when evaluation builds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime

from zhrag.errors import ConfigError
from zhrag.graph.context import Context
from zhrag.graph.state import GraphState
from zhrag.kb.passage import Passage
from zhrag.nodes.common import require_question


@dataclass(frozen=True)
class MetricSample:
    """What a scorer sees of one finished run.

    Attributes:
        question: The question.
        gold: The gold answer (from the input's ``gold_answer``).
        answer: The graph's answer ("" when it produced none).
        contexts: Passages given to the answer node (empty for A0, or A2 with nothing relevant).
        retrieved: Passages the retrieve node returned in its last round (empty for A0).
        relevant: A2 only: passages the judge kept over all rounds.
        ran_retrieval: Whether the graph retrieved at all (False for A0).
    """

    question: str
    gold: str
    answer: str
    contexts: tuple[Passage, ...]
    retrieved: tuple[Passage, ...]
    relevant: tuple[Passage, ...]
    ran_retrieval: bool


#: A scorer turns a sample and the run context into score entries (merged into ``scores``).
Scorer = Callable[[MetricSample, Context], Mapping[str, Any]]
#: A terminal metric node, as :func:`metric_node` builds it.
MetricNode = Callable[[GraphState, Runtime[Context]], dict[str, Any]]


def metric_sample(state: GraphState, metric: str) -> MetricSample:
    """The ``MetricSample`` of a finished run's state.

    Raises:
        ConfigError: the question is empty, or the input had no ``gold_answer`` (named with ``metric``).
    """
    question = require_question(state)
    gold = state.get("gold_answer")
    if not isinstance(gold, str) or not gold.strip():
        raise ConfigError(f"metric {metric!r} needs a non-empty gold_answer in the graph input")
    return MetricSample(
        question=question,
        gold=gold.strip(),
        answer=state.get("answer") or "",
        contexts=tuple(state.get("contexts") or ()),
        retrieved=tuple(state.get("retrieved") or ()),
        relevant=tuple(state.get("relevant") or ()),
        ran_retrieval=bool(state.get("queries")),
    )


def metric_node(name: str, scorer: Scorer) -> MetricNode:
    """A terminal node named ``name`` that writes ``{"scores": scorer(sample, runtime.context)}``.

    Scorers decide how they fail: optional scores (RAGAS) record ``None`` with a reason, while a
    grade that cannot be computed raises, since every evaluated answer needs one.
    """

    def node(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
        return {"scores": dict(scorer(metric_sample(state, name), runtime.context))}

    node.__name__ = f"{name}_metric"
    node.__doc__ = f"Terminal metric node {name!r}: score the finished run against its gold answer."
    return node
