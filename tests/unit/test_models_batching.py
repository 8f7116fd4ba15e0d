"""Micro-batching through ``LocalLLM`` on a tiny random model: threads share forward passes per adapter, same answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from zhrag.models import load_llm
from zhrag.models.batching import concurrent_callers

from test_models_hf import PROMPTS, make_lora_adapter, make_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny-batching"), seed=3)


def test_concurrent_calls_are_batched_and_answer_as_one_at_a_time(model_dir: Path) -> None:
    llm = load_llm(str(model_dir))
    prompts = PROMPTS * 2
    alone = [llm.generate([prompt], max_new_tokens=6, stop=())[0] for prompt in prompts]
    batcher = llm._runtime.batcher
    before = batcher.batches
    with concurrent_callers(len(prompts)), ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda prompt: llm.generate([prompt], max_new_tokens=6, stop=())[0], prompts))
    assert together == alone
    assert batcher.batches - before < len(prompts) and batcher.largest > 1


def test_answer_and_judge_adapters_are_batched_separately(model_dir: Path, tmp_path: Path) -> None:
    base = load_llm(str(model_dir))
    tuned = load_llm(str(model_dir), adapter=str(make_lora_adapter(model_dir, tmp_path / "lora")))
    jobs = [(llm, prompt) for prompt in PROMPTS for llm in (base, tuned)]
    alone = [llm.generate([prompt], max_new_tokens=6, stop=())[0] for llm, prompt in jobs]
    assert alone[0::2] != alone[1::2]  # the adapter changes the answers
    with concurrent_callers(len(jobs)), ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda job: job[0].generate([job[1]], max_new_tokens=6, stop=())[0], jobs))
    assert together == alone


def test_a_thread_holding_the_model_can_still_generate(model_dir: Path) -> None:
    llm = load_llm(str(model_dir))
    with llm.hf_model():
        [inside] = llm.generate([PROMPTS[0]], max_new_tokens=4, stop=())
    assert inside == llm.generate([PROMPTS[0]], max_new_tokens=4, stop=())[0]
