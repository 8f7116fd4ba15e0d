"""One builder for the three graph variants of the ablation.

```
A0:  START → answer → [terminal nodes] → END
A1:  START → retrieve → answer → [terminal nodes] → END
A2:  START → retrieve → judge ─┬─(relevant found, or requeries == max)→ answer → [terminal nodes] → END
                  ↑            └─(nothing relevant, requeries < max)→ requery ─┘
```

Building is cheap: models and the MCP client are loaded lazily inside the nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from zhrag.errors import ConfigError
from zhrag.graph.context import Context
from zhrag.graph.state import GraphState, InputState
from zhrag.nodes.answer import answer
from zhrag.nodes.common import timed
from zhrag.nodes.judge import judge
from zhrag.nodes.requery import requery
from zhrag.nodes.retrieve import retrieve

#: The graph variants, in ablation order.
VARIANTS = ("a0", "a1", "a2")


def route_after_judge(state: GraphState, runtime: Runtime[Context]) -> Literal["answer", "requery"]:
    """A2 branch: answer when something relevant was found or the requery budget is spent, else requery."""
    if state.get("relevant") or state.get("requeries", 0) >= runtime.context.max_requeries:
        return "answer"
    return "requery"


def build_graph(
    variant: str,
    *,
    terminal_nodes: Sequence[tuple[str, Callable[..., Any]]] = (),
    metrics: Sequence[str] = (),
) -> CompiledStateGraph:
    """Compile variant ``a0``, ``a1`` or ``a2`` (case-insensitive).

    ``metrics`` names evaluation metrics (``grade``, ``faithfulness``, ``answer_correctness``,
    ``retrieval``; see ``zhrag.evaluation.scorers``) run as terminal nodes of the same names; they
    read ``gold_answer`` from the input and write ``scores``. ``terminal_nodes`` are further
    ``(name, node)`` pairs. All run in order after ``answer``, metrics first, each with its wall time
    recorded in ``timings_ms`` like the built-in nodes. Raises ``ConfigError`` for an unknown variant
    or metric, or a terminal node name that is taken or reserved.
    """
    key = variant.strip().lower() if isinstance(variant, str) else ""
    if key not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    if metrics:
        # Imported here: the evaluation code (graders, RAGAS glue) is only needed by evaluation graphs.
        from zhrag.evaluation.scorers import metric_terminal_nodes

        terminal_nodes = [*metric_terminal_nodes(metrics), *terminal_nodes]
    graph = StateGraph(GraphState, context_schema=Context, input_schema=InputState)
    graph.add_node("answer", answer)
    if key == "a0":
        graph.add_edge(START, "answer")
    else:
        graph.add_node("retrieve", retrieve)
        graph.add_edge(START, "retrieve")
        if key == "a1":
            graph.add_edge("retrieve", "answer")
        else:
            graph.add_node("judge", judge)
            graph.add_node("requery", requery)
            graph.add_edge("retrieve", "judge")
            graph.add_conditional_edges("judge", route_after_judge, ["answer", "requery"])
            graph.add_edge("requery", "retrieve")
    previous = "answer"
    for name, node in terminal_nodes:
        try:
            graph.add_node(name, timed(name)(node))
        except ValueError as error:
            raise ConfigError(f"bad terminal node name {name!r}: {error}") from None
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph.compile(name=f"zhrag-{key}")


a0 = build_graph("a0")
a1 = build_graph("a1")
a2 = build_graph("a2")
