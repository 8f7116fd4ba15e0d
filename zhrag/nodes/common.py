"""Helpers shared by the graph nodes: wall-time recording, input validation, model selection (local or endpoint).

Nodes are typed ``(state: GraphState, runtime: Runtime[Context])``: from the graph package they import only
``zhrag.graph.state`` and ``zhrag.graph.context``, which import no node (tests/unit/test_graph.py checks it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec

from zhrag.errors import InputError
from zhrag.graph.context import Context
from zhrag.graph.state import GraphState
from zhrag.models import LLM, load_endpoint_llm, load_llm
from zhrag.models.endpoint import DEFAULT_API_KEY_ENV

#: Longest question a graph accepts (Chinese-SimpleQA's are under 100 characters; qdrant-find takes 1,000).
MAX_QUESTION_CHARS = 1000

P = ParamSpec("P")


def timed(name: str) -> Callable[[Callable[P, Mapping[str, Any] | None]], Callable[P, dict[str, Any]]]:
    """Decorate a node so its update also carries ``{"timings_ms": {name: wall ms}}``.

    The wrapper keeps the node's signature, so LangGraph still injects ``runtime``/``config``.
    """

    def decorate(node: Callable[P, Mapping[str, Any] | None]) -> Callable[P, dict[str, Any]]:
        @functools.wraps(node)
        def run(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
            start = time.perf_counter()
            update = dict(node(*args, **kwargs) or {})
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            update["timings_ms"] = {**update.get("timings_ms", {}), name: elapsed_ms}
            return update

        return run

    return decorate


def require_question(state: GraphState) -> str:
    """The stripped question of ``state``.

    Raises:
        InputError: the question is missing, not text, blank, or longer than ``MAX_QUESTION_CHARS``.
    """
    question = state.get("question")
    if question is not None and not isinstance(question, str):
        raise InputError(f"question must be text, got {type(question).__name__}")
    if not question or not question.strip():
        raise InputError("question is empty")
    question = question.strip()
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return question


def answer_llm(context: Context) -> LLM:
    """The answer model of a run: ``context.model`` served by ``context.model_base_url``, or local with ``context.answer_adapter``."""
    if context.model_base_url:
        return load_endpoint_llm(context.model_base_url, context.model, api_key_env=_api_key_env(context))
    return load_llm(
        context.model,
        adapter=context.answer_adapter,
        device=context.device,
        dtype=context.dtype,
        engine=context.engine,
    )


def judge_llm(context: Context) -> LLM:
    """The judge/requery model of a run: ``context.judge_model`` (or ``context.model``), from its endpoint
    (:attr:`Context.judge_endpoint`) or local with ``context.judge_adapter``."""
    return role_llm(context, "judge")


def role_llm(context: Context, role: str) -> LLM:
    """The model of a role (``judge``, ``planner`` or ``evaluator``): ``<role>_model`` (or ``context.model``), from
    its endpoint (:meth:`Context.role_endpoint`) or local with ``<role>_adapter``."""
    model = getattr(context, f"{role}_model") or context.model
    base_url = context.role_endpoint(role)
    if base_url:
        return load_endpoint_llm(base_url, model, api_key_env=_api_key_env(context))
    return load_llm(
        model,
        adapter=getattr(context, f"{role}_adapter"),
        device=context.device,
        dtype=context.dtype,
        engine=context.engine,
    )


def _api_key_env(context: Context) -> str:
    return context.api_key_env or DEFAULT_API_KEY_ENV
