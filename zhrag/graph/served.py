"""Served graphs: the run-context trust boundary.

Graphs served through langgraph.json (LangGraph Studio, `langgraph dev`, any LangGraph server) receive their
context from whoever calls the API. Callers may set the variant knobs of :data:`CALLER_FIELDS` and choose a model
among those the operator allows; every other field (endpoint URLs, the name of the environment variable holding an
API key, adapters, storage paths and engines, embedders, devices) comes from the operator only: the process
environment and, optionally, the JSON file named by ``ZHRAG_SERVED_CONTEXT``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import field, fields, make_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from zhrag.errors import ConfigError, RunContextError
from zhrag.graph.context import MODEL_ROLES, Context

#: Context fields a remote caller of a served graph may set, with the JSON types each accepts.
_CALLER_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "judge_model": (str,),
    "planner_model": (str,),
    "evaluator_model": (str,),
    "max_new_tokens": (int,),
    "top_k": (int,),
    "max_requeries": (int,),
    "max_tool_rounds": (int,),
    "max_review_rounds": (int,),
    "quote_threshold": (float, int),
    "evaluator_threshold": (float, int),
    "stated_threshold": (float, int),
    "judge_threshold": (float, int),
    "a2_fallback": (str,),
    "a2_arbiter": (str,),
    "a2_candidates": (str,),
    "arbiter_stated_score": (float, int),
    "arbiter_closed_confidence": (float, int),
    "arbiter_grounded_confidence": (float, int),
    "abstain_below": (float, int),
    "collection": (str,),
    "reranker": (str,),
}
CALLER_FIELDS = tuple(_CALLER_TYPES)
#: Rerankers a caller may choose (a cross-encoder name would make the server load an arbitrary model).
CALLER_RERANKERS = ("evidence", "none")
#: Operator settings of served graphs: a JSON object of Context fields; allowlists (comma-separated) of further
#: models and collections callers may choose.
SERVED_CONTEXT_ENV = "ZHRAG_SERVED_CONTEXT"
SERVED_MODELS_ENV = "ZHRAG_SERVED_MODELS"
SERVED_COLLECTIONS_ENV = "ZHRAG_SERVED_COLLECTIONS"


def _optional_fields() -> list[tuple[str, Any, Any]]:
    hints = get_type_hints(Context)
    return [
        (item.name, hints[item.name] | None, field(default=None, metadata=item.metadata))
        for item in fields(Context)
    ]


ServedContext = make_dataclass("ServedContext", _optional_fields(), kw_only=True, frozen=True)
ServedContext.__module__ = __name__
ServedContext.__doc__ = (
    "Run context as a remote caller of a served graph sends it: every Context field, None meaning the server's "
    f"setting. Callers may set {', '.join(CALLER_FIELDS)}; any other field is refused."
)


@functools.lru_cache(maxsize=4)
def _operator_context(served_file: str | None) -> Context:
    if not served_file:
        return Context()
    path = Path(served_file).expanduser()
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{SERVED_CONTEXT_ENV}={served_file}: not a readable JSON file ({error})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{SERVED_CONTEXT_ENV}={served_file}: expected a JSON object of context fields")
    unknown = sorted(set(values) - {item.name for item in fields(Context)})
    if unknown:
        raise ConfigError(f"{SERVED_CONTEXT_ENV}={served_file}: unknown context field {unknown[0]!r}")
    return Context(**values)


def operator_context() -> Context:
    """The context served graphs run with when the caller sets nothing (environment and ZHRAG_SERVED_CONTEXT)."""
    return _operator_context(os.environ.get(SERVED_CONTEXT_ENV))


def _allowlist(env: str, *fixed: str | None) -> list[str]:
    extra = [name.strip() for name in os.environ.get(env, "").split(",") if name.strip()]
    return list(dict.fromkeys([name for name in fixed if name] + extra))


def allowed_models(operator: Context) -> list[str]:
    """Models a caller may choose: the operator's, the packaged aliases for in-process models, ZHRAG_SERVED_MODELS."""
    from zhrag.models.packaged import PACKAGED_MODELS

    local = () if operator.model_base_url else tuple(PACKAGED_MODELS)
    roles = (getattr(operator, f"{role}_model") for role in MODEL_ROLES)
    return _allowlist(SERVED_MODELS_ENV, operator.model, *roles, *local)


def served_context(requested: Any) -> Context:
    """The context a served graph runs with for what its caller sent.

    ``None`` gives the operator's context; a full :class:`Context` object comes only from in-process Python
    callers and is trusted as it is; a :class:`ServedContext` or mapping (what a remote caller sends) may set
    only :data:`CALLER_FIELDS`, with models and collections from the operator's allowlists.

    Raises:
        RunContextError: the caller set an operator field, or chose a model, collection or reranker not allowed,
            naming it.
    """
    operator = operator_context()
    if requested is None:
        return operator
    if isinstance(requested, Context):
        return requested
    if dataclasses.is_dataclass(requested) and not isinstance(requested, type):
        values = {name: value for name, value in dataclasses.asdict(requested).items() if value is not None}
    elif isinstance(requested, Mapping):
        values = {str(name): value for name, value in requested.items() if value is not None}
    else:
        raise RunContextError(f"the run context must be an object of context fields, got {type(requested).__name__}")
    refused = sorted(set(values) - set(CALLER_FIELDS))
    if refused:
        raise RunContextError(
            f"context field {refused[0]!r} is set by the server's operator, not by callers "
            f"(callers may set: {', '.join(CALLER_FIELDS)})"
        )
    for name, value in values.items():
        expected = _CALLER_TYPES[name]
        if isinstance(value, bool) or not isinstance(value, expected):
            kind = {int: "an integer", float: "a number", str: "a string"}[expected[0]]
            raise RunContextError(f"context {name} must be {kind}, got {value!r}")
    models = allowed_models(operator)
    for name in ("model", *(f"{role}_model" for role in MODEL_ROLES)):
        if name in values and values[name] not in models:
            raise RunContextError(f"context {name} {values[name]!r} is not served here: choose one of {', '.join(models)}")
    collections = _allowlist(SERVED_COLLECTIONS_ENV, operator.collection)
    if "collection" in values and values["collection"] not in collections:
        raise RunContextError(
            f"context collection {values['collection']!r} is not served here: choose one of {', '.join(collections)}"
        )
    rerankers = list(dict.fromkeys([operator.reranker, *CALLER_RERANKERS]))
    if "reranker" in values and values["reranker"] not in rerankers:
        raise RunContextError(f"context reranker {values['reranker']!r} is not served here: choose one of {', '.join(rerankers)}")
    try:
        return dataclasses.replace(operator, **values)
    except ConfigError as error:  # a value out of range
        raise RunContextError(str(error)) from None
