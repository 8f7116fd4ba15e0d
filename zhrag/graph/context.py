"""Runtime context of the zhrag graph (LangGraph ``context_schema``).

The context holds everything that configures a run but is not data: which models to use, how many
passages to retrieve, where the knowledge base lives. Pass it as ``graph.invoke(input, context=Context(...))``
or, in LangGraph Studio, edit it in the assistant's context panel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zhrag import settings
from zhrag.errors import ConfigError


@dataclass(kw_only=True)
class Context:
    """Run configuration shared by all nodes.

    Attributes:
        model: Answer model: ``gemma3-270m`` (packaged GGUF, default), a local HF model directory, a
            ``.gguf`` file, or a hub id.
        answer_adapter: Optional LoRA adapter directory loaded on top of ``model`` for answering.
        judge_model: Model for the A2 judge and requery nodes; ``None`` reuses ``model``.
        judge_adapter: Optional LoRA adapter directory for the judge model.
        device: ``cuda``, ``mps`` or ``cpu``; ``None`` picks the best available.
        dtype: ``bfloat16``, ``float16`` or ``float32``; ``None`` picks per device.
        max_new_tokens: Generation budget of the answer node.
        top_k: Passages requested from ``qdrant-find`` per retrieval round (1..50).
        max_requeries: A2 only: upper bound on query rewrites (0 disables requerying).
        collection: Qdrant collection of the knowledge base.
        qdrant_url: Qdrant server URL; ``None`` uses embedded storage at ``qdrant_path``.
        qdrant_path: Embedded Qdrant directory; ``None`` uses the default location.
        embedder: Dense embedder for the knowledge base (packaged MiniLM by default).
    """

    model: str = settings.PACKAGED_LLM
    answer_adapter: str | None = None
    judge_model: str | None = None
    judge_adapter: str | None = None
    device: str | None = None
    dtype: str | None = None
    max_new_tokens: int = 32
    top_k: int = 3
    max_requeries: int = 2
    collection: str = settings.DEFAULT_COLLECTION
    qdrant_url: str | None = field(default_factory=settings.qdrant_url)
    qdrant_path: str | None = None
    embedder: str = settings.PACKAGED_EMBEDDER

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= 50:
            raise ConfigError(f"top_k must be between 1 and 50, got {self.top_k}")
        if self.max_requeries < 0:
            raise ConfigError(f"max_requeries must be >= 0, got {self.max_requeries}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.device not in (None, "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}: use cpu, cuda, cuda:N or mps")
        if self.dtype not in (None, "bfloat16", "float16", "float32"):
            raise ConfigError(f"unknown dtype {self.dtype!r}: use bfloat16, float16 or float32")
