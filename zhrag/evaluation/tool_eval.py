"""Tool-use validity of a model on held-out A3 traces (``zhrag eval-tools``): base model against adapter.

Each held-out trace of ``zhrag build-data --task tools`` (the ``*_eval.jsonl`` split: its paragraphs were held out
of training) is replayed turn by turn with the reference history (teacher forcing): before every assistant turn the
model sees the system prompt, the question and the trace's earlier calls and real ``qdrant-find`` results, and takes
one turn the way the a3 agent node does (:meth:`~zhrag.models.base.LLM.call_tools` with the tool spec of the
trace, the agent's token budget) but with ``tool_choice="auto"`` and no prefilled call opening, so the model alone
decides whether and how to call. Every turn is one step:

- **call** steps (the trace searched here): *well-formed* when the turn is one or more calls in the chat template's
  own format (parsed by the engine or from ``<tool_call>`` blocks), the first to ``qdrant-find`` with a non-empty
  string ``query``; *recovered* when a call could be read only from a bare JSON object; *no call* otherwise;
- **answer** steps (the trace answered here, after its last search): *stopped* when the turn calls no tool, and
  *answered* when it stops with a non-empty reply, and *contains* when that reply (cleaned like an answer) contains an
  accepted answer (rule-grader matching).

Rates come with 95 % Wilson intervals. The run is resumable like ``eval-reading`` (:mod:`zhrag.run_folder`:
``run.json``, one fsync'd JSON line per step in ``results.jsonl``); ``summary.json`` and ``report.md`` are rewritten
at the end of every run.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.evaluation.metrics import proportion
from zhrag.evaluation.reading import eval_file
from zhrag.evaluation.rule_grader import mentions_gold
from zhrag.mcp.client import FIND_TOOL
from zhrag.models import LLM, ToolReply
from zhrag.nodes.agent import AGENT_MAX_NEW_TOKENS
from zhrag.prompts import clean_answer
from zhrag.prompts.agent import call_message
from zhrag.run_folder import RESULTS_FILE, claim_run, finish_run, process_pending
from zhrag.training.card import examples_sha256
from zhrag.training.dataset import untrained_examples
from zhrag.training.examples import Example
from zhrag.training.formats import import_examples
from zhrag.training.masking import chat_message, example_tools
from zhrag.training.tool_traces import TOOLS_TASK

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
#: Version of the ``run.json`` / results layout.
RUN_FORMAT = 1


@dataclass(frozen=True)
class ToolStep:
    """One assistant turn of a held-out trace: what the model sees before it and what the trace did there.

    Attributes:
        id: ``<trace id>#<turn number>`` (1-based among the trace's assistant turns).
        trace_id: The trace's example id.
        kind: ``call`` (the trace searched here) or ``answer`` (it answered).
        turn: The turn's number among the trace's assistant turns (1: the first search).
        question: The user's question.
        messages: The OpenAI-style history before the turn (system, user, earlier calls and their results).
        tools: The trace's tool specs.
        answers: The pair's accepted answers.
    """

    id: str
    trace_id: str
    kind: str
    turn: int
    question: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    answers: tuple[str, ...]


def tool_steps(examples: Sequence[Example]) -> list[ToolStep]:
    """The assistant turns of the tool-use ``examples`` as steps, trace by trace.

    Raises:
        TrainingDataError: no tool-use example, or a trace that is not system, human, (function_call, tool)...,
            gpt, or whose ``tools`` or calls are not JSON.
    """
    steps = [step for example in examples if example["task"] == TOOLS_TASK for step in _trace_steps(example)]
    if not steps:
        raise TrainingDataError("no tool-use examples to evaluate (build them with zhrag build-data --task tools)")
    return steps


def _trace_steps(example: Example) -> list[ToolStep]:
    turns = example["conversations"]
    roles = [turn["from"] for turn in turns]
    searches = (len(roles) - 3) // 2
    expected = ["system", "human", *(["function_call", "tool"] * searches), "gpt"]
    if searches < 1 or roles != expected:
        raise TrainingDataError(f"example {example['id']!r}: not a tool trace (turns {roles})")
    tools = example_tools(example)
    if not tools:
        raise TrainingDataError(f"example {example['id']!r}: 'tools' is not a JSON list of function specs")
    question = turns[1]["value"]
    answers = tuple(str(a) for a in example["meta"].get("answers") or [turns[-1]["value"]])
    messages: list[dict[str, Any]] = [{"role": "system", "content": turns[0]["value"]},
                                      {"role": "user", "content": question}]
    steps = []
    for number in range(1, searches + 2):
        kind = "call" if number <= searches else "answer"
        steps.append(ToolStep(f"{example['id']}#{number}", example["id"], kind, number, question, list(messages),
                              list(tools), answers))
        if kind == "call":
            try:  # the training path's reading of the call, then with an id and JSON arguments as the agent sends
                [call] = chat_message(turns[2 * number])["tool_calls"]
            except TrainingDataError as error:
                raise TrainingDataError(f"example {example['id']!r}: {error}") from None
            call_id = f"call_{number}"
            messages += [
                call_message([(call_id, call["function"]["name"], call["function"]["arguments"])]),
                {"role": "tool", "tool_call_id": call_id, "content": turns[2 * number + 1]["value"]},
            ]
    return steps


def score_step(step: ToolStep, reply: ToolReply) -> dict[str, Any]:
    """What the model's turn was worth at ``step`` (see the module text)."""
    calls = list(reply.calls)
    first = calls[0] if calls else None
    query = first.arguments.get("query") if first is not None else None
    record: dict[str, Any] = {
        "called": bool(calls),
        "calls": [{"name": c.name, "arguments": c.arguments, "well_formed": c.well_formed} for c in calls],
    }
    if step.kind == "call":
        record["well_formed"] = bool(
            first is not None and all(c.well_formed for c in calls) and first.name == FIND_TOOL
            and isinstance(query, str) and bool(query.strip())
        )
        record["recovered"] = bool(calls) and not all(c.well_formed for c in calls)
    else:
        answer = clean_answer(reply.content, step.question)
        record["stopped"] = not calls
        record["answered"] = not calls and bool(reply.content.strip())
        record["answer"] = answer
        record["contains"] = not calls and bool(answer) and any(mentions_gold(gold, answer) for gold in step.answers)
    return record


