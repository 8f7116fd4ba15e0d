"""The llama.cpp engine on the packaged models: assembly and hash check, chat templates, answers, probabilities,
parallel slots.

The default model is Qwen2.5-Coder-1.5B-Instruct (Q4_K_M); the smaller Qwen2.5-Coder-0.5B-Instruct and the Gemma-3-270M
base model check the other aliases. Each assertion is about what a real model does with a real prompt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from zhrag import settings
from zhrag.errors import ConfigError
from zhrag.kb.passage import Passage
from zhrag.models import LLM, load_llm
from zhrag.models.packaged import PACKAGED_MODELS, packaged_gguf
from zhrag.nodes.judge import judge_scores
from zhrag.prompts import build_answer_prompt, build_judge_prompt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JIUMING = Passage(
    id="cmrc2018-140#0", title="九命奇冤", score=1.0,
    text="《九命奇冤》，清吴沃尧所著，共三十六回，是晚清谴责小说之一，取材于雍正年间广东番禺的一桩命案。",
)
RIVER = Passage(id="x#0", title="长江", score=0.5, text="长江是中国第一长河，发源于青藏高原的唐古拉山脉，注入东海。")
QUESTION = "《九命奇冤》是由哪位作者所著？"


@pytest.fixture(scope="module")
def qwen() -> LLM:
    return load_llm()


def test_the_default_model_is_the_checked_qwen_gguf_on_llama_cpp(qwen: LLM) -> None:
    info = qwen.load_info
    assert (info["model"], info["kind"], info["engine"]) == ("qwen2.5-coder-1.5b", "packaged", "llama.cpp")
    assert qwen.is_chat and qwen.supports_logprobs
    path, hit = packaged_gguf(settings.DEFAULT_LLM)
    assert hit and str(path) == info["source"] and path.stat().st_size == PACKAGED_MODELS[settings.DEFAULT_LLM].size


def test_it_reads_the_answer_from_the_passage(qwen: LLM) -> None:
    prompt = build_answer_prompt(QUESTION, [RIVER, JIUMING], chat=True)
    [scored] = qwen.generate_scored([prompt], max_new_tokens=16, stop=("\n",))
    assert "吴沃尧" in scored.text
    assert 0.5 < scored.confidence() <= 1.0
    assert qwen.generate([prompt], max_new_tokens=16) == [scored.text]


def test_the_judge_scores_the_answering_passage_above_an_unrelated_one(qwen: LLM) -> None:
    prompts = [build_judge_prompt(QUESTION, passage, chat=True) for passage in (JIUMING, RIVER)]
    (relevant, raw_relevant), (unrelated, raw_unrelated) = judge_scores(qwen, prompts)
    assert raw_relevant is None and raw_unrelated is None  # scores from probabilities, no text parsed
    assert relevant > 0.8 and unrelated < relevant - 0.3


def test_concurrent_requests_share_the_slots_and_equal_sequential_answers(qwen: LLM) -> None:
    questions = ["中国的首都是哪里？", "《红楼梦》的作者是谁？", "水的化学式是什么？", "日本的首都是哪里？"]
    prompts = [build_answer_prompt(question, [], chat=True) for question in questions]
    alone = [qwen.generate([prompt], max_new_tokens=8)[0] for prompt in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda prompt: qwen.generate([prompt], max_new_tokens=8)[0], prompts))
    assert together == alone
    assert "北京" in alone[0] and "曹雪芹" in alone[1]


def test_a_prompt_longer_than_the_context_is_a_one_line_error(qwen: LLM) -> None:
    with pytest.raises(ConfigError, match="llama.cpp refused the request .*exceeds the available context size"):
        qwen.generate(["很长的问题" * 5000], max_new_tokens=4)


def test_the_small_qwen_and_the_gemma_base_model() -> None:
    small = load_llm("qwen2.5-coder-0.5b")
    assert small.is_chat and small.load_info["engine"] == "llama.cpp"
    [answer] = small.generate([build_answer_prompt("中国的首都是哪里？", [], chat=True)], max_new_tokens=8)
    assert "北京" in answer
    gemma = load_llm(settings.SMALL_LLM)
    assert not gemma.is_chat and gemma.load_info["engine"] == "llama.cpp"
    [text] = gemma.generate(["问题：中国的首都是哪里？\n答案：北京\n\n问题：日本的首都是哪里？\n答案："], max_new_tokens=6)
    assert "东京" in text
    # A base model is served by the completion endpoint, which takes the number of alternatives as ``logprobs``
    # (it ignores ``top_logprobs``): with only the top token returned, at most one candidate could be non-zero.
    [probs] = gemma.next_token_probabilities(["问题：中国的首都是哪里？\n答案：北京\n\n问题：日本的首都是哪里？\n答案："], ("东", "大"))
    assert all(p > 0 for p in probs.values()), probs


def test_ask_json_names_the_model_and_its_engine() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zhrag.cli", "ask", "--variant", "a0", "--json", "中国的首都是哪里？"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    [model] = record["models"]
    assert (model["model"], model["engine"], model["cache_hit"]) == ("qwen2.5-coder-1.5b", "llama.cpp", True)
    assert "北京" in record["answer"]
