"""A LoRA adapter on a packaged GGUF model: llama.cpp with the adapter converted to a GGUF LoRA against the
transformers engine on the dequantized model (the issue's "convert, or run it on transformers — measure").

The adapter is a random (non-zero) peft LoRA, rank ``--rank``, on every attention and MLP projection of the model
(what `zhrag train` adapts by default), saved once. Each engine then loads it in fresh processes: the first time
with an empty ``ZHRAG_CACHE`` (llama.cpp: assemble the GGUF and convert the adapter; transformers: dequantize the
GGUF into a safetensors model), then again with that cache. Each load reports ``load_llm`` seconds, the whole
process's seconds and peak memory (RSS); the loaded model then answers the closed-book prompt of four questions and
the median answer time is recorded, with whether both engines chose the same first token. Peak memory is the
process's VmHWM (Linux).

``python benchmarks/adapter_engines.py`` writes ``benchmarks/results/adapter_engines.json`` (default model: the
packaged Gemma-3-270M; ``--model qwen2.5-coder-0.5b`` for the Qwen model).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from bench_common import RESULTS_DIR, machine_info, ratio, write_result

RESULTS = RESULTS_DIR / "adapter_engines.json"
QUESTIONS = ["中国的首都是哪里？", "水的化学式是什么？", "太阳系最大的行星是哪一颗？", "光速大约是多少？"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: One fresh process: load the model with the adapter on an engine, answer the questions, report times and memory.
_RUN = """
import json, statistics, sys, time
start = time.perf_counter()
from zhrag.models import load_llm
from zhrag.prompts.answer import build_answer_prompt
llm = load_llm(sys.argv[1], adapter=sys.argv[2], engine=sys.argv[3])
loaded = time.perf_counter() - start
questions = json.loads(sys.argv[4])
seconds, first = [], []
for question in questions:
    prompt = build_answer_prompt(question, [], chat=llm.is_chat)
    clock = time.perf_counter()
    scored = llm.generate_scored([prompt], max_new_tokens=16)[0]
    seconds.append(time.perf_counter() - clock)
    first.append(scored.tokens[0] if scored.tokens else "")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
print(json.dumps({"engine": llm.load_info["engine"], "load_s": llm.load_info["load_s"], "process_load_s": loaded,
                  "answer_s_median": statistics.median(seconds), "first_tokens": first, "peak_rss_mib": peak}))
"""


def make_adapter(model: str, rank: int, folder: Path, cache: Path) -> Path:
    """A random LoRA of ``rank`` on every projection of ``model``'s dequantized weights, saved in ``folder``."""
    os.environ["ZHRAG_CACHE"] = str(cache)
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from zhrag.models import load_llm

    source = load_llm(model, engine="transformers").load_info["source"]
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(source)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        get_peft_model(base, config).save_pretrained(folder)
    return folder


def run(model: str, adapter: Path, engine: str, cache: Path) -> dict[str, Any]:
    """One fresh process on ``engine`` with ``ZHRAG_CACHE=cache``."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN, model, str(adapter), engine, json.dumps(QUESTIONS, ensure_ascii=False)],
        capture_output=True, text=True, env={**os.environ, "ZHRAG_CACHE": str(cache)}, timeout=3600, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{engine} with the adapter failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in result.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m", help="packaged GGUF model alias")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--note", default=None, help="free text recorded with the machine (e.g. CPU contention)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    machine = machine_info(note=args.note)
    engines: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="zhrag-adapters-") as temporary:
        work = Path(temporary)
        adapter = make_adapter(args.model, args.rank, work / "adapter", work / "adapter-cache")
        for engine in ("llama.cpp", "transformers"):
            cache = work / f"cache-{engine}"
            engines[engine] = {"first": run(args.model, adapter, engine, cache),
                               "cached": run(args.model, adapter, engine, cache)}
    llama, hf = engines["llama.cpp"]["cached"], engines["transformers"]["cached"]
    body = {
        "model": args.model,
        "adapter": {"rank": args.rank, "target_modules": TARGETS, "init": "random (peft init_lora_weights=False)"},
        "engines": engines,
        "same_first_tokens": sum(a == b for a, b in zip(llama["first_tokens"], hf["first_tokens"], strict=True)),
        "questions": len(QUESTIONS),
        "ratios": {
            "first_load_transformers_vs_llamacpp": ratio(
                engines["transformers"]["first"]["process_load_s"], engines["llama.cpp"]["first"]["process_load_s"]
            ),
            "cached_load_transformers_vs_llamacpp": ratio(hf["process_load_s"], llama["process_load_s"]),
            "answer_transformers_vs_llamacpp": ratio(hf["answer_s_median"], llama["answer_s_median"]),
            "peak_rss_transformers_vs_llamacpp": ratio(hf["peak_rss_mib"], llama["peak_rss_mib"]),
        },
    }
    write_result(args.out, "adapter_engines", False, machine, body)
    print(json.dumps(body, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