@dataclass(frozen=True)
class ToolTraces:
    """The traces ``eval-tools`` replays: their file, the tool-use examples, and what ``run.json`` records of them."""

    path: Path
    examples: list[Example]
    record: dict[str, Any]


def load_traces(data: str | Path, *, untrained_by: str | Path | None = None) -> ToolTraces:
    """The held-out tool traces of ``data``, or with ``untrained_by`` the training split's traces that adapter folder
    did not train on, nor their paragraphs (:func:`~zhrag.training.dataset.untrained_examples`): more traces than the
    held-out split has, for the base model and the adapter alike.

    Raises:
        TrainingDataError: unreadable data, no tool-use traces, or an adapter not trained on ``data``.
    """
    if untrained_by is None:
        path = eval_file(data)
        examples = [example for example in import_examples(path) if example["task"] == TOOLS_TASK]
        extra: dict[str, Any] = {}
    else:
        untrained = untrained_examples(data, TOOLS_TASK, untrained_by)
        path, examples = untrained.path, untrained.examples
        extra = {"untrained_by": str(Path(untrained_by).expanduser().resolve()),
                 "left_out": {"trained": untrained.trained, "same_paragraph": untrained.same_paragraph}}
    tool_steps(examples)  # refuses data without tool traces, or with a broken one, before a model loads
    record = {"path": str(path.resolve()), "tool_examples_sha256": examples_sha256(examples), **extra}
    return ToolTraces(path, examples, record)


