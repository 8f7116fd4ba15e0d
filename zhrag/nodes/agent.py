"""A3 nodes: the model decides itself whether and what to search (``qdrant-find`` as a tool), then the answer node
answers from what it found.

``agent`` runs one assistant turn with the MCP tool bound (its spec as the knowledge server publishes it, reduced
to the ``query`` argument); ``tools`` runs the calls of that turn over the same long-lived MCP session as A1/A2's
``retrieve``. The graph loops agent → tools → agent until the agent stops calling tools or ``max_tool_rounds``
rounds have run; every call and its result stay in the state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.runtime import Runtime

from zhrag.graph.context import Context
from zhrag.graph.state import GraphState
from zhrag.kb.evidence import query_bigrams, with_evidence
from zhrag.kb.passage import Passage
from zhrag.mcp.client import FIND_TOOL
from zhrag.nodes import retrieve
from zhrag.nodes.common import answer_llm, require_question, timed
from zhrag.prompts.agent import agent_messages, call_message, format_passages

#: Generation budget of one agent turn (a tool call or a short final reply).
AGENT_MAX_NEW_TOKENS = 96
#: Tool calls of one turn that are run (further ones are dropped).
MAX_CALLS_PER_TURN = 2
#: Longest query the agent may send (longer ones are cut).
MAX_AGENT_QUERY_CHARS = 200


def agent_record(state: Mapping[str, Any]) -> dict[str, Any]:
    """What an A3 run adds to its CLI / evaluation record: the tool calls, rounds and the agent's final text."""
    return {"tool_calls": state.get("tool_calls", []), "tool_rounds": state.get("tool_rounds", 0),
            "agent_reply": state.get("agent_reply")}


def find_tool_spec(client: Any) -> dict[str, Any]:
    """``qdrant-find`` as an OpenAI function spec, as the knowledge server describes it, with only ``query``."""
    spec = client.openai_tool(FIND_TOOL)
    function = dict(spec["function"])
    parameters = dict(function.get("parameters") or {})
    properties = {name: value for name, value in (parameters.get("properties") or {}).items() if name == "query"}
    function["parameters"] = {"type": "object", "properties": properties, "required": ["query"]}
    return {"type": "function", "function": function}


@timed("agent")
def agent(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """One agent turn: call ``qdrant-find`` (``pending_calls``) or stop (``agent_reply``); with the round budget
    spent, stop without asking the model."""
    question = require_question(state)
    context = runtime.context
    rounds = state.get("tool_rounds", 0)
    if rounds >= context.max_tool_rounds:
        return {"pending_calls": []}
    tools = [find_tool_spec(retrieve.get_knowledge_client(retrieve.server_config(context)))]
    messages = agent_messages(question, list(state.get("agent_messages", [])))
    # The first turn must search (a small model otherwise answers from memory, which is A0); later turns decide.
    choice = "required" if rounds == 0 else "auto"
    reply = answer_llm(context).call_tools(messages, tools, max_new_tokens=AGENT_MAX_NEW_TOKENS, tool_choice=choice)
    calls: list[dict[str, Any]] = [
        {"id": call.id or f"call_{rounds}_{number}", "name": call.name, "arguments": call.arguments,
         "well_formed": call.well_formed}
        for number, call in enumerate(reply.calls[:MAX_CALLS_PER_TURN])
    ]
    if not calls:
        return {"agent_messages": [{"role": "assistant", "content": reply.content}], "pending_calls": [],
                "agent_reply": reply.content}
    message = call_message([(call["id"], call["name"], call["arguments"]) for call in calls])
    return {"agent_messages": [message], "pending_calls": calls}


@timed("tools")
def tools(state: GraphState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Run the agent's pending calls; their results go back to the agent, the passages found to ``contexts``.

    Each passage's evidence window is chosen for the question rather than for the agent's query (the server picks
    it for the query): a short query such as 「九命奇冤作者」 otherwise shows the sentence about 作者 instead of
    the one naming him, to the agent and to the answer node alike.
    """
    context = runtime.context
    wanted = query_bigrams(require_question(state))
    round_number = state.get("tool_rounds", 0) + 1
    client = retrieve.get_knowledge_client(retrieve.server_config(context))
    found: list[Passage] = []
    records: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    queries: list[str] = []
    for call in state.get("pending_calls", []):
        record = {"round": round_number, "name": call["name"], "arguments": call["arguments"],
                  "well_formed": call["well_formed"]}
        query = call["arguments"].get("query")
        if call["name"] != FIND_TOOL:
            record["error"] = f"unknown tool {call['name']!r}"
            content = f"错误：没有工具 {call['name']}，只能调用 {FIND_TOOL}。"
        elif not isinstance(query, str) or not query.strip():
            record["error"] = "no query"
            content = "错误：qdrant-find 需要参数 query（检索词）。"
        else:
            query = query.strip()[:MAX_AGENT_QUERY_CHARS]
            passages = [with_evidence(wanted, passage) for passage in client.find(query, context.top_k)]
            queries.append(query)
            found.extend(passages)
            record["passages"] = [passage["id"] for passage in passages]
            content = format_passages(passages)
        records.append(record)
        results.append({"role": "tool", "tool_call_id": call["id"], "content": content})
    merged: dict[str, Any] = {}
    for passage in [*found, *state.get("contexts", [])]:  # the latest search first
        merged.setdefault(passage["id"], passage)
    return {
        "tool_rounds": round_number,
        "pending_calls": [],
        "tool_calls": records,
        "agent_messages": results,
        "queries": queries,
        "retrieved": found,
        "contexts": list(merged.values())[: context.top_k],
    }
