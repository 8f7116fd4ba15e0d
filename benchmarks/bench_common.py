"""Helpers shared by the generation and evaluation benchmarks: machine/device info, result files, a tiny model.

Imported by the benchmark scripts as a sibling module (``python benchmarks/<name>.py`` puts this folder
on ``sys.path``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Corpus of the tiny random model of ``--smoke`` runs (its tokenizer is trained on it).
_TINY_CORPUS = [
    "材料：曹雪芹，清代小说家，著有《红楼梦》。\n问题：《红楼梦》的作者是谁？\n答案：曹雪芹",
    "材料：北京是中华人民共和国的首都。\n问题：中国的首都是哪里？\n答案：北京",
]


def machine_info(device: str | None = None, dtype: str | None = None, note: str | None = None) -> dict[str, Any]:
    """Platform, CPU count, load average, torch version and the accelerator used, plus a free-text ``note``."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "dtype": dtype,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if note:
        info["note"] = note
    return info


def write_result(path: Path, benchmark: str, smoke: bool, machine: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Write ``{"benchmark", "created", "smoke", "machine", **body}`` to ``path`` as JSON; return the document."""
    document = {
        "benchmark": benchmark,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "smoke": smoke,
        "machine": machine,
        **body,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return document


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator`` rounded to 2 decimals, or ``None`` when the denominator is not positive."""
    return round(numerator / denominator, 2) if denominator > 0 else None


def median(values: Sequence[float]) -> float:
    """The median of measured values."""
    return statistics.median(values)


def tiny_model_dir(path: Path) -> Path:
    """Save a random two-layer Llama with a byte-level BPE tokenizer to ``path`` (the model of ``--smoke`` runs)."""
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_TINY_CORPUS, trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, initializer_range=0.5,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
