"""Runtime context of the zhrag graph (LangGraph ``context_schema``).

The context holds everything that configures a run but is not data: which models to use, how many
passages to retrieve, where the knowledge base lives. Pass it as ``graph.invoke(input, context=Context(...))``
or, in LangGraph Studio, edit it in the assistant's context panel.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Literal, Optional, get_type_hints

from zhrag import settings
from zhrag.errors import ConfigError, RunContextError
from zhrag.models.loader import ENGINES
from zhrag.nodes.common import judge_endpoint

#: Graders of the evaluation: offline rules, or the official prompt sent to the evaluation judge.
GRADERS = ("rules", "official")
#: What A2 answers from when the judge keeps nothing within the requery budget.
A2_FALLBACKS = ("closed_book", "top_passage")
#: Judge score at or above which A2 keeps a passage: the threshold of best F1 on the training split of the
#: reading-comprehension judge examples (``zhrag eval-judge``, docs/results/judge/).
DEFAULT_JUDGE_THRESHOLD = 0.944
#: Largest answer generation budget a run may ask for.
MAX_NEW_TOKENS_LIMIT = 512
#: Most rounds of tool calls the A3 agent may be given.
MAX_TOOL_ROUNDS_LIMIT = 5
#: Most query rewrites A2 may be asked for (each costs a retrieval and top_k judge calls).
MAX_REQUERIES_LIMIT = 10


@dataclass(kw_only=True, frozen=True)
class Context:
    """Run configuration shared by all nodes (immutable: one context is shared by the threads of an evaluation).

    Attributes:
        model: Answer model: a packaged alias (``qwen2.5-coder-1.5b``, the default; ``qwen2.5-coder-0.5b``;
            ``gemma3-270m``), a ``.gguf`` file, a local HF model directory, or a hub id; with
            ``model_base_url``, the model name the endpoint serves.
        engine: How local models run: ``auto`` (llama.cpp for GGUF models without an adapter, else
            transformers), ``llama.cpp`` or ``transformers``.
        answer_adapter: Optional LoRA adapter directory loaded on top of ``model`` for answering
            (local models only).
        model_base_url: OpenAI-compatible chat endpoint (``http://host:8000/v1``; vLLM, SGLang,
            llama.cpp server, TGI) serving ``model``; ``None`` runs the model in-process.
        judge_model: Model for the A2 judge and requery nodes; ``None`` reuses ``model`` (and its
            endpoint, if any).
        judge_adapter: Optional LoRA adapter directory for the judge model (local models only).
        judge_base_url: OpenAI-compatible endpoint serving the judge model (``judge_model``, else
            ``model``); ``None`` uses ``model_base_url`` when ``judge_model`` is ``None``, else a
            local judge model.
        api_key_env: Environment variable holding the API key of the answer and judge endpoints
            (the evaluation judge's endpoint reads ``OPENAI_API_KEY``).
        device: ``cuda``, ``mps`` or ``cpu``; ``None`` picks the best available.
        dtype: ``bfloat16``, ``float16`` or ``float32``; ``None`` picks per device.
        max_new_tokens: Generation budget of the answer node (1..512).
        top_k: Passages requested from ``qdrant-find`` per retrieval round (1..50).
        max_requeries: A2 only: upper bound on query rewrites (0..10; 0 disables requerying).
        max_tool_rounds: A3 only: most rounds of tool calls the agent may make (0..5) before it must answer.
        judge_threshold: A2 only: judge score (``P(是) / (P(是) + P(否))``) at or above which a passage is kept.
        a2_fallback: A2 only: when nothing is kept within the budget, answer ``closed_book`` (default) or
            from the ``top_passage`` (the highest-scored rejected one).
        abstain_below: Answer 不知道 when the answer's confidence (geometric-mean token probability) is
            below this; ``None`` (default) never abstains.
        collection: Qdrant collection of the knowledge base; ``None``: the embedder's (:func:`zhrag.settings.default_collection`).
        qdrant_url: Qdrant server URL; ``None`` uses embedded storage at ``qdrant_path``.
        qdrant_path: Embedded Qdrant directory; ``None`` uses the default location.
        qdrant_engine: Engine of the embedded storage: ``edge`` (Qdrant Edge shards, default) or
            ``local`` (qdrant-client local mode); default ``ZHRAG_QDRANT_ENGINE``.
        mcp_url: MCP endpoint of a running knowledge server (``zhrag serve-mcp --transport streamable-http``,
            e.g. ``http://127.0.0.1:8765/mcp``; default ``ZHRAG_MCP_URL``), shared with other processes; its
            bearer token comes from ``ZHRAG_MCP_TOKEN``. ``None`` spawns a stdio server for the location above;
            with a URL, that server's own collection, store and embedder are used.
        embedder: Dense embedder for the knowledge base (default: settings.DEFAULT_EMBEDDER).
        reranker: Reranker of the retrieved candidates: ``evidence`` (offline evidence windows,
            default), ``none``, or a sentence-transformers cross-encoder name or directory.
        grader: Evaluation only: ``rules`` (offline normalised string matching, default) or
            ``official`` (the Chinese-SimpleQA grading prompt sent to the evaluation judge).
        eval_model: Evaluation only: local model used as the evaluation judge (official grader and
            RAGAS metrics) when no ``eval_base_url`` is given; ``None`` uses ``model`` without adapter.
            Unrelated to ``judge_model``, the A2 relevance judge.
        eval_base_url: Evaluation only: OpenAI-compatible endpoint (``http://host:8000/v1``) serving
            the evaluation judge instead of a local model; the key comes from ``OPENAI_API_KEY``.
        eval_api_model: Model name the ``eval_base_url`` endpoint serves (required with it).
        eval_embedder: Evaluation only: sentence-transformers embedder for the answer-similarity part
            of RAGAS ``answer_correctness`` (packaged MiniLM by default, a local path, or a hub id).
    """

    model: str = settings.DEFAULT_LLM
    engine: str = "auto"
    answer_adapter: str | None = None
    judge_model: str | None = None
    judge_adapter: str | None = None
    model_base_url: str | None = None
    judge_base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    device: str | None = None
    dtype: str | None = None
    max_new_tokens: int = 32
    top_k: int = 3
    max_requeries: int = 2
    max_tool_rounds: int = 2
    judge_threshold: float = DEFAULT_JUDGE_THRESHOLD
    a2_fallback: Literal["closed_book", "top_passage"] = "closed_book"
    abstain_below: float | None = None
    collection: str | None = None
    qdrant_url: str | None = field(default_factory=settings.qdrant_url)
    qdrant_path: str | None = None
    qdrant_engine: Literal["edge", "local"] = field(default_factory=settings.qdrant_engine)  # type: ignore[assignment]
    mcp_url: str | None = field(default_factory=settings.mcp_url)
    embedder: str = settings.DEFAULT_EMBEDDER
    reranker: str = "evidence"
    grader: Literal["rules", "official"] = "rules"
    eval_model: str | None = None
    eval_base_url: str | None = None
    eval_api_model: str | None = None
    eval_embedder: str = settings.PACKAGED_EMBEDDER

    def __post_init__(self) -> None:
        if self.collection is None:  # one collection per embedder (settings.default_collection)
            object.__setattr__(self, "collection", settings.default_collection(self.embedder))
        if not 1 <= self.top_k <= 50:
            raise ConfigError(f"top_k must be between 1 and 50, got {self.top_k}")
        if not 0 <= self.max_requeries <= MAX_REQUERIES_LIMIT:
            raise ConfigError(f"max_requeries must be between 0 and {MAX_REQUERIES_LIMIT}, got {self.max_requeries}")
        if not 0 <= self.max_tool_rounds <= MAX_TOOL_ROUNDS_LIMIT:
            raise ConfigError(f"max_tool_rounds must be between 0 and {MAX_TOOL_ROUNDS_LIMIT}, got {self.max_tool_rounds}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ConfigError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}, got {self.max_new_tokens}")
        if not 0.0 <= self.judge_threshold <= 1.0:
            raise ConfigError(f"judge_threshold must be between 0 and 1, got {self.judge_threshold}")
        if self.abstain_below is not None and not 0.0 <= self.abstain_below <= 1.0:
            raise ConfigError(f"abstain_below must be between 0 and 1, got {self.abstain_below}")
        if self.a2_fallback not in A2_FALLBACKS:
            raise ConfigError(f"unknown a2_fallback {self.a2_fallback!r}: use {' or '.join(A2_FALLBACKS)}")
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}: use {', '.join(ENGINES)}")
        if self.device not in (None, "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}: use cpu, cuda, cuda:N or mps")
        if self.dtype not in (None, "bfloat16", "float16", "float32"):
            raise ConfigError(f"unknown dtype {self.dtype!r}: use bfloat16, float16 or float32")
        if self.qdrant_engine not in settings.QDRANT_ENGINES:
            raise ConfigError(
                f"unknown Qdrant engine {self.qdrant_engine!r}: use {' or '.join(settings.QDRANT_ENGINES)}"
            )
        if self.mcp_url is not None and not str(self.mcp_url).startswith(("http://", "https://")):
            raise ConfigError(f"mcp_url must be an http:// or https:// URL, got {self.mcp_url!r}")
        if not self.reranker.strip():
            raise ConfigError("reranker must not be empty: use evidence, none or a cross-encoder name")
        if self.grader not in GRADERS:
            raise ConfigError(f"unknown grader {self.grader!r}: use {' or '.join(GRADERS)}")
        if self.model_base_url and self.answer_adapter:
            raise ConfigError("answer_adapter cannot be applied to a model served by model_base_url: give one of them")
        if judge_endpoint(self) and self.judge_adapter:
            raise ConfigError("judge_adapter cannot be applied to a judge served by an endpoint: give one of them")
        if bool(self.eval_base_url) != bool(self.eval_api_model):
            raise ConfigError("eval_base_url and eval_api_model go together: give both or neither")


# --- Served graphs: the run-context trust boundary -------------------------------------------------------------
#
# Graphs served through langgraph.json (LangGraph Studio, `langgraph dev`, any LangGraph server) receive their
# context from whoever calls the API. Callers may set the variant knobs below and choose a model among those the
# operator allows; every other field (endpoint URLs, the name of the environment variable holding an API key,
# adapters, storage paths and engines, embedders, devices, evaluation settings) comes from the operator only: the
# process environment and, optionally, the JSON file named by ZHRAG_SERVED_CONTEXT.

#: Context fields a remote caller of a served graph may set, with the JSON types each accepts.
_CALLER_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "judge_model": (str,),
    "max_new_tokens": (int,),
    "top_k": (int,),
    "max_requeries": (int,),
    "max_tool_rounds": (int,),
    "judge_threshold": (float, int),
    "a2_fallback": (str,),
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
    return [(item.name, Optional[hints[item.name]], field(default=None)) for item in fields(Context)]  # noqa: UP007


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
    return _allowlist(SERVED_MODELS_ENV, operator.model, operator.judge_model, *local)


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
    for name in ("model", "judge_model"):
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
