"""PEFT LoRA adapters as GGUF LoRA files, so llama.cpp serves a trained adapter on the quantized GGUF base.

``zhrag train`` writes a PEFT adapter (``adapter_config.json`` + ``adapter_model.safetensors``) trained on the
transformers engine. llama.cpp applies LoRA adapters stored as GGUF (``general.type = adapter``, ``adapter.type =
lora``, ``adapter.lora.alpha``, tensors ``blk.N.<name>.weight.lora_a`` / ``.lora_b``), as llama.cpp's
``convert_lora_to_gguf.py`` writes them. :func:`gguf_adapter` converts once and caches the file under
``<ZHRAG_CACHE>/gguf-lora/`` keyed by the adapter's files and the base model, so a served adapter loads in about a
second where the transformers engine first dequantizes the whole base (tens of seconds, several GB).

Supported: plain LoRA (``r``, ``lora_alpha``, rsLoRA) on the linear layers of architectures whose GGUF weights keep
the Hugging Face layout (Qwen2, Gemma 3 and most others), the output layer (``lm_head`` → ``output.weight``) included
where the GGUF file has its own (Qwen2.5-Coder's do; a model that ties it to the token embeddings is refused), and
output-layer rows trained outright (peft's trainable tokens, ``zhrag train --output-tokens``) as a LoRA whose rank
is the number of rows. Refused with a clear error: DoRA, adapters that train or
resize embeddings (``modules_to_save``), and LoRA on q/k projections of ``llama``-architecture models (their GGUF
conversion permutes those weights).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from zhrag import settings
from zhrag.errors import ModelLoadError
from zhrag.jsonl import stat_digest

#: Prefix PEFT puts before the base model's own module names.
_PEFT_PREFIX = "base_model.model."
#: GGUF architectures whose converter permutes the q/k projection weights (a LoRA on them would need the same).
_PERMUTED_QK = {"llama"}
#: Name ending of the rows peft's trainable tokens hold for a layer (``<layer>.token_adapter...``).
_TOKENS_SUFFIX = ".token_adapter.trainable_tokens_delta"


def gguf_adapter(adapter_dir: str | Path, base_gguf: str | Path) -> Path:
    """The GGUF LoRA file of the PEFT adapter ``adapter_dir`` for the GGUF model ``base_gguf`` (converted once, cached).

    Raises:
        ModelLoadError: not a PEFT LoRA adapter, a kind of adapter llama.cpp cannot apply (see the module docstring),
            or an adapter whose layers the base model does not have.
    """
    adapter = Path(adapter_dir).expanduser().resolve()
    base = Path(base_gguf).expanduser().resolve()
    config = _adapter_config(adapter)
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"adapter {adapter} has no adapter_model.safetensors (only safetensors adapters convert)")
    digest = stat_digest([adapter / "adapter_config.json", weights, base])
    target = settings.cache_dir() / "gguf-lora" / f"{adapter.name}-{digest[:16]}.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        try:
            _convert(config, weights, base, partial)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def _adapter_config(adapter: Path) -> dict[str, Any]:
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"adapter {adapter}: adapter_config.json cannot be read ({error})") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise ModelLoadError(f"adapter {adapter} is a {config.get('peft_type')!r} adapter; llama.cpp applies LoRA only")
    if config.get("use_dora"):
        raise ModelLoadError(f"adapter {adapter} uses DoRA, which llama.cpp cannot apply: use --engine transformers")
    if config.get("modules_to_save"):
        raise ModelLoadError(
            f"adapter {adapter} also trains {config['modules_to_save']} (modules_to_save), which a GGUF LoRA cannot "
            "hold: use --engine transformers"
        )
    return config


def _convert(config: dict[str, Any], weights: Path, base: Path, target: Path) -> None:
    """Write the GGUF LoRA of the PEFT ``weights`` for ``base`` to ``target``."""
    import gguf
    from safetensors.numpy import load_file

    reader = gguf.GGUFReader(str(base))
    architecture = _field(reader, "general.architecture")
    blocks = int(_field(reader, f"{architecture}.block_count"))
    by_name = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    if architecture not in by_name:
        raise ModelLoadError(f"{base}: unknown GGUF architecture {architecture!r}")
    names = gguf.get_tensor_name_map(by_name[architecture], blocks)
    base_tensors = {tensor.name: [int(n) for n in tensor.shape] for tensor in reader.tensors}  # [in, out]
    rank = int(config.get("r", 8))
    alpha = float(config.get("lora_alpha", rank))
    if config.get("use_rslora"):
        alpha *= math.sqrt(rank)  # llama.cpp scales by alpha / r; rsLoRA means alpha / sqrt(r)
    writer = gguf.GGUFWriter(str(target), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    count, output_lora, output_rows = 0, False, False
    for name, array in sorted(load_file(str(weights)).items()):
        module, _, part = name.partition(".lora_")
        if name.startswith(f"{_PEFT_PREFIX}lm_head.") and "output.weight" not in base_tensors:
            raise ModelLoadError(
                f"{weights}: a LoRA on lm_head cannot be applied by llama.cpp: {base.name} ties its output layer to "
                "the token embeddings (no output.weight); use --engine transformers"
            )
        if name.endswith(".base_layer.weight") and _frozen_copy(name, array.shape, names, base_tensors):
            continue  # peft's copy of an unchanged (frozen) base layer, saved when lm_head is a LoRA target
        if name.endswith(_TOKENS_SUFFIX):
            for suffix, matrix in _token_rows_as_lora(name, array, config, reader, names, alpha).items():
                writer.add_tensor(f"output.weight.{suffix}", matrix)
            output_rows = True
            count += 1
            continue
        if part not in ("A.weight", "B.weight"):
            raise ModelLoadError(f"{weights}: tensor {name!r} is not a LoRA A/B matrix: use --engine transformers")
        hf_name = module.removeprefix(_PEFT_PREFIX) + ".weight"
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
        if gguf_name is None or gguf_name not in base_tensors:
            raise ModelLoadError(f"{weights}: layer {hf_name!r} has no tensor in {base.name} (not this model's adapter)")
        if architecture in _PERMUTED_QK and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            raise ModelLoadError(
                f"LoRA on {hf_name} of a {architecture} model cannot be converted (its GGUF permutes q/k): use "
                "--engine transformers"
            )
        suffix = "lora_a" if part.startswith("A") else "lora_b"
        inputs, outputs = base_tensors[gguf_name][:2]
        if array.shape[1 if suffix == "lora_a" else 0] != (inputs if suffix == "lora_a" else outputs):
            raise ModelLoadError(
                f"{weights}: {name} has shape {list(array.shape)}, which does not fit {gguf_name} {[outputs, inputs]} "
                f"of {base.name} (not this model's adapter)"
            )
        writer.add_tensor(f"{gguf_name}.{suffix}", array.astype("float32"))
        output_lora = output_lora or gguf_name == "output.weight"
        count += 1
    if count == 0:
        raise ModelLoadError(f"{weights}: no LoRA tensors")
    if output_lora and output_rows:  # two LoRAs on one tensor: llama.cpp takes one
        raise ModelLoadError(f"{weights}: trains output-layer rows and a LoRA on the output layer: use --engine "
                             "transformers")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _token_rows_as_lora(
    name: str, rows: Any, config: dict[str, Any], reader: Any, names: Any, alpha: float
) -> dict[str, Any]:
    """Output-layer rows trained outright (peft's trainable tokens: ``rows`` are the new rows of the tokens in
    ``trainable_token_indices``) as a LoRA of rank k = number of rows on ``output.weight``: A holds the rows' change
    (new rows minus the base's, dequantized from the GGUF file), B picks each token's row, scaled by k / alpha
    because llama.cpp scales a LoRA by alpha / rank."""
    import numpy as np
    from gguf.quants import dequantize

    module = name.removeprefix(_PEFT_PREFIX).removesuffix(_TOKENS_SUFFIX)
    indices = config.get("trainable_token_indices")
    if not isinstance(indices, dict) or not isinstance(indices.get(module), list):
        raise ModelLoadError(f"adapter trains token rows of {module!r} without their indices in adapter_config.json")
    if names.get_name(f"{module}.weight", try_suffixes=(".weight",)) != "output.weight":
        raise ModelLoadError(
            f"adapter trains rows of {module!r} (input embeddings), which a GGUF LoRA cannot hold: use --engine "
            "transformers"
        )
    tokens = [int(index) for index in indices[module]]
    [output] = [tensor for tensor in reader.tensors if tensor.name == "output.weight"]
    if rows.shape != (len(tokens), int(output.shape[0])):
        raise ModelLoadError(f"trained rows {list(rows.shape)} do not fit output.weight (not this model's adapter)")
    base_rows = dequantize(output.data[tokens], output.tensor_type).reshape(rows.shape)
    pick = np.zeros((int(output.shape[1]), len(tokens)), dtype="float32")
    pick[tokens, range(len(tokens))] = len(tokens) / alpha
    return {"lora_a": (rows - base_rows).astype("float32"), "lora_b": pick}


def _frozen_copy(name: str, shape: tuple[int, ...], names: Any, base_tensors: dict[str, list[int]]) -> bool:
    """Whether ``name`` (a ``<layer>.base_layer.weight`` of the adapter) has the shape of the base's layer: a copy of
    the frozen base weights, which LoRA leaves as they are (a resized vocabulary has another shape)."""
    hf_name = name.removeprefix(_PEFT_PREFIX).replace(".base_layer.weight", ".weight")
    gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
    return gguf_name in base_tensors and list(shape) == base_tensors[gguf_name][:2][::-1]


def _field(reader: Any, key: str) -> Any:
    """A scalar or string field of a GGUF file."""
    field = reader.fields.get(key)
    if field is None:
        raise ModelLoadError(f"GGUF file has no {key!r}")
    value = field.parts[field.data[0]]
    return bytes(value).decode("utf-8") if field.types and field.types[0].name == "STRING" else value[0]
