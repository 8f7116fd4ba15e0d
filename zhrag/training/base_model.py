"""The base model of a training run: resolved like ``load_llm`` resolves it, identified, and loaded for training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhrag.errors import ModelLoadError
from zhrag.models.failures import first_line
from zhrag.models.gguf_cache import gguf_model_dir, packaged_model_dir
from zhrag.models.llamacpp import gguf_chat_template
from zhrag.models.packaged import packaged_gguf
from zhrag.models.sources import resolve_model_source

#: Config fields that identify a base model's architecture (recorded in the card, checked at load time).
ARCHITECTURE_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model: the argument given, its kind and the directory or hub id transformers reads."""

    model: str
    kind: str
    location: str


def resolve_base_model(model: str) -> BaseModel:
    """Resolve ``model`` as :func:`zhrag.models.load_llm` does (dequantizing a GGUF file once if needed).

    Raises:
        ModelLoadError: a missing path, a damaged packaged model or an unreadable GGUF file.
    """
    source = resolve_model_source(model)
    if source.kind == "packaged":
        location = str(packaged_model_dir(source.location)[0])
    elif source.kind == "gguf":
        location = str(gguf_model_dir(Path(source.location))[0])
    else:
        location = source.location
    return BaseModel(model=model, kind=source.kind, location=location)


def uses_chat_template(model: str) -> bool:
    """Whether the tokenizer of ``model`` has a chat template (then examples use chat messages, else completions).

    Raises:
        ModelLoadError: the model cannot be resolved or its tokenizer cannot be read.
    """
    from transformers import AutoTokenizer

    source = resolve_model_source(model)
    if source.kind in ("packaged", "gguf"):  # read the GGUF's metadata: no dequantization needed to know
        path = packaged_gguf(source.location)[0] if source.kind == "packaged" else Path(source.location)
        return gguf_chat_template(path) is not None
    base = resolve_base_model(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.location, local_files_only=base.kind != "hub")
    except Exception as error:  # unreadable tokenizers fail in many library-specific ways
        problem = first_line(error)
        raise ModelLoadError(f"cannot load the tokenizer of {model!r} from {base.location}: {problem}") from error
    return bool(getattr(tokenizer, "chat_template", None))


def base_model_identity(base: BaseModel, config: Any) -> dict[str, Any]:
    """What identifies the base model: its folder or hub name, architecture fields, weight bytes or hub revision."""
    location = Path(base.location)
    identity: dict[str, Any] = {"name": location.name, "architecture": architecture(config)}
    weights = sorted(location.glob("*.safetensors")) + sorted(location.glob("*.bin")) if location.is_dir() else []
    if weights:
        identity["weights_bytes"] = sum(file.stat().st_size for file in weights)
    revision = getattr(config, "_commit_hash", None)
    if base.kind == "hub" and revision:
        identity["revision"] = revision
    return identity


def architecture(config: Any) -> dict[str, Any]:
    """The :data:`ARCHITECTURE_FIELDS` a model config has."""
    return {name: getattr(config, name) for name in ARCHITECTURE_FIELDS if getattr(config, name, None) is not None}


def load_config(base: BaseModel) -> Any:
    """The transformers config of ``base`` (enough to identify it before loading the weights)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base.location, local_files_only=base.kind != "hub")
    except Exception as error:  # unreadable or unknown configs fail in many library-specific ways
        raise _load_error(base, error) from error


def load_tokenizer(base: BaseModel) -> Any:
    """The tokenizer of ``base`` (with a pad token), without its weights."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(base.location, local_files_only=base.kind != "hub")
    except Exception as error:  # a user-supplied model that cannot be read fails in many library-specific ways
        raise _load_error(base, error) from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(base: BaseModel, dtype: str) -> tuple[Any, Any]:
    """Tokenizer (with a pad token) and causal LM of ``base`` in ``dtype``, on the CPU (the Trainer moves it)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(base)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base.location, dtype=getattr(torch, dtype), local_files_only=base.kind != "hub"
        )
    except Exception as error:  # a user-supplied model that cannot be read fails in many library-specific ways
        raise _load_error(base, error) from error
    model.config.use_cache = False
    return tokenizer, model


def _load_error(base: BaseModel, error: BaseException) -> ModelLoadError:
    return ModelLoadError(f"cannot load base model {base.model!r} from {base.location}: {first_line(error)}")