def evaluate_tools(
    llm: LLM,
    traces: ToolTraces,
    out: str | Path,
    *,
    model: Mapping[str, Any],
    limit: int | None = None,
    max_new_tokens: int = AGENT_MAX_NEW_TOKENS,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Replay ``traces`` (:func:`load_traces`) with ``llm`` turn by turn, score every turn, write the run ``out``.

    Args:
        llm: The agent model (adapter attached); it calls tools as the a3 agent node does (a model without a chat
            template in ChatML text).
        traces: The traces to replay.
        out: Run folder: ``run.json``, ``results.jsonl``, ``summary.json``, ``report.md``.
        model: What ``run.json`` records about the model (name, adapter identity).
        limit: Only the first ``limit`` traces (a larger limit later extends the same run).
        max_new_tokens: Generation budget of a turn (the agent node's).
        force: Start afresh when ``out`` holds a run with other settings (its files are moved to
            ``replaced-<time>/``).
        progress: Show a progress bar.

    Raises:
        ConfigError: bad ``limit``, or ``out`` holds another run and not ``force``.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    steps = tool_steps(traces.examples[:limit])
    out = Path(out)
    run_settings = {
        "format": RUN_FORMAT,
        "data": traces.record,
        "model": json.loads(json.dumps(dict(model))),
        "max_new_tokens": max_new_tokens,
        "tool_choice": "auto",
    }
    claim_run(out, run_settings, force, kind="tool-use", files=(RESULTS_FILE, SUMMARY_FILE, REPORT_FILE))

    def run(batch: list[ToolStep]) -> list[ToolReply]:
        return [llm.call_tools(step.messages, step.tools, max_new_tokens=max_new_tokens, tool_choice="auto")
                for step in batch]

    def to_record(step: ToolStep, reply: ToolReply, ms: float) -> dict[str, Any]:
        return {"id": step.id, "trace_id": step.trace_id, "kind": step.kind, "turn": step.turn,
                "answers": list(step.answers), "raw": reply.content, **score_step(step, reply), "ms": round(ms, 1)}

    records = process_pending(steps, out / RESULTS_FILE, run, to_record, batch_size=1, desc="tool turns",
                              progress=progress)
    summary = summarize(records, run_settings)
    write_reports(summary, out)
    finish_run(out)
    return summary


def _rate(records: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
    return proportion(sum(bool(record.get(name)) for record in records), len(records))


def summarize(records: Sequence[Mapping[str, Any]], run_settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Rates of the call and answer steps (with intervals), by turn, and of whole traces replayed right."""
    calls = [record for record in records if record["kind"] == "call"]
    answers = [record for record in records if record["kind"] == "answer"]
    by_trace: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        by_trace[record["trace_id"]].append(record)
    traces = [
        {"trace_ok": all(r["well_formed"] if r["kind"] == "call" else r["stopped"] for r in group)}
        for group in by_trace.values()
    ]
    by_turn: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for record in calls:
        by_turn[record["turn"]].append(record)
    return {
        "settings": dict(run_settings or {}),
        "traces": len(by_trace),
        "call_steps": {name: _rate(calls, name) for name in ("well_formed", "recovered", "called")},
        "answer_steps": {name: _rate(answers, name) for name in ("stopped", "answered", "contains")},
        "traces_right": _rate(traces, "trace_ok"),
        "well_formed_by_turn": {str(turn): _rate(group, "well_formed") for turn, group in sorted(by_turn.items())},
        "ms_mean": round(sum(r["ms"] for r in records) / len(records), 1) if records else None,
    }


def write_reports(summary: Mapping[str, Any], out: Path) -> Path:
    """Write ``summary.json`` and ``report.md`` into ``out``."""
    (out / SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    settings = summary.get("settings", {})
    model = settings.get("model", {})
    adapter = (model.get("adapter") or {}).get("path", "none")

    def row(label: str, stats: Mapping[str, Any]) -> str:
        interval = stats["ci95"]
        cell = f"{stats['pct']} [{interval[0]}, {interval[1]}]" if interval else "–"
        return f"| {label} | {stats['count']} / {stats['n']} | {cell} |"

    data = settings.get("data", {})
    untrained = data.get("untrained_by")
    left_out = data.get("left_out") or {}
    which = (
        f"training-split traces adapter `{untrained}` did not train on ({left_out.get('trained')} trained traces and "
        f"{left_out.get('same_paragraph')} about their paragraphs left out)" if untrained else "held-out traces"
    )
    lines = [
        "# Tool use on held-out traces" if not untrained else "# Tool use on traces the adapter did not train on",
        "",
        f"Data: `{data.get('path')}`, {which}; model: `{model.get('model')}`; adapter: `{adapter}`; "
        f"{summary['traces']} traces, replayed turn by turn with the reference history; the model decides alone "
        "(tool_choice auto, no prefilled call).",
        "",
        "Call steps: well-formed = calls in the chat template's own format, the first to qdrant-find with a query; "
        "recovered = a call read from bare JSON only, or followed by other text than the closing tag. Answer steps: "
        "stopped = no tool call; contains = the reply contains an accepted answer. [low, high]: 95 % Wilson interval.",
        "",
        "| rate | count | % [95 % CI] |",
        "|---|---|---|",
        row("call steps: well-formed call", summary["call_steps"]["well_formed"]),
        row("call steps: recovered call", summary["call_steps"]["recovered"]),
        row("call steps: any call", summary["call_steps"]["called"]),
        row("answer steps: stopped (no call)", summary["answer_steps"]["stopped"]),
        row("answer steps: stopped with an answer (no call, a non-empty reply)", summary["answer_steps"]["answered"]),
        row("answer steps: reply contains the answer", summary["answer_steps"]["contains"]),
        row("traces replayed right (every call well-formed, stops at the end)", summary["traces_right"]),
        *[row(f"turn {turn}: well-formed call", stats) for turn, stats in summary["well_formed_by_turn"].items()],
        "",
        f"Mean time per turn: {summary['ms_mean']} ms.",
    ]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
