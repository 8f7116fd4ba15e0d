"""Runtime context of the zhrag graph (LangGraph ``context_schema``).

The context holds everything that configures a run but is not data: which models to use, how many
passages to retrieve, where the knowledge base lives. Pass it as ``graph.invoke(input, context=Context(...))``
or, in LangGraph Studio, edit it in the assistant's context panel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zhrag import settings
from zhrag.errors import ConfigError
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
        judge_threshold: A2 only: judge score (``P(是) / (P(是) + P(否))``) at or above which a passage is kept.
        a2_fallback: A2 only: when nothing is kept within the budget, answer ``closed_book`` (default) or
            from the ``top_passage`` (the highest-scored rejected one).
        abstain_below: Answer 不知道 when the answer's confidence (geometric-mean token probability) is
            below this; ``None`` (default) never abstains.
        collection: Qdrant collection of the knowledge base.
        qdrant_url: Qdrant server URL; ``None`` uses embedded storage at ``qdrant_path``.
        qdrant_path: Embedded Qdrant directory; ``None`` uses the default location.
        qdrant_engine: Engine of the embedded storage: ``edge`` (Qdrant Edge shards, default) or
            ``local`` (qdrant-client local mode); default ``ZHRAG_QDRANT_ENGINE``.
        embedder: Dense embedder for the knowledge base (packaged MiniLM by default).
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
    judge_threshold: float = DEFAULT_JUDGE_THRESHOLD
    a2_fallback: Literal["closed_book", "top_passage"] = "closed_book"
    abstain_below: float | None = None
    collection: str = settings.DEFAULT_COLLECTION
    qdrant_url: str | None = field(default_factory=settings.qdrant_url)
    qdrant_path: str | None = None
    qdrant_engine: Literal["edge", "local"] = field(default_factory=settings.qdrant_engine)  # type: ignore[assignment]
    embedder: str = settings.PACKAGED_EMBEDDER
    reranker: str = "evidence"
    grader: Literal["rules", "official"] = "rules"
    eval_model: str | None = None
    eval_base_url: str | None = None
    eval_api_model: str | None = None
    eval_embedder: str = settings.PACKAGED_EMBEDDER

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= 50:
            raise ConfigError(f"top_k must be between 1 and 50, got {self.top_k}")
        if not 0 <= self.max_requeries <= MAX_REQUERIES_LIMIT:
            raise ConfigError(f"max_requeries must be between 0 and {MAX_REQUERIES_LIMIT}, got {self.max_requeries}")
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
