"""Local language models for the graph nodes.

``load_llm`` resolves a model argument (packaged alias, ``.gguf`` file, model directory, hub id or a
registered name), loads it once per process and returns a :class:`LocalLLM`, whose ``generate`` runs
greedy, batched decoding through LangChain. Heavy libraries (torch, transformers) are imported only
when a model is actually loaded.
"""

from zhrag.models.device import resolve_device, resolve_dtype
from zhrag.models.endpoint import EndpointLLM, load_endpoint_llm
from zhrag.models.llm import LocalLLM, Prompt, truncate_at_stop
from zhrag.models.loader import load_llm, loaded_models
from zhrag.models.registry import register_llm, unregister_llm
from zhrag.models.sources import ModelSource, resolve_adapter, resolve_model_source

__all__ = [
    "EndpointLLM",
    "LocalLLM",
    "ModelSource",
    "Prompt",
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
