"""Helpers shared by the graph nodes: wall-time recording, input validation, model selection (local or endpoint).

Nodes read their configuration from ``runtime.context`` (a ``zhrag.graph.context.Context``) by
attribute only, so this package never imports ``zhrag.graph``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

from zhrag.errors import InputError
from zhrag.models import LLM, load_endpoint_llm, load_llm
from zhrag.models.endpoint import DEFAULT_API_KEY_ENV

#: Longest question a graph accepts (Chinese-SimpleQA's are under 100 characters; qdrant-find takes 1,000).
MAX_QUESTION_CHARS = 1000

NodeFn = Callable[..., Mapping[str, Any] | None]


def timed(name: str) -> Callable[[NodeFn], NodeFn]:
    """Decorate a node so its update also carries ``{"timings_ms": {name: wall ms}}``.

    The wrapper keeps the node's signature, so LangGraph still injects ``runtime``/``config``.
    """

    def decorate(node: NodeFn) -> NodeFn:
        @functools.wraps(node)
        def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
            start = time.perf_counter()
            update = dict(node(*args, **kwargs) or {})
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            update["timings_ms"] = {**update.get("timings_ms", {}), name: elapsed_ms}
            return update

        return run

    return decorate


def require_question(state: Mapping[str, Any]) -> str:
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


def judge_endpoint(context: Any) -> str | None:
    """The endpoint serving the judge: ``judge_base_url``, else ``model_base_url`` when the judge is ``model``."""
    if getattr(context, "judge_base_url", None):
        return context.judge_base_url
    return getattr(context, "model_base_url", None) if context.judge_model is None else None


def answer_llm(context: Any) -> LLM:
    """The answer model of a run: ``context.model`` served by ``context.model_base_url``, or local with ``context.answer_adapter``."""
    base_url = getattr(context, "model_base_url", None)
    if base_url:
        return load_endpoint_llm(base_url, context.model, api_key_env=_api_key_env(context))
    return load_llm(
        context.model,
        adapter=context.answer_adapter,
        device=context.device,
        dtype=context.dtype,
        engine=getattr(context, "engine", "auto"),
    )


def judge_llm(context: Any) -> LLM:
    """The judge/requery model of a run: ``context.judge_model`` (or ``context.model``), from its endpoint or local with ``context.judge_adapter``."""
    base_url = judge_endpoint(context)
    if base_url:
        return load_endpoint_llm(base_url, context.judge_model or context.model, api_key_env=_api_key_env(context))
    return load_llm(
        context.judge_model or context.model,
        adapter=context.judge_adapter,
        device=context.device,
        dtype=context.dtype,
        engine=getattr(context, "engine", "auto"),
    )


def _api_key_env(context: Any) -> str:
    return getattr(context, "api_key_env", None) or DEFAULT_API_KEY_ENV
