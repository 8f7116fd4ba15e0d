"""Runtime context of the zhrag graph (LangGraph ``context_schema``).

The context holds everything that configures a run but is not data: which models to use, how many
passages to retrieve, where the knowledge base lives. Pass it as ``graph.invoke(input, context=Context(...))``
or, in LangGraph Studio, edit it in the assistant's context panel. Each field's ``description`` metadata says
what it does (Studio shows it).

What remote callers of a served graph may set is decided in :mod:`zhrag.graph.served`; the evaluation's own
settings (grader, evaluation judge) are :class:`zhrag.evaluation.eval_settings.EvalSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from zhrag import settings
from zhrag.errors import ConfigError
from zhrag.models.loader import ENGINES

#: What A2 answers from when the judge keeps nothing within the requery budget.
A2_FALLBACKS = ("closed_book", "top_passage")
#: How A2 chooses the knowledge its answer uses: ``judge`` (the judge's verdict alone: kept passages, else
#: ``a2_fallback``) or ``rule`` (the arbitration rule over the judge scores and the candidates' confidences,
#: :func:`zhrag.nodes.arbitrate.choose`).
A2_ARBITERS = ("judge", "rule")
#: Which candidate answers A2's arbiter writes: ``needed`` (those its rule may choose) or ``all`` (every path, for
#: fitting the rule and comparing the alternatives on the same questions).
A2_CANDIDATES = ("needed", "all")
#: Judge score at or above which A2 keeps a passage: the threshold of best F1 on the training split of the
#: reading-comprehension judge examples (``zhrag eval-judge``, docs/results/judge/).
DEFAULT_JUDGE_THRESHOLD = 0.944
#: Largest answer generation budget a run may ask for.
MAX_NEW_TOKENS_LIMIT = 512
#: Most rounds of tool calls the A3 agent may be given.
MAX_TOOL_ROUNDS_LIMIT = 5
#: Most query rewrites A2 may be asked for (each costs a retrieval and top_k judge calls).
MAX_REQUERIES_LIMIT = 10
#: Most times the A4 evaluator may send the work back to the researcher.
MAX_REVIEW_ROUNDS_LIMIT = 3
#: The A4 evaluator's thresholds: the pair of best F on tuning questions outside every evaluation sample (40
#: training-split reading pairs and 20 dev questions; ``benchmarks/a4_thresholds.py``, docs/results/a4/tuning/).
DEFAULT_STATED_THRESHOLD = 0.94
DEFAULT_EVALUATOR_THRESHOLD = 0.92
#: The A2 arbitration rule's thresholds (:func:`zhrag.nodes.arbitrate.choose`): the grid point of best F on 80 tuning
#: questions outside every evaluation sample (40 training-split reading pairs, 40 dev questions), ties broken towards
#: the lower thresholds (``benchmarks/a2_arbiter.py fit``, docs/results/a2_arbiter/tuning/). A stated grounded answer
#: is taken at any judge score; an unstated one gives way to a closed-book answer of confidence 0.6 or more.
DEFAULT_ARBITER_STATED_SCORE = 0.0
DEFAULT_ARBITER_CLOSED_CONFIDENCE = 0.6
DEFAULT_ARBITER_GROUNDED_CONFIDENCE = 0.0
#: The roles whose model a context may set apart from ``model``, each with ``<role>_model``, ``<role>_adapter`` and
#: ``<role>_base_url``: A2's judge (whose model A4's researcher reads with), A4's planner and evaluator.
MODEL_ROLES = ("judge", "planner", "evaluator")


@dataclass(kw_only=True, frozen=True)
class Context:
    """Run configuration shared by all nodes (immutable: one context is shared by the threads of an evaluation).

    Invalid values raise :class:`~zhrag.errors.ConfigError` naming the field.
    """

    model: str = field(
        default=settings.DEFAULT_LLM,
        metadata={
            "description": "Answer model: a packaged alias (qwen2.5-coder-1.5b, the default; qwen2.5-coder-0.5b; "
            "gemma3-270m), a .gguf file, a local HF model directory, or a hub id; with model_base_url, the model "
            "name the endpoint serves."
        },
    )
    engine: str = field(
        default="auto",
        metadata={
            "description": "How local models run: auto (llama.cpp for GGUF models without an adapter, else "
            "transformers), llama.cpp or transformers."
        },
    )
    answer_adapter: str | None = field(
        default=None,
        metadata={
            "description": "Optional LoRA adapter directory loaded on top of model for answering (local models only)."
        },
    )
    judge_model: str | None = field(
        default=None,
        metadata={
            "description": "Model for the A2 judge and requery nodes; None reuses model (and its endpoint, if any)."
        },
    )
    judge_adapter: str | None = field(
        default=None,
        metadata={"description": "Optional LoRA adapter directory for the judge model (local models only)."},
    )
    planner_model: str | None = field(
        default=None,
        metadata={"description": "A4 only: model of the planner; None reuses model (and its endpoint, if any)."},
    )
    planner_adapter: str | None = field(
        default=None,
        metadata={"description": "A4 only: optional LoRA adapter directory for the planner's model (local models)."},
    )
    planner_base_url: str | None = field(
        default=None,
        metadata={
            "description": "A4 only: OpenAI-compatible endpoint serving the planner's model; None uses "
            "model_base_url when planner_model is None, else a local model."
        },
    )
    evaluator_model: str | None = field(
        default=None,
        metadata={"description": "A4 only: model of the evaluator; None reuses model (and its endpoint, if any)."},
    )
    evaluator_adapter: str | None = field(
        default=None,
        metadata={"description": "A4 only: optional LoRA adapter directory for the evaluator's model (local models)."},
    )
    evaluator_base_url: str | None = field(
        default=None,
        metadata={
            "description": "A4 only: OpenAI-compatible endpoint serving the evaluator's model; None uses "
            "model_base_url when evaluator_model is None, else a local model."
        },
    )
    model_base_url: str | None = field(
        default=None,
        metadata={
            "description": "OpenAI-compatible chat endpoint (http://host:8000/v1; vLLM, SGLang, llama.cpp server, "
            "TGI) serving model; None runs the model in-process."
        },
    )
    judge_base_url: str | None = field(
        default=None,
        metadata={
            "description": "OpenAI-compatible endpoint serving the judge model (judge_model, else model); None uses "
            "model_base_url when judge_model is None, else a local judge model."
        },
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "description": "Environment variable holding the API key of the answer and judge endpoints (the "
            "evaluation judge's endpoint reads OPENAI_API_KEY)."
        },
    )
    device: str | None = field(
        default=None, metadata={"description": "cuda, cuda:N, mps or cpu; None picks the best available."}
    )
    dtype: str | None = field(
        default=None, metadata={"description": "bfloat16, float16 or float32; None picks per device."}
    )
    max_new_tokens: int = field(
        default=32, metadata={"description": f"Generation budget of the answer node (1..{MAX_NEW_TOKENS_LIMIT})."}
    )
    top_k: int = field(
        default=3, metadata={"description": "Passages requested from qdrant-find per retrieval round (1..50)."}
    )
    max_requeries: int = field(
        default=2,
        metadata={
            "description": f"A2 only: upper bound on query rewrites (0..{MAX_REQUERIES_LIMIT}; 0 disables requerying)."
        },
    )
    max_tool_rounds: int = field(
        default=2,
        metadata={
            "description": f"A3 only: most rounds of tool calls the agent may make (0..{MAX_TOOL_ROUNDS_LIMIT}) "
            "before it must answer."
        },
    )
    judge_threshold: float = field(
        default=DEFAULT_JUDGE_THRESHOLD,
        metadata={"description": "A2 only: judge score (P(是) / (P(是) + P(否))) at or above which a passage is kept."},
    )
    a2_fallback: Literal["closed_book", "top_passage"] = field(
        default="closed_book",
        metadata={
            "description": "A2 only: when nothing is kept within the budget, answer closed_book (default) or from "
            "the top_passage (the highest-scored rejected one)."
        },
    )
    a2_arbiter: Literal["judge", "rule"] = field(
        default="rule",
        metadata={
            "description": "A2 only: how the answer's knowledge is chosen: judge (the kept passages, else a2_fallback) "
            "or rule (the arbitration rule over judge scores and the closed-book and grounded answers' confidences)."
        },
    )
    a2_candidates: Literal["needed", "all"] = field(
        default="needed",
        metadata={
            "description": "A2 only: answer on the paths the arbiter may choose (needed) or on every path (all: the "
            "closed-book, kept-passage and best-rejected-passage answers, for fitting and comparing rules)."
        },
    )
    arbiter_stated_score: float = field(
        default=DEFAULT_ARBITER_STATED_SCORE,
        metadata={
            "description": "A2 rule: the grounded answer is chosen when its passages state it and the best judge "
            "score reaches this."
        },
    )
    arbiter_closed_confidence: float = field(
        default=DEFAULT_ARBITER_CLOSED_CONFIDENCE,
        metadata={
            "description": "A2 rule: otherwise the closed-book answer is chosen when its confidence reaches this."
        },
    )
    arbiter_grounded_confidence: float = field(
        default=DEFAULT_ARBITER_GROUNDED_CONFIDENCE,
        metadata={
            "description": "A2 rule: otherwise the grounded answer is chosen when its confidence reaches this, "
            "else the closed-book one."
        },
    )
    max_review_rounds: int = field(
        default=1,
        metadata={
            "description": f"A4 only: most times the evaluator may send the work back to the researcher "
            f"(0..{MAX_REVIEW_ROUNDS_LIMIT}; 0: it accepts or abstains at once)."
        },
    )
    quote_threshold: float = field(
        default=0.5,
        metadata={
            "description": "A4 only: judge score at or above which the researcher's quote of a passage goes to the "
            "answerer (none reaching it: the answerer answers closed-book)."
        },
    )
    evaluator_threshold: float = field(
        default=DEFAULT_EVALUATOR_THRESHOLD,
        metadata={
            "description": "A4 only: the evaluator accepts an answer that no quote states when its model's "
            "P(是) / (P(是) + P(否)) that the answer is right reaches this; below it, it sends the work back or "
            "answers 不知道."
        },
    )
    stated_threshold: float = field(
        default=DEFAULT_STATED_THRESHOLD,
        metadata={
            "description": "A4 only: the evaluator accepts an answer a quote states when the researcher's score of "
            "the best quote stating it reaches this (no model call)."
        },
    )
    abstain_below: float | None = field(
        default=None,
        metadata={
            "description": "Answer 不知道 when the answer's confidence (geometric-mean token probability) is below "
            "this; None (default) never abstains."
        },
    )
    collection: str | None = field(
        default=None,
        metadata={
            "description": "Qdrant collection of the knowledge base; None: the embedder's "
            "(zhrag.settings.default_collection)."
        },
    )
    qdrant_url: str | None = field(
        default_factory=settings.qdrant_url,
        metadata={"description": "Qdrant server URL; None uses embedded storage at qdrant_path."},
    )
    qdrant_path: str | None = field(
        default=None, metadata={"description": "Embedded Qdrant directory; None uses the default location."}
    )
    qdrant_engine: Literal["edge", "local"] = field(
        default_factory=settings.qdrant_engine,  # type: ignore[arg-type]  # validated in __post_init__
        metadata={
            "description": "Engine of the embedded storage: edge (Qdrant Edge shards, default) or local "
            "(qdrant-client local mode); default ZHRAG_QDRANT_ENGINE."
        },
    )
    mcp_url: str | None = field(
        default_factory=settings.mcp_url,
        metadata={
            "description": "MCP endpoint of a running knowledge server (zhrag serve-mcp --transport "
            "streamable-http, e.g. http://127.0.0.1:8765/mcp; default ZHRAG_MCP_URL), shared with other processes; "
            "its bearer token comes from ZHRAG_MCP_TOKEN. None spawns a stdio server for the location above; with "
            "a URL, that server's own collection, store and embedder are used."
        },
    )
    embedder: str = field(
        default=settings.DEFAULT_EMBEDDER,
        metadata={"description": "Dense embedder for the knowledge base (default: zhrag.settings.DEFAULT_EMBEDDER)."},
    )
    reranker: str = field(
        default="evidence",
        metadata={
            "description": "Reranker of the retrieved candidates: evidence (offline evidence windows, default), "
            "none, or a sentence-transformers cross-encoder name or directory."
        },
    )

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
        if not 0 <= self.max_review_rounds <= MAX_REVIEW_ROUNDS_LIMIT:
            raise ConfigError(
                f"max_review_rounds must be between 0 and {MAX_REVIEW_ROUNDS_LIMIT}, got {self.max_review_rounds}"
            )
        thresholds = ("judge_threshold", "quote_threshold", "evaluator_threshold", "stated_threshold",
                      "arbiter_stated_score", "arbiter_closed_confidence", "arbiter_grounded_confidence")
        for name in thresholds:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.abstain_below is not None and not 0.0 <= self.abstain_below <= 1.0:
            raise ConfigError(f"abstain_below must be between 0 and 1, got {self.abstain_below}")
        if self.a2_fallback not in A2_FALLBACKS:
            raise ConfigError(f"unknown a2_fallback {self.a2_fallback!r}: use {' or '.join(A2_FALLBACKS)}")
        if self.a2_arbiter not in A2_ARBITERS:
            raise ConfigError(f"unknown a2_arbiter {self.a2_arbiter!r}: use {' or '.join(A2_ARBITERS)}")
        if self.a2_candidates not in A2_CANDIDATES:
            raise ConfigError(f"unknown a2_candidates {self.a2_candidates!r}: use {' or '.join(A2_CANDIDATES)}")
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
        if self.model_base_url and self.answer_adapter:
            raise ConfigError("answer_adapter cannot be applied to a model served by model_base_url: give one of them")
        for role in MODEL_ROLES:
            if self.role_endpoint(role) and getattr(self, f"{role}_adapter"):
                raise ConfigError(f"{role}_adapter cannot be applied to a model served by an endpoint: give one of them")

    @property
    def judge_endpoint(self) -> str | None:
        """The endpoint serving the judge: ``judge_base_url``, else ``model_base_url`` when the judge is ``model``."""
        return self.role_endpoint("judge")

    def role_endpoint(self, role: str) -> str | None:
        """The endpoint serving a role's model (one of :data:`MODEL_ROLES`): its ``<role>_base_url``, else
        ``model_base_url`` when the role reuses ``model``."""
        base_url: str | None = getattr(self, f"{role}_base_url")
        if base_url:
            return base_url
        return self.model_base_url if getattr(self, f"{role}_model") is None else None
