"""The default model on the llama.cpp engine: load, prefill and decode speed, parallel slots, and the transformers
engine on the same GGUF file for comparison.

* Load: a fresh process loads the model with an empty ``ZHRAG_CACHE`` (the part packages are concatenated and the
  SHA-256 checked), then a second fresh process loads it from the checked file; each reports ``load_llm`` seconds
  and the process's peak memory (RSS).
* Generation, for the answer prompt of the first dev question closed-book and with 3 KB passages (the node's chat
  prompt): llama.cpp's own timings with the prompt cache off (prefill tokens/s, decode ms per token), and the wall
  time of the real short answer.
* Parallel slots: 1, 2 and 4 different closed-book prompts sent at once, each forced to N tokens (``ignore_eos``):
  wall time and generated tokens/s over all requests, against one request.
* ``--transformers``: the same GGUF on the transformers engine (dequantized once into the cache): first and cached
  load, peak memory and the closed-book short answer time.

``python benchmarks/llamacpp.py [--transformers]`` writes ``benchmarks/results/llamacpp.json``; ``--smoke`` runs the
packaged Gemma-3-270M with one repetition (for tests).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from generation import sample_inputs

from bench_common import RESULTS_DIR, machine_info, median, ratio, write_result

RESULTS = RESULTS_DIR / "llamacpp.json"
QUESTIONS = ["中国的首都是哪里？", "水的化学式是什么？", "太阳系最大的行星是哪一颗？", "光速大约是多少？"]
_LOAD_SCRIPT = (
    "import json, resource, sys, time\n"
    "start = time.perf_counter()\n"
    "from zhrag.models import load_llm\n"
    "llm = load_llm(sys.argv[1], engine=sys.argv[2])\n"
    "llm.generate(['你好'], max_new_tokens=1)\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
    "print(json.dumps({**llm.load_info, 'process_s': round(time.perf_counter() - start, 3), 'peak_rss_mib': round(peak)}))\n"
)


def load_once(model: str, engine: str, cache: Path) -> dict[str, Any]:
    """Load ``model`` on ``engine`` in a fresh process with ``ZHRAG_CACHE=cache``: load info, seconds, peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, model, engine],
        capture_output=True, text=True, env={**os.environ, "ZHRAG_CACHE": str(cache)}, timeout=3600, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"loading {model} on {engine} failed: {done.stderr.strip().splitlines()[-1:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    return {key: info.get(key) for key in ("engine", "cache_hit", "load_s", "process_s", "peak_rss_mib", "threads")}


def answer_prompts(llm: Any, smoke: bool) -> dict[str, Any]:
    """The answer node's prompts for the first dev question, closed-book and with the first 3 KB documents
    (``smoke``: a short question and three one-sentence passages)."""
    from zhrag.prompts import build_answer_prompt

    question, passages = sample_inputs(smoke)
    return {
        "closed_book": build_answer_prompt(question, [], chat=llm.is_chat),
        "three_passages": build_answer_prompt(question, passages, chat=llm.is_chat),
    }


def timed_request(llm: Any, prompt: Any, tokens: int, *, forced: bool) -> dict[str, Any]:
    """One request without the prompt cache: llama.cpp's timings plus the wall seconds."""
    body = llm._body(prompt, tokens, () if forced else ("\n",), cache_prompt=False)
    if forced:
        body["ignore_eos"] = True
    start = time.perf_counter()
    choice = llm.runtime.request(body)
    return {**choice["timings"], "wall_s": time.perf_counter() - start, "text": choice.get("message", {}).get("content")}


def measure_prompt(llm: Any, prompt: Any, tokens: int, repeats: int) -> dict[str, Any]:
    """Medians of prefill and decode speed (forced ``tokens``) and of the real short answer's wall time."""
    forced = [timed_request(llm, prompt, tokens, forced=True) for _ in range(repeats)]
    short = [timed_request(llm, prompt, 32, forced=False) for _ in range(repeats)]
    return {
        "prompt_tokens": forced[0]["prompt_n"],
        "prefill_ms": round(median([t["prompt_ms"] for t in forced]), 1),
        "prefill_tokens_per_s": round(median([t["prompt_per_second"] for t in forced]), 1),
        "decode_ms_per_token": round(median([t["predicted_per_token_ms"] for t in forced]), 1),
        "decode_tokens_per_s": round(median([t["predicted_per_second"] for t in forced]), 1),
        "short_answer_ms": round(median([t["wall_s"] for t in short]) * 1000, 1),
        "short_answer_tokens": short[0]["predicted_n"],
    }


