"""Tool-use training traces for the A3 agent, from the reading-comprehension pairs over the knowledge base.

A trace is the conversation the a3 graph holds with the model, in ShareGPT form with LLaMA-Factory's tool roles::

    system (the agent's instructions) · human (the question)
    function_call {"name": "qdrant-find", "arguments": {"query": ...}} · tool (the passages, as a3 shows them)
    [function_call · tool]  (a rewritten query, when the first search missed the paragraph)
    gpt (the short answer)

Searches go through the real ``qdrant-find`` (a :class:`~zhrag.mcp.client.KnowledgeClient`), so the tool results
are what the agent will read when it runs; the tool spec in each example's ``tools`` column is the one the server
publishes, reduced as the agent node reduces it. The first query is the question itself, later ones A2's
deterministic keyword rewrites (:func:`zhrag.nodes.requery.fallback_queries`).

Checks, cheapest first; the first failed one is the trace's reason and the trace is kept among the rejected ones:

- ``answer_not_visible``: the pair's answer is in no chunk of its paragraph as the prompts show it (checked
  before any search; its record holds only the system and question turns);
- ``answer_not_retrieved``: no search within ``max_rounds`` returned the paragraph with the answer in view;
- ``judge_rejected``: the judge model (``check``) scores that passage below the threshold for the question.

Pairs are split by paragraph as the other training data is (held-out paragraphs form the eval split).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from zhrag.errors import TrainingDataError
from zhrag.kb.evidence import query_bigrams, with_evidence
from zhrag.kb.passage import Passage
from zhrag.kb.sources import Document
from zhrag.mcp.client import FIND_TOOL
from zhrag.nodes.requery import next_query
from zhrag.prompts.agent import AGENT_SYSTEM, PASSAGE_CHARS, format_passages
from zhrag.rc_pairs import RCPair, held_out_groups
from zhrag.training.examples import (
    DEFAULT_EVAL_FRACTION,
    Example,
    ExampleSplits,
    Turn,
    document_id,
    document_passages,
    mentions,
)

#: Task name of tool-use examples.
TOOLS_TASK = "tools"
#: Searches per trace, at most (the a3 default ``max_tool_rounds``).
DEFAULT_ROUNDS = 2
#: Passages per search (the graphs' default ``top_k``).
DEFAULT_TOP_K = 3

#: ``search(query, top_k) -> passages`` (``KnowledgeClient.find``).
Search = Callable[[str, int], Sequence[Passage]]
#: ``check(question, passages) -> judge scores`` in [0, 1], one per passage.
Check = Callable[[str, Sequence[Mapping[str, Any]]], Sequence[float]]


def build_tool_traces(
    pairs: Iterable[RCPair],
    documents: Mapping[str, Document],
    search: Search,
    tool_spec: Mapping[str, Any],
    *,
    check: Check | None = None,
    threshold: float = 0.5,
    max_rounds: int = DEFAULT_ROUNDS,
    top_k: int = DEFAULT_TOP_K,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    seed: int = 0,
    progress: bool = False,
) -> tuple[ExampleSplits, list[dict[str, Any]]]:
    """Accepted traces split by paragraph, and the rejected ones as ``{"id", "reason", "conversations", "meta"}``.

    Pairs with an empty question or no answer, or whose paragraph is not in ``documents``, are counted in the
    splits' ``skipped`` and produce no trace.

    Raises:
        TrainingDataError: ``max_rounds`` or ``top_k`` below 1.
    """
    if max_rounds < 1 or top_k < 1:
        raise TrainingDataError(f"max_rounds and top_k must be >= 1, got {max_rounds} and {top_k}")
    pairs = list(pairs)
    held_out = held_out_groups((p.passage_id for p in pairs if p.passage_id in documents), eval_fraction, seed)
    splits = ExampleSplits(eval_groups=sorted(held_out))
    rejected: list[dict[str, Any]] = []
    tools = json.dumps([tool_spec], ensure_ascii=False)
    for pair in tqdm(pairs, desc="tool traces", unit="pair", disable=not progress):
        if not pair.question or not pair.answers:
            splits.skipped["empty_question_or_answer"] += 1
            continue
        if pair.passage_id not in documents:
            splits.skipped["passage_not_in_kb"] += 1
            continue
        split = "eval" if pair.passage_id in held_out else "train"
        meta: dict[str, Any] = {"source": f"rc:{pair.source}" if pair.source else "rc", "question_id": pair.id,
                                "passage_id": pair.passage_id, "split": split, "answers": list(pair.answers)}
        wanted = query_bigrams(pair.question)
        chunks = document_passages(documents[pair.passage_id])
        if not any(mentions(pair.answers[0], _shown(with_evidence(wanted, chunk))) for chunk in chunks):
            turns: list[Turn] = [{"from": "system", "value": AGENT_SYSTEM}, {"from": "human", "value": pair.question}]
            rejected.append({"id": f"{pair.id}/tools", "reason": "answer_not_visible", "conversations": turns,
                             "meta": meta})
            continue  # no search can show the answer
        turns, found, queries = _search_rounds(pair, wanted, search, max_rounds, top_k)
        meta["queries"] = queries
        reason = None
        if found is None:
            reason = "answer_not_retrieved"
        elif check is not None:
            score = float(check(pair.question, [found])[0])
            meta["judge_score"] = round(score, 4)
            if score < threshold:
                reason = "judge_rejected"
        if reason is not None or found is None:  # (found is None has its reason)
            rejected.append({"id": f"{pair.id}/tools", "reason": reason, "conversations": turns, "meta": meta})
            continue
        meta["found_passage_id"] = found["id"]
        example = Example(
            id=f"{pair.id}/tools",
            task=TOOLS_TASK,
            conversations=[*turns, {"from": "gpt", "value": pair.answers[0]}],
            meta=meta,
            tools=tools,
        )
        (splits.eval if split == "eval" else splits.train).append(example)
    splits.skipped.update(record["reason"] for record in rejected)
    return splits, rejected


def _search_rounds(
    pair: RCPair, wanted: set[str], search: Search, max_rounds: int, top_k: int
) -> tuple[list[Turn], Passage | None, list[str]]:
    """The conversation up to the last search, the passage that shows the answer (or ``None``), the queries.

    ``wanted``: the question's bigrams, which choose each passage's evidence window as the a3 tools node does.
    """
    turns: list[Turn] = [{"from": "system", "value": AGENT_SYSTEM}, {"from": "human", "value": pair.question}]
    queries: list[str] = []
    for _ in range(max_rounds):
        query = next_query(pair.question, pair.question if not queries else "", queries)
        queries.append(query)
        passages = [with_evidence(wanted, passage) for passage in search(query, top_k)]
        call = {"name": FIND_TOOL, "arguments": {"query": query}}
        turns += [{"from": "function_call", "value": json.dumps(call, ensure_ascii=False)},
                  {"from": "tool", "value": format_passages(passages)}]
        found = next(
            (p for p in passages if document_id(p) == pair.passage_id and mentions(pair.answers[0], _shown(p))),
            None,
        )
        if found is not None:
            return turns, found, queries
    return turns, None, queries


def _shown(passage: Mapping[str, Any]) -> str:
    """What the agent reads of a passage (see :func:`zhrag.prompts.agent.format_passages`)."""
    return str(passage.get("evidence") or passage.get("text") or "")[:PASSAGE_CHARS]
