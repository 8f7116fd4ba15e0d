"""Language models for the graph nodes: one protocol, three engines.

:class:`LLM` (:mod:`zhrag.models.base`) is the model protocol nodes, evaluations and training use: greedy, batched
``generate``, token probabilities where the engine gives them, and tool-calling turns in the format of
:mod:`zhrag.models.tool_calls`. The engines are sibling modules: :class:`LocalLLM` (:mod:`zhrag.models.hf`, the
transformers engine, or any wrapped LangChain model), :class:`LlamaCppLLM` (:mod:`zhrag.models.llamacpp`, GGUF
files on llama.cpp) and :class:`EndpointLLM` (:mod:`zhrag.models.endpoint`, an OpenAI-compatible server).

``load_llm`` resolves a model argument (packaged alias, ``.gguf`` file, model directory, hub id or a registered
name), picks the engine, loads it once per process and returns an :class:`LLM`. Heavy libraries (torch,
transformers, xllamacpp) are imported only when a model is actually loaded.
"""

from zhrag.models.base import LLM, LLMBase, Prompt, ScoredText, truncate_at_stop
from zhrag.models.device import resolve_device, resolve_dtype
from zhrag.models.endpoint import EndpointLLM, load_endpoint_llm
from zhrag.models.hf import LocalLLM
from zhrag.models.llamacpp import LlamaCppLLM
from zhrag.models.loader import load_llm, loaded_models
from zhrag.models.registry import register_llm, unregister_llm
from zhrag.models.sources import ModelSource, resolve_adapter, resolve_model_source
from zhrag.models.tool_calls import ToolCall, ToolReply

__all__ = [
    "LLM",
    "EndpointLLM",
    "LLMBase",
    "LlamaCppLLM",
    "LocalLLM",
    "ModelSource",
    "Prompt",
    "ScoredText",
    "ToolCall",
    "ToolReply",
    "load_endpoint_llm",
    "load_llm",
    "loaded_models",
    "register_llm",
    "resolve_adapter",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_source",
    "truncate_at_stop",
    "unregister_llm",
]
