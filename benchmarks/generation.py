"""Model load and generation speed on the transformers engine, each as a two-sided comparison in one run.

Measures a completion (base) model on the transformers engine, the path of LoRA adapters and training (default:
the packaged Gemma-3-270M); the llama.cpp engine of the default chat model is measured by ``llamacpp.py``.

* Load: a fresh process loads the model with an empty ``ZHRAG_CACHE`` (the packaged GGUF is
  dequantized and cached), then a second fresh process loads it again from that cache.
* Generation, for the answer prompt of one dev question closed-book and with 3 KB passages
  (``zhrag.prompts.build_answer_prompt``): time to first token (prefill + 1 token), time per output token
  (from forced 1- and N-token generations), tokens/s over the N tokens, and the wall time and length of
  the real short answer (``LocalLLM.generate``, stop at the newline, 32-token budget).
* Batched decode: the closed-book prompt repeated 1, 4 and 8 times in one forward pass, forced N tokens:
  prefill time, time per decode step and tokens/s over all sequences, against batch 1.

``python benchmarks/generation.py`` writes ``benchmarks/results/generation.json``; ``--smoke`` does the same
on a tiny random model with three repetitions (for tests).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    RESULTS_DIR,
    machine_info,
    median,
    ratio,
    tiny_model_dir,
    write_result,
)

RESULTS = RESULTS_DIR / "generation.json"
SMOKE_QUESTION = "中国的首都是哪里？"
_LOAD_SCRIPT = (
    "import json, sys, time\n"
    "start = time.perf_counter()\n"
    "from zhrag.models import load_llm\n"
    "llm = load_llm(sys.argv[1], device=sys.argv[2] or None, engine='transformers')\n"
    "print(json.dumps({**llm.load_info, 'process_s': round(time.perf_counter() - start, 3)}))\n"
)


def load_once(model: str, device: str | None, cache: Path) -> dict[str, Any]:
    """Load ``model`` in a fresh Python process with ``ZHRAG_CACHE=cache``; its ``load_info`` plus ``process_s``."""
    env = {**os.environ, "ZHRAG_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, model, device or ""],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"loading {model} failed: {done.stderr.strip().splitlines()[-1:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    return {key: info[key] for key in ("kind", "cache_hit", "load_s", "process_s", "device", "dtype")}


def sample_inputs(smoke: bool) -> tuple[str, list[Any]]:
    """A question and 3 passages: the first dev question and the first 3 KB documents (synthetic when smoke)."""
    from zhrag import settings
    from zhrag.evaluation.datasets import load_questions
    from zhrag.kb.passage import Passage
    from zhrag.kb.sources import iter_documents

    if smoke:
        texts = ["北京是中华人民共和国的首都。", "曹雪芹，清代小说家，著有《红楼梦》。", "长江是中国第一长河。"]
        return SMOKE_QUESTION, [Passage(id=f"s{n}", title="", text=text, score=1.0) for n, text in enumerate(texts)]
    question = load_questions(None, limit=1)[0].question
    documents = []
    for document in iter_documents(settings.default_kb_source()):
        documents.append(Passage(id=document.id, title=document.title, text=document.text, score=1.0))
        if len(documents) == 3:
            break
    return question, documents


def forced_generation_s(llm: Any, prompt: str, tokens: int, batch: int = 1) -> float:
    """Seconds to generate exactly ``tokens`` tokens greedily after ``batch`` copies of ``prompt`` (end-of-text suppressed)."""
    import torch

    with llm.hf_model() as (model, tokenizer), torch.no_grad():
        inputs = tokenizer([prompt] * batch, return_tensors="pt").to(model.device)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(
            **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def first_and_full_s(llm: Any, prompt: str, tokens: int, repeats: int, batch: int = 1) -> tuple[float, float, float]:
    """Median seconds to the first token and to ``tokens`` tokens, and the per-step decode time derived from them."""
    forced_generation_s(llm, prompt, 2, batch)  # warm-up
    first = median([forced_generation_s(llm, prompt, 1, batch) for _ in range(repeats)])
    full = median([forced_generation_s(llm, prompt, tokens, batch) for _ in range(repeats)])
    return first, full, (full - first) / (tokens - 1)


def measure_prompt(llm: Any, prompt: str, tokens: int, repeats: int) -> dict[str, Any]:
    """TTFT, time per output token, tokens/s and the real short answer's time for one prompt (medians)."""
    with llm.hf_model() as (_, tokenizer):
        prompt_tokens = len(tokenizer(prompt)["input_ids"])
    first, full, per_token = first_and_full_s(llm, prompt, tokens, repeats)
    answers, seconds = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        answers.append(llm.generate([prompt], max_new_tokens=32, stop=("\n",))[0])
        seconds.append(time.perf_counter() - start)
    with llm.hf_model() as (_, tokenizer):
        answer_tokens = len(tokenizer(answers[0], add_special_tokens=False)["input_ids"])
    return {
        "prompt_tokens": prompt_tokens,
        "ttft_ms": round(first * 1000, 1),
        "per_output_token_ms": round(per_token * 1000, 2),
        "forced_tokens": tokens,
        "tokens_per_s": round(tokens / full, 1),
        "decode_tokens_per_s": round(1 / per_token, 1) if per_token > 0 else None,
        "short_answer_ms": round(median(seconds) * 1000, 1),
        "short_answer_tokens": answer_tokens,
    }


