"""One builder for the graph variants of the ablation.

```
A0:  START → answer → [terminal nodes] → END
A1:  START → retrieve → answer → [terminal nodes] → END
A2:  START → retrieve → judge ─┬─(relevant found, or requeries == max)→ answer → arbitrate → [terminal nodes] → END
                  ↑            └─(nothing relevant, requeries < max)→ requery ─┘
A3:  START → agent ─┬─(no tool call, or tool_rounds == max)→ answer → [terminal nodes] → END
               ↑    └─(qdrant-find calls)→ tools ─┘
A4:  START → planner → researcher → answerer → evaluator ─┬─(accept, or abstain: 不知道)→ [terminal nodes] → END
                           ↑                                └─(research: review_rounds < max)─┘
```

A4's roles are subgraphs with their own typed state (``zhrag.graph.state``: ``PlannerState`` …), visible in
Studio: planner (propose → plan), researcher (search → read), answerer (quote → answer → hand_over), evaluator
(check → [verify] → decide).

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
from zhrag.graph.context import MAX_REQUERIES_LIMIT, MAX_REVIEW_ROUNDS_LIMIT, MAX_TOOL_ROUNDS_LIMIT, Context
from zhrag.graph.served import ServedContext, served_context
from zhrag.graph.state import (
    AnswererInput,
    AnswererOutput,
    AnswererState,
    EvaluatorInput,
    EvaluatorOutput,
    EvaluatorState,
    GraphState,
    InputState,
    PlannerInput,
    PlannerOutput,
    PlannerState,
    ResearcherInput,
    ResearcherOutput,
    ResearcherState,
)
from zhrag.nodes import answerer, evaluator, planner, researcher
from zhrag.nodes.agent import agent, tools
from zhrag.nodes.answer import answer
from zhrag.nodes.arbitrate import arbitrate
from zhrag.nodes.common import timed
from zhrag.nodes.judge import judge
from zhrag.nodes.requery import requery
from zhrag.nodes.retrieve import retrieve

#: The graph variants, in ablation order.
VARIANTS = ("a0", "a1", "a2", "a3", "a4")
#: A4's roles, in the order they first run.
ROLES = ("planner", "researcher", "answerer", "evaluator")


def default_context(requested: Any) -> Any:
    """The context of an in-process graph: what the caller passed, or ``Context()`` (every default) for none."""
    return Context() if requested is None else requested


def with_context(node: Callable[..., Any], resolve: Callable[[Any], Any] = default_context) -> Callable[..., Any]:
    """Run ``node`` with its runtime context resolved by ``resolve`` (defaults for none; for served graphs, the
    trust boundary of :func:`zhrag.graph.served.served_context`).

    Nodes that take no ``runtime`` are returned as they are.
    """
    if "runtime" not in inspect.signature(node).parameters:
        return node

    @functools.wraps(node)
    def run(state: Any, runtime: Runtime[Context]) -> Any:
        context = resolve(runtime.context)
        if context is not runtime.context:
            runtime = runtime.override(context=context)
        return node(state, runtime)

    return run


def route_after_judge(state: GraphState, runtime: Runtime[Context]) -> Literal["answer", "requery"]:
    """A2 branch: answer when something relevant was found or the requery budget is spent, else requery."""
    if state.get("relevant") or state.get("requeries", 0) >= runtime.context.max_requeries:
        return "answer"
    return "requery"


def route_after_agent(state: GraphState) -> Literal["answer", "tools"]:
    """A3 branch: run the agent's tool calls, or answer when it made none (the agent stops at its round budget)."""
    return "tools" if state.get("pending_calls") else "answer"


def build_roles(bind: Callable[[Callable[..., Any]], Callable[..., Any]], context_schema: type) -> dict[str, Any]:
    """A4's four roles, each compiled as a subgraph over its own state with its input and output schemas."""
    graphs: dict[str, Any] = {}
    specs: list[tuple[str, type, type, type, list[tuple[str, Callable[..., Any]]]]] = [
        ("planner", PlannerState, PlannerInput, PlannerOutput, [("propose", planner.propose), ("plan", planner.plan)]),
        ("researcher", ResearcherState, ResearcherInput, ResearcherOutput,
         [("search", researcher.search), ("read", researcher.read)]),
        ("answerer", AnswererState, AnswererInput, AnswererOutput,
         [("quote", answerer.quote), ("answer", answer), ("hand_over", answerer.hand_over)]),
    ]
    for role, state, input_schema, output_schema, nodes in specs:
        graph: StateGraph[Any, Any, Any, Any] = StateGraph(state, context_schema=context_schema, input_schema=input_schema,
                           output_schema=output_schema)
        previous = START
        for name, node in nodes:
            graph.add_node(name, bind(node))
            graph.add_edge(previous, name)
            previous = name
        graph.add_edge(previous, END)
        graphs[role] = graph.compile(name=role)
    check: StateGraph[Any, Any, Any, Any] = StateGraph(EvaluatorState, context_schema=context_schema, input_schema=EvaluatorInput,
                       output_schema=EvaluatorOutput)
    for name, node in (("check", evaluator.check), ("verify", evaluator.verify), ("decide", evaluator.decide)):
        check.add_node(name, bind(node))
    check.add_edge(START, "check")
    check.add_conditional_edges("check", evaluator.route_after_check, ["verify", "decide"])
    check.add_edge("verify", "decide")
    check.add_edge("decide", END)
    graphs["evaluator"] = check.compile(name="evaluator")
    return graphs