def parallel_slots(llm: Any, tokens: int, repeats: int, counts: list[int]) -> dict[str, Any]:
    """Wall time and generated tokens/s of ``count`` different closed-book prompts sent at once, forced to ``tokens``."""
    from zhrag.prompts import build_answer_prompt

    prompts = [build_answer_prompt(q, [], chat=llm.is_chat) for q in QUESTIONS]
    rows: dict[str, Any] = {}
    for count in counts:
        walls = []
        for _ in range(repeats):
            with ThreadPoolExecutor(count) as pool:
                start = time.perf_counter()
                list(pool.map(lambda p: timed_request(llm, p, tokens, forced=True), prompts[:count]))
                walls.append(time.perf_counter() - start)
        wall = median(walls)
        rows[str(count)] = {"wall_s": round(wall, 3), "tokens_per_s": round(count * tokens / wall, 1)}
    base = rows[str(counts[0])]["tokens_per_s"]
    for row in rows.values():
        row["speedup"] = ratio(row["tokens_per_s"], base)
    return rows


def transformers_side(model: str, workdir: Path, prompt: Any, repeats: int) -> dict[str, Any]:
    """The same GGUF on the transformers engine: first (dequantize) and cached load, and the short answer time."""
    cache = workdir / "cache-transformers"
    first, cached = load_once(model, "transformers", cache), load_once(model, "transformers", cache)
    os.environ["ZHRAG_CACHE"] = str(cache)
    from zhrag.models import load_llm

    llm = load_llm(model, engine="transformers")
    llm.generate([prompt], max_new_tokens=2)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        llm.generate([prompt], max_new_tokens=32, stop=("\n",))
        seconds.append(time.perf_counter() - start)
    return {"load": {"first": first, "cached": cached}, "closed_book_short_answer_ms": round(median(seconds) * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    """Measure; write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF model (default: the default answer model)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per timing (median taken)")
    parser.add_argument("--tokens", type=int, default=32, help="N of the forced N-token generations")
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4], help="concurrent requests to compare")
    parser.add_argument("--transformers", action="store_true", help="also run the same GGUF on the transformers engine")
    parser.add_argument("--note", default=None, help="free text recorded with the machine (e.g. CPU contention)")
    parser.add_argument("--smoke", action="store_true", help="the packaged Gemma-3-270M, one repetition, 8 tokens")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from zhrag import settings

    model = settings.SMALL_LLM if args.smoke else (args.model or settings.DEFAULT_LLM)
    repeats, tokens = (1, 8) if args.smoke else (args.repeats, args.tokens)
    slots = [1, 2] if args.smoke else sorted(set(args.slots) | {1})
    with tempfile.TemporaryDirectory() as workdir:
        cache = Path(workdir) / "cache"
        load = {"first": load_once(model, "llama.cpp", cache), "cached": load_once(model, "llama.cpp", cache)}
        load["cached_speedup"] = ratio(load["first"]["process_s"], load["cached"]["process_s"])
        os.environ["ZHRAG_CACHE"] = str(cache)
        from zhrag.models import load_llm

        llm = load_llm(model, engine="llama.cpp")
        prompts = answer_prompts(llm, args.smoke)
        rows = {name: measure_prompt(llm, prompt, tokens, repeats) for name, prompt in prompts.items()}
        body: dict[str, Any] = {
            "model": model,
            "engine": "llama.cpp",
            "settings": {key: llm.load_info[key] for key in ("threads", "parallel_slots", "n_ctx")},
            "repeats": repeats,
            "forced_tokens": tokens,
            "load": load,
            "generation": rows,
            "parallel_slots": parallel_slots(llm, tokens, repeats, slots),
        }
        if args.transformers:
            body["transformers"] = transformers_side(model, Path(workdir), prompts["closed_book"], repeats)
            body["transformers"]["short_answer_ratio"] = ratio(
                body["transformers"]["closed_book_short_answer_ms"], rows["closed_book"]["short_answer_ms"]
            )
    machine = machine_info("cpu", "q4_k_m", args.note)
    machine["peak_rss_mib_this_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    document = write_result(args.out, "llamacpp", args.smoke, machine, body)
    print(json.dumps(document, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
