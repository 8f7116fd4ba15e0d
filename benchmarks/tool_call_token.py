"""Why a Qwen2.5 tool adapter wrote bare JSON: the output rows of its ``<tool_call>`` tags, before and after training.

Two measurements, written to ``benchmarks/results/tool_call_token.json``:

1. **Rows of the packaged GGUF files.** For every packaged Qwen2.5-Coder model, the Euclidean distance of the
   ``output.weight`` rows of ``</tool_call>``, ``<|im_start|>``, ``<|im_end|>`` and the reserved special tokens from
   the row of ``<tool_call>``, dequantized from the GGUF file itself. Rows a model never learned to produce keep their
   shared initial value, so they lie at distance ~0 from each other.
2. **The tag's log-probability where a trace calls** (``--data`` with ``--adapters``): teacher-forced on the first
   ``--traces`` tool traces of the adapters' training sample (transformers + peft on the dequantized model, the
   tokens and labels ``zhrag train`` uses), the mean log-probability of ``<tool_call>`` at the first token of every
   learned call, and the token each model prefers there, for the base model and for each adapter.

``python benchmarks/tool_call_token.py --data runs/data/tools600 --adapters adapters/tools-qwen0.5b
adapters/tools-qwen0.5b-head adapters/tools-qwen0.5b-tags`` (the commands of docs/results/agent make those).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

from bench_common import RESULTS_DIR, machine_info, write_result

RESULTS = RESULTS_DIR / "tool_call_token.json"
QWEN_MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
TAG = "<tool_call>"
COMPARED = ("</tool_call>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|box_start|>",
            "<|quad_start|>", "<|vision_start|>", "<|vision_pad|>", "<|fim_prefix|>", "<|repo_name|>")


def gguf_rows(model: str) -> dict[str, Any]:
    """Distances of some special tokens' output rows from the ``<tool_call>`` row in ``model``'s GGUF file."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from zhrag.models.packaged import packaged_gguf

    path = packaged_gguf(model)[0]
    reader = GGUFReader(str(path))
    field = reader.fields["tokenizer.ggml.tokens"]
    vocabulary = {bytes(field.parts[index]).decode("utf-8"): n for n, index in enumerate(field.data)}
    [output] = [tensor for tensor in reader.tensors if tensor.name == "output.weight"]
    tokens = [TAG, *[token for token in COMPARED if token in vocabulary]]
    ids = [vocabulary[token] for token in tokens]
    rows = dequantize(output.data[ids], output.tensor_type).reshape(len(ids), -1)
    return {
        "gguf": path.name,
        "row_norm": {TAG: round(float(np.linalg.norm(rows[0])), 4)},
        "distance_from_tag_row": {token: round(float(np.linalg.norm(row - rows[0])), 4)
                                  for token, row in zip(tokens[1:], rows[1:], strict=True)},
    }


def tag_logprobs(data: str, adapters: list[str], traces: int) -> dict[str, Any]:
    """Teacher-forced log-probability of ``<tool_call>`` where the traces call, base model and each adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zhrag.models import load_llm
    from zhrag.training.card import read_card
    from zhrag.training.dataset import load_training_data
    from zhrag.training.masking import tokenize_examples

    cards = [read_card(Path(adapter)) for adapter in adapters]
    models = {card["base_model"]["model"] for card in cards if card}
    hyper = {(card["hyperparameters"]["limit"], card["hyperparameters"]["seed"]) for card in cards if card}
    if len(models) != 1 or len(hyper) != 1 or None in cards:
        sys.exit("the adapters must be zhrag adapters of one base model trained on one sample")
    [model], [(limit, seed)] = models, hyper
    source = load_llm(model, engine="transformers").load_info["source"]
    tokenizer = AutoTokenizer.from_pretrained(source)
    tag = tokenizer.convert_tokens_to_ids(TAG)
    examples = load_training_data(data, "tools", limit=limit, seed=seed).examples[:traces]
    tokenized = tokenize_examples(examples, tokenizer, max_length=1536).examples
    results: dict[str, Any] = {"model": model, "traces": len(tokenized), "by_adapter": {}}
    for adapter in ["base", *adapters]:
        network = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        if adapter != "base":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                network = PeftModel.from_pretrained(network, adapter)
        network.eval()
        logprobs, preferred = [], []
        for example in tokenized:
            labels = example["labels"]
            starts = [i for i, label in enumerate(labels) if label == tag and labels[i - 1] == -100]
            with torch.no_grad():
                scores = network(torch.tensor([example["input_ids"]])).logits[0].float().log_softmax(-1)
            for position in starts:
                logprobs.append(float(scores[position - 1, tag]))
                preferred.append(tokenizer.decode([int(scores[position - 1].argmax())]))
        results["by_adapter"][adapter] = {
            "calls": len(logprobs),
            "mean_logprob": round(statistics.fmean(logprobs), 2),
            "preferred_tokens": {token: preferred.count(token) for token in sorted(set(preferred))},
        }
        print(adapter, results["by_adapter"][adapter], flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="build-data --task tools folder the adapters were trained on")
    parser.add_argument("--adapters", nargs="*", default=[], help="zhrag tool adapters of one base model")
    parser.add_argument("--traces", type=int, default=20, help="training traces to score (default 20)")
    args = parser.parse_args(argv)
    body: dict[str, Any] = {"rows": {}}
    for model in QWEN_MODELS:
        body["rows"][model] = gguf_rows(model)
        print(model, json.dumps(body["rows"][model], ensure_ascii=False), flush=True)
    if args.adapters:
        if not args.data:
            parser.error("--adapters needs --data")
        body["tag_logprob"] = tag_logprobs(args.data, args.adapters, args.traces)
    write_result(RESULTS, "tool_call_token", False, machine_info(), body)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
