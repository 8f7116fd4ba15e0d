"""``load_llm``: resolve, load (once per process) and share local language models.

A model is cached per process by its resolved arguments (source, adapter, device, dtype); the base
weights are cached by (source, device, dtype), so models that differ only in their adapter share
them. Loading is serialised by one lock: two graph nodes asking at once load the model once.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from zhrag import settings
from zhrag.errors import ConfigError, ModelLoadError
from zhrag.models.base import LLM
from zhrag.models.device import resolve_device, resolve_dtype
from zhrag.models.endpoint import endpoint_models
from zhrag.models.failures import first_line
from zhrag.models.gguf_cache import gguf_model_dir, packaged_model_dir
from zhrag.models.hf import LocalLLM
from zhrag.models.hf_runtime import HFRuntime
from zhrag.models.llamacpp import load_llamacpp
from zhrag.models.packaged import packaged_gguf
from zhrag.models.registry import registered_llm
from zhrag.models.sources import ModelSource, resolve_adapter, resolve_model_source

logger = logging.getLogger(__name__)

#: Engines a local model can run on (``auto`` picks one, see :func:`load_llm`).
ENGINES = ("auto", "llama.cpp", "transformers")
_DEVICE_NAME = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")

_lock = threading.RLock()
_llms: dict[tuple[ModelSource, str | None, str, str], LLM] = {}
#: Loaded base models by (source, device, dtype), and (…, adapter path) for an adapter that needs its own copy.
_runtimes: dict[tuple[ModelSource, str, str] | tuple[ModelSource, str, str, str], tuple[HFRuntime, str, bool | None]] = {}


def load_llm(
    model: str = settings.DEFAULT_LLM,
    *,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    engine: str = "auto",
) -> LLM:
    """The local model ``model`` (with an optional LoRA ``adapter``), loaded once per process.

    Args:
        model: A name given to :func:`register_llm`; ``gemma3-270m`` (the packaged GGUF, dequantized
            once and cached under ``settings.cache_dir()/models``); a ``.gguf`` file (same caching);
            a local Hugging Face model directory; or a Hugging Face Hub id (the only case that may
            use the network).
        adapter: A PEFT (LoRA) adapter directory to apply on top of ``model``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``None`` picks CUDA, then MPS, then CPU.
        dtype: ``bfloat16``, ``float16`` or ``float32``; ``None`` picks bf16 on CUDA (fp16 without
            bf16 support), fp16 on MPS, fp32 on CPU (transformers engine only; llama.cpp runs the GGUF's
            own quantization).
        engine: ``llama.cpp`` (GGUF files and packaged models, in process through xllamacpp),
            ``transformers`` (every kind; the one that takes LoRA adapters and trains), or ``auto``:
            llama.cpp for GGUF models without an adapter, transformers otherwise.

    Raises:
        ModelLoadError: a path or adapter is missing, the adapter does not fit the model, or the
            model cannot be loaded (for hub ids: offline or unknown).
        ConfigError: unknown or unavailable device or dtype.
    """
    registered = registered_llm(model)
    if registered is not None:
        if adapter is not None:
            raise ModelLoadError(f"model {model!r} is a registered pre-built model; adapters cannot be applied to it")
        return registered
    source = resolve_model_source(model)
    adapter_path = resolve_adapter(adapter)
    if resolve_engine(engine, source, adapter_path) == "llama.cpp":
        served = _load_llamacpp(model, source, device, adapter_path, fallback=(engine or "auto").strip().lower() == "auto")
        if served is not None:
            return served
    device_name = resolve_device(device)
    dtype_name = resolve_dtype(dtype, device_name)
    key = (source, adapter_path, device_name, dtype_name)
    with _lock:
        if key in _llms:
            return _llms[key]
        start = time.perf_counter()
        base_key = (source, device_name, dtype_name)
        shared_base = base_key in _runtimes
        if not shared_base:
            _quiet_libraries()
            _runtimes[base_key] = _load_runtime(source, device_name, dtype_name)
        runtime, location, cache_hit = _runtimes[base_key]
        adapter_name = None
        if adapter_path:
            try:
                adapter_name = runtime.add_adapter(adapter_path, model)
            except ModelLoadError:
                if not runtime.has_adapters:
                    raise
                # Adapters of other kinds may not share one model (peft cannot add trainable output rows to a
                # layer another adapter wraps in a LoRA): this one gets its own copy of the base model.
                own_key = (*base_key, adapter_path)
                if own_key not in _runtimes:
                    _runtimes[own_key] = _load_runtime(source, device_name, dtype_name)
                runtime, location, cache_hit = _runtimes[own_key]
                adapter_name = runtime.add_adapter(adapter_path, model)
                shared_base = False
        info = {
            "model": model,
            "kind": source.kind,
            "source": location,
            "cache_hit": cache_hit,
            "shared_base": shared_base,
            "load_s": round(time.perf_counter() - start, 3),
            "device": device_name,
            "dtype": dtype_name,
            "adapter": adapter_path,
            "engine": "transformers",
        }
        llm = LocalLLM(
            runtime.langchain_model(), is_chat=runtime.is_chat, load_info=info, runtime=runtime, adapter_name=adapter_name
        )
        _llms[key] = llm
        logger.info("loaded %s from %s in %.1f s", model, location, info["load_s"])
        return llm


def resolve_engine(engine: str, source: ModelSource, adapter: str | None) -> str:
    """The engine that runs ``source``: ``llama.cpp`` or ``transformers`` (see :func:`load_llm`).

    Raises:
        ConfigError: an unknown engine, llama.cpp asked for a model that is not GGUF, or for a LoRA adapter.
    """
    name = (engine or "auto").strip().lower()
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}: use {', '.join(ENGINES)}")
    gguf = source.kind in ("packaged", "gguf")
    if name == "auto":
        return "llama.cpp" if gguf else "transformers"
    if name == "llama.cpp" and not gguf:
        raise ConfigError(f"the llama.cpp engine runs GGUF models; {source.location} is not one (use --engine transformers)")
    return name


def _load_llamacpp(
    model: str, source: ModelSource, device: str | None, adapter: str | None = None, *, fallback: bool = False
) -> LLM | None:
    """The llama.cpp model of a packaged alias or GGUF file (with the PEFT ``adapter`` converted to a GGUF LoRA,
    :mod:`zhrag.models.gguf_lora`), loaded once per process.

    Returns ``None`` when the adapter cannot be converted and ``fallback`` (engine ``auto``) lets the transformers
    engine run it instead (a warning says why).

    Raises:
        ModelLoadError: the adapter cannot be converted and there is no fallback; llama.cpp cannot load the file.
    """
    if device is not None and not _DEVICE_NAME.match(device.strip().lower()):
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps")
    device_name = device.strip().lower() if device else None
    key = (source, adapter, f"llama.cpp:{device_name}", "gguf")
    with _lock:
        if key in _llms:
            return _llms[key]
        cache_hit: bool | None = None
        if source.kind == "packaged":
            path, cache_hit = packaged_gguf(source.location)
        else:
            path = Path(source.location)
        lora = None
        if adapter is not None:
            from zhrag.models.gguf_lora import gguf_adapter

            try:
                lora = gguf_adapter(adapter, path)
            except ModelLoadError as error:
                if not fallback:
                    raise
                logger.warning("%s; running the adapter on the transformers engine instead", error)
                return None
        llm = load_llamacpp(
            path, model=model, kind=source.kind, device=device_name, cache_hit=cache_hit, adapter=adapter, lora=lora
        )
        _llms[key] = llm
        logger.info("loaded %s on llama.cpp from %s in %.1f s", model, path, llm.load_info["load_s"])
        return llm


def loaded_models() -> list[LLM]:
    """The models :func:`load_llm` has loaded in this process (in load order), then the endpoint models in use."""
    with _lock:
        return [*_llms.values(), *endpoint_models()]


def _load_runtime(source: ModelSource, device: str, dtype: str) -> tuple[HFRuntime, str, bool | None]:
    """Load the base model of ``source``; return it with the location read and the GGUF cache hit flag."""
    cache_hit: bool | None = None
    if source.kind == "packaged":
        directory, cache_hit = packaged_model_dir(source.location)
        location = str(directory)
    elif source.kind == "gguf":
        directory, cache_hit = gguf_model_dir(Path(source.location))
        location = str(directory)
    else:
        location = source.location
    model, tokenizer = _from_pretrained(location, source, device, dtype)
    return HFRuntime(model, tokenizer, device), location, cache_hit


def _from_pretrained(location: str, source: ModelSource, device: str, dtype: str) -> tuple[Any, Any]:
    """Tokenizer and causal LM from a directory or hub id, on ``device`` in ``dtype``, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local_only = source.kind != "hub"
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=getattr(torch, dtype), local_files_only=local_only
        )
    except Exception as error:  # a user-supplied model that cannot be read fails in many library-specific ways
        if source.kind == "hub":
            raise ModelLoadError(
                f"model {location!r} is not a local path and could not be loaded from the Hugging Face Hub: "
                f"{first_line(error)}"
            ) from error
        raise ModelLoadError(f"cannot load model from {location}: {first_line(error)}") from error
    return model.to(device).eval(), tokenizer  # type: ignore[arg-type]  # transformers types .to() for dtypes only


def _quiet_libraries() -> None:
    """Silence transformers' info/warning logs and progress bars (the CLI reports loading itself)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