def batched_decode(llm: Any, prompt: str, tokens: int, repeats: int, batches: list[int]) -> dict[str, Any]:
    """Prefill and per-step decode time with ``batch`` equal prompts, and tokens/s over all sequences, per batch size.

    Equal prompts need no padding and every sequence decodes exactly ``tokens`` tokens, so this is the speed
    batching can give on the device; an evaluation's ragged prompts and answer lengths get less.
    """
    rows = {}
    for batch in batches:
        first, full, step = first_and_full_s(llm, prompt, tokens, repeats, batch)
        rows[str(batch)] = {
            "prefill_ms": round(first * 1000, 1),
            "decode_step_ms": round(step * 1000, 2),
            "decode_tokens_per_s": round(batch / step, 1) if step > 0 else None,
            "tokens_per_s": round(batch * tokens / full, 1),
        }
    base = rows[str(batches[0])]
    for row in rows.values():
        row["decode_speedup"] = ratio(row["decode_tokens_per_s"] or 0, base["decode_tokens_per_s"] or 0)
        row["tokens_per_s_speedup"] = ratio(row["tokens_per_s"], base["tokens_per_s"])
    return {"prompt": "closed_book", "forced_tokens": tokens, "batches": rows}


def main(argv: list[str] | None = None) -> int:
    """Measure load and generation; write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="base model to measure (default: the packaged gemma3-270m)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions per timing (median taken)")
    parser.add_argument("--tokens", type=int, default=16, help="N of the forced N-token generation")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8], help="batch sizes of the batched decode")
    parser.add_argument("--note", default=None, help="free text recorded with the machine (e.g. CPU contention)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, three repetitions")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # smoke: 3 repetitions and 16 tokens, so decode time outweighs timer noise on busy cores (step = (full - first) / 15)
    repeats, tokens = (3, 16) if args.smoke else (args.repeats, args.tokens)
    batches = [1, 2] if args.smoke else sorted(set(args.batches) | {1})
    with tempfile.TemporaryDirectory() as workdir:
        from zhrag import settings

        model = str(tiny_model_dir(Path(workdir) / "tiny")) if args.smoke else (args.model or settings.SMALL_LLM)
        cache = Path(workdir) / "cache"
        first = load_once(model, args.device, cache)
        cached = load_once(model, args.device, cache)
        os.environ["ZHRAG_CACHE"] = str(cache)
        from zhrag.models import load_llm
        from zhrag.prompts import build_answer_prompt

        llm = load_llm(model, device=args.device, engine="transformers")
        if llm.is_chat:
            raise SystemExit("this benchmark measures completion (base) models; the model has a chat template")
        question, passages = sample_inputs(args.smoke)
        rows = {
            "closed_book": measure_prompt(llm, build_answer_prompt(question, [], chat=False), tokens, repeats),
            "three_passages": measure_prompt(llm, build_answer_prompt(question, passages, chat=False), tokens, repeats),
        }
        batched = batched_decode(llm, build_answer_prompt(question, [], chat=False), tokens, repeats, batches)
    body = {
        "model": args.model or ("tiny-random-llama" if args.smoke else settings.SMALL_LLM),
        "engine": "transformers",
        "repeats": repeats,
        "load": {
            "first": first,
            "cached": cached,
            "cached_speedup": ratio(first["load_s"], cached["load_s"]),
        },
        "generation": rows,
        "batched_decode": batched,
        "ratios": {
            "ttft_three_passages_vs_closed_book": ratio(rows["three_passages"]["ttft_ms"], rows["closed_book"]["ttft_ms"]),
            "short_answer_three_passages_vs_closed_book": ratio(
                rows["three_passages"]["short_answer_ms"], rows["closed_book"]["short_answer_ms"]
            ),
        },
    }
    machine = machine_info(llm.load_info["device"], llm.load_info["dtype"], args.note)
    document = write_result(args.out, "generation", args.smoke, machine, body)
    print(json.dumps(document, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