def build_graph(
    variant: str, *, terminal_nodes: Sequence[tuple[str, Callable[..., Any]]] = (), served: bool = False
) -> CompiledStateGraph[GraphState, Any, InputState, GraphState]:
    """Compile variant ``a0``, ``a1``, ``a2``, ``a3`` or ``a4`` (case-insensitive).

    ``served=True`` builds the graph for remote callers (langgraph.json): its context schema is
    :class:`~zhrag.graph.served.ServedContext`, and each run's context passes the trust boundary of
    :func:`~zhrag.graph.served.served_context` (callers set only the variant knobs and choose among the models
    the operator allows; paths, endpoints and key names stay the operator's). In-process graphs take any
    :class:`Context`.

    ``terminal_nodes`` are ``(name, node)`` pairs run in order after ``answer``, each with its wall time
    recorded in ``timings_ms`` like the built-in nodes. Evaluation passes its metric nodes here
    (``zhrag.evaluation.scorers.metric_terminal_nodes``): the graph itself imports no evaluation code.
    Raises ``ConfigError`` for an unknown variant or a terminal node name that is taken or reserved.
    """
    key = variant.strip().lower() if isinstance(variant, str) else ""
    if key not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    resolve = served_context if served else default_context

    def bind(node: Callable[..., Any]) -> Callable[..., Any]:
        return with_context(node, resolve)

    context_schema = ServedContext if served else Context
    graph = StateGraph(GraphState, context_schema=context_schema, input_schema=InputState)
    first_terminal = terminal_nodes[0][0] if terminal_nodes else END
    if key == "a4":
        roles = build_roles(bind, context_schema)
        for role in ROLES:
            graph.add_node(role, roles[role])
        graph.add_edge(START, "planner")
        graph.add_edge("planner", "researcher")
        graph.add_edge("researcher", "answerer")
        graph.add_edge("answerer", "evaluator")
        graph.add_conditional_edges(
            "evaluator", evaluator.route_after_evaluator, {"researcher": "researcher", "done": first_terminal}
        )
    else:
        graph.add_node("answer", bind(answer))
    if key == "a0":
        graph.add_edge(START, "answer")
    elif key == "a3":
        graph.add_node("agent", bind(agent))
        graph.add_node("tools", bind(tools))
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", route_after_agent, ["answer", "tools"])
        graph.add_edge("tools", "agent")
    elif key in ("a1", "a2"):
        graph.add_node("retrieve", bind(retrieve))
        graph.add_edge(START, "retrieve")
        if key == "a1":
            graph.add_edge("retrieve", "answer")
        else:
            graph.add_node("judge", bind(judge))
            graph.add_node("requery", bind(requery))
            graph.add_edge("retrieve", "judge")
            graph.add_conditional_edges("judge", bind(route_after_judge), ["answer", "requery"])
            graph.add_edge("requery", "retrieve")
    previous = None if key == "a4" else "answer"  # A4's evaluator routes to the first terminal node itself
    if key == "a2":
        graph.add_node("arbitrate", bind(arbitrate))
        graph.add_edge("answer", "arbitrate")
        previous = "arbitrate"
    reserved = set(ROLES) if key == "a4" else set()
    for name, node in terminal_nodes:
        if name in reserved:
            raise ConfigError(f"bad terminal node name {name!r}: it is a role of {key}")
        try:
            graph.add_node(name, timed(name)(bind(node)))
        except ValueError as error:
            raise ConfigError(f"bad terminal node name {name!r}: {error}") from None
        if previous is not None:
            graph.add_edge(previous, name)
        previous = name
    if previous is not None:
        graph.add_edge(previous, END)
    # Steps of the longest run: retrieve, judge, (requery, retrieve, judge) per rewrite, answer, arbitrate, terminal
    # nodes.
    # Set explicitly, so that a lower default (LANGGRAPH_DEFAULT_RECURSION_LIMIT) never cuts a bounded A2 loop.
    # A3's longest run (agent, tools per round, agent, answer) is shorter.
    # A4's: planner, then researcher, answerer, evaluator per round (each subgraph counts its own steps).
    longest = max(3 * (MAX_REQUERIES_LIMIT + 1) + 1, 2 * MAX_TOOL_ROUNDS_LIMIT + 1, 1 + 3 * (MAX_REVIEW_ROUNDS_LIMIT + 1))
    steps = longest + len(terminal_nodes) + 2
    return graph.compile(name=f"zhrag-{key}").with_config(recursion_limit=steps)


#: The graphs langgraph.json serves (LangGraph Studio, ``langgraph dev``): remote callers' contexts pass the trust
#: boundary. Python code that sets paths or endpoints builds its own with ``build_graph(variant)``.
a0 = build_graph("a0", served=True)
a1 = build_graph("a1", served=True)
a2 = build_graph("a2", served=True)
a3 = build_graph("a3", served=True)
a4 = build_graph("a4", served=True)
