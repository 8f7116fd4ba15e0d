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

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from zhrag.errors import ConfigError
from zhrag.graph.context import MAX_REQUERIES_LIMIT, Context
from zhrag.graph.state import GraphState, InputState
from zhrag.nodes.answer import answer
from zhrag.nodes.common import timed
from zhrag.nodes.judge import judge
from zhrag.nodes.requery import requery
from zhrag.nodes.retrieve import retrieve

#: The graph variants, in ablation order.
VARIANTS = ("a0", "a1", "a2")


def with_default_context(node: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``node`` with ``Context()`` (every default) when the graph was invoked without a context.

    Nodes that take no ``runtime`` are returned as they are.
    """
    if "runtime" not in inspect.signature(node).parameters:
        return node

    @functools.wraps(node)
    def run(state: Any, runtime: Runtime[Context]) -> Any:
        if runtime.context is None:
            runtime = runtime.override(context=Context())
        return node(state, runtime)

    return run


def route_after_judge(state: GraphState, runtime: Runtime[Context]) -> Literal["answer", "requery"]:
    """A2 branch: answer when something relevant was found or the requery budget is spent, else requery."""
    context = runtime.context if runtime.context is not None else Context()
    if state.get("relevant") or state.get("requeries", 0) >= context.max_requeries:
        return "answer"
    return "requery"


def build_graph(variant: str, *, terminal_nodes: Sequence[tuple[str, Callable[..., Any]]] = ()) -> CompiledStateGraph:
    """Compile variant ``a0``, ``a1`` or ``a2`` (case-insensitive).

    ``terminal_nodes`` are ``(name, node)`` pairs run in order after ``answer``, each with its wall time
    recorded in ``timings_ms`` like the built-in nodes. Evaluation passes its metric nodes here
    (``zhrag.evaluation.scorers.metric_terminal_nodes``): the graph itself imports no evaluation code.
    Raises ``ConfigError`` for an unknown variant or a terminal node name that is taken or reserved.
    """
    key = variant.strip().lower() if isinstance(variant, str) else ""
    if key not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    graph = StateGraph(GraphState, context_schema=Context, input_schema=InputState)
    graph.add_node("answer", with_default_context(answer))
    if key == "a0":
        graph.add_edge(START, "answer")
    else:
        graph.add_node("retrieve", with_default_context(retrieve))
        graph.add_edge(START, "retrieve")
        if key == "a1":
            graph.add_edge("retrieve", "answer")
        else:
            graph.add_node("judge", with_default_context(judge))
            graph.add_node("requery", with_default_context(requery))
            graph.add_edge("retrieve", "judge")
            graph.add_conditional_edges("judge", route_after_judge, ["answer", "requery"])
            graph.add_edge("requery", "retrieve")
    previous = "answer"
    for name, node in terminal_nodes:
        try:
            graph.add_node(name, timed(name)(with_default_context(node)))
        except ValueError as error:
            raise ConfigError(f"bad terminal node name {name!r}: {error}") from None
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    # Steps of the longest run: retrieve, judge, (requery, retrieve, judge) per rewrite, answer, terminal nodes.
    # Set explicitly, so that a lower default (LANGGRAPH_DEFAULT_RECURSION_LIMIT) never cuts a bounded A2 loop.
    steps = 3 * (MAX_REQUERIES_LIMIT + 1) + len(terminal_nodes) + 2
    return graph.compile(name=f"zhrag-{key}").with_config(recursion_limit=steps)


a0 = build_graph("a0")
a1 = build_graph("a1")
a2 = build_graph("a2")
