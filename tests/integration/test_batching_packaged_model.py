"""Micro-batched generation on the packaged Gemma-3-270M (transformers engine): concurrent answer calls equal one-at-a-time greedy answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from zhrag import settings
from zhrag.kb.passage import Passage
from zhrag.models import load_llm
from zhrag.models.batching import concurrent_callers
from zhrag.prompts import build_answer_prompt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSAGE = Passage(id="p1", title="长江", text="长江是中国第一长河，发源于青藏高原的唐古拉山脉，注入东海。", score=1.0)
QUESTIONS = [
    ("长江发源于哪里？", [PASSAGE]),
    ("长江注入哪个海？", [PASSAGE]),
    ("中国的首都是哪里？", []),
    ("《红楼梦》的作者是谁？", []),
    ("日本的首都是哪里？", []),
    ("中国第一长河是哪条河？", [PASSAGE]),
]


def test_concurrent_answers_are_batched_and_equal_one_at_a_time() -> None:
    llm = load_llm(settings.SMALL_LLM, engine="transformers")
    prompts = [build_answer_prompt(question, passages, chat=llm.is_chat) for question, passages in QUESTIONS]
    alone = [llm.generate([prompt], max_new_tokens=12, stop=("\n",))[0] for prompt in prompts]
    batcher = llm._runtime.batcher
    before = batcher.batches
    with concurrent_callers(len(prompts)), ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda prompt: llm.generate([prompt], max_new_tokens=12, stop=("\n",))[0], prompts))
    assert together == alone
    assert any(answer.strip() for answer in alone)
    assert batcher.batches - before < len(prompts)  # fewer forward-pass batches than calls
