"""The packaged Gemma-3-270M on the transformers engine through ``load_llm``: dequantized cache, a Chinese answer,
batching, adapters.

The first run in a fresh cache dequantizes the GGUF file (about a minute on two cores); later runs,
in any process, read the cached safetensors directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from zhrag import settings
from zhrag.models import LocalLLM, load_llm

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEW_SHOT = (
    "阅读材料，回答问题。\n\n"
    "材料：北京是中华人民共和国的首都。\n问题：中国的首都是哪里？\n答案：北京\n\n"
    "材料：曹雪芹，名霑，清代小说家，著有长篇小说《红楼梦》。\n问题：《红楼梦》的作者是谁？\n答案："
)
PROMPTS = [
    FEW_SHOT,
    "问题：中国的首都是哪里？\n答案：北京\n\n问题：日本的首都是哪里？\n答案：",
    "材料：长江是中国第一长河，发源于青藏高原的唐古拉山脉。\n问题：长江发源于哪里？\n答案：",
]


@pytest.fixture(scope="module")
def gemma() -> LocalLLM:
    return load_llm(settings.SMALL_LLM, engine="transformers")


def test_packaged_model_answers_from_the_passage(gemma: LocalLLM) -> None:
    assert not gemma.is_chat
    assert gemma.load_info["kind"] == "packaged"
    [answer] = gemma.generate([FEW_SHOT], max_new_tokens=16, stop=("\n",))
    assert "曹雪芹" in answer
    assert "\n" not in answer


def test_batched_generation_equals_one_at_a_time(gemma: LocalLLM) -> None:
    batched = gemma.generate(PROMPTS, max_new_tokens=8, stop=())
    assert batched == [gemma.generate([prompt], max_new_tokens=8, stop=())[0] for prompt in PROMPTS]


def test_a_new_process_reuses_the_dequantized_cache(gemma: LocalLLM) -> None:
    script = (
        "import json; from zhrag.models import load_llm; "
        "print(json.dumps(load_llm('gemma3-270m', engine='transformers').load_info))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["cache_hit"] is True
    assert info["source"] == gemma.load_info["source"]
    assert (Path(info["source"]) / "model.safetensors").is_file()


def test_lora_adapter_on_the_packaged_model(gemma: LocalLLM, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(gemma.load_info["source"])
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers property
        get_peft_model(base, lora).save_pretrained(tmp_path / "lora")
    del base

    def logits(llm: LocalLLM) -> torch.Tensor:
        with llm.hf_model() as (model, tokenizer), torch.no_grad():
            return model(**tokenizer(PROMPTS[1], return_tensors="pt")).logits

    before = logits(gemma)
    tuned = load_llm(settings.SMALL_LLM, adapter=str(tmp_path / "lora"), engine="transformers")
    assert tuned.load_info["shared_base"]
    adapted = logits(tuned)
    assert adapted.shape == before.shape
    assert not torch.allclose(adapted, before)
    assert torch.equal(logits(gemma), before)
