"""The Hugging Face path of ``load_llm`` on tiny random-weight models built in the test (no pretrained model).

They check the plumbing the real model relies on: directory loading, per-process caching, batched
versus one-at-a-time greedy decoding, stop strings, chat templates and LoRA adapters sharing the
base weights.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from zhrag.errors import ModelLoadError
from zhrag.models import LocalLLM, load_llm

from tiny_models import tiny_llama_dir

CORPUS = [
    "材料：曹雪芹，清代小说家，著有《红楼梦》。\n问题：《红楼梦》的作者是谁？\n答案：曹雪芹",
    "材料：北京是中华人民共和国的首都。\n问题：中国的首都是哪里？\n答案：北京",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}：{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant：{% endif %}"
)
PROMPTS = ["问题：中国的首都是哪里？\n答案：", "材料：曹雪芹著有《红楼梦》。\n问题：作者是谁？\n答案：", "问题："]


def make_model_dir(path: Path, *, hidden_size: int = 32, chat: bool = False, seed: int = 0) -> Path:
    """Save a random two-layer Llama with a byte-level BPE tokenizer trained on ``CORPUS`` to ``path``."""
    return tiny_llama_dir(
        path, CORPUS, hidden_size=hidden_size, chat_template=CHAT_TEMPLATE if chat else None, seed=seed
    )


def make_lora_adapter(model_dir: Path, path: Path) -> Path:
    """Save a LoRA adapter with random (non-zero) weights for the model in ``model_dir`` to ``path``."""
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers property
        get_peft_model(base, lora).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny"))


def next_token_logits(llm: LocalLLM, text: str) -> torch.Tensor:
    """The model's logits for ``text`` (its adapter active)."""
    with llm.hf_model() as (model, tokenizer), torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_directory_model_loads_once_per_resolved_arguments(tiny_dir: Path) -> None:
    llm = load_llm(str(tiny_dir), device="cpu")
    assert not llm.is_chat
    assert type(llm.model).__name__ == "HuggingFacePipeline"
    assert llm.load_info["kind"] == "dir"
    assert llm.load_info["cache_hit"] is None
    assert (llm.load_info["device"], llm.load_info["dtype"]) == ("cpu", "float32")
    assert load_llm(str(tiny_dir), device="cpu", dtype="float32") is llm
    assert load_llm(str(tiny_dir) + "/") is llm


def test_concurrent_first_loads_load_once(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "m")
    results: list[LocalLLM] = []
    threads = [threading.Thread(target=lambda: results.append(load_llm(str(model_dir)))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3
    assert all(result is results[0] for result in results)


def test_batched_generation_equals_one_at_a_time(tiny_dir: Path) -> None:
    llm = load_llm(str(tiny_dir))
    batched = llm.generate(PROMPTS, max_new_tokens=6, stop=())
    single = [llm.generate([prompt], max_new_tokens=6, stop=())[0] for prompt in PROMPTS]
    assert batched == single
    assert all(text for text in batched)
    assert not any(text.startswith(prompt) for text, prompt in zip(batched, PROMPTS, strict=True))


def test_generation_stops_at_and_drops_the_stop_string(tiny_dir: Path) -> None:
    llm = load_llm(str(tiny_dir))
    [full] = llm.generate([PROMPTS[0]], max_new_tokens=8, stop=())
    stop = full[len(full) // 2]
    [cut] = llm.generate([PROMPTS[0]], max_new_tokens=8, stop=(stop,))
    assert cut == full[: full.index(stop)]


def test_chat_template_models_go_through_chat_huggingface(tmp_path: Path) -> None:
    """The reply is the greedy continuation of the chat template's tokens, without a second BOS."""
    llm = load_llm(str(make_model_dir(tmp_path / "chat", chat=True)))
    assert llm.is_chat
    assert type(llm.model).__name__ == "ChatHuggingFace"
    [reply] = llm.generate(["中国的首都是哪里？"], max_new_tokens=5, stop=())
    with llm.hf_model() as (model, tokenizer), torch.no_grad():
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "中国的首都是哪里？"}], add_generation_prompt=True, return_tensors="pt",
            return_dict=True,
        )
        tokens = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert reply == tokenizer.decode(tokens[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)


def test_lora_adapter_shares_the_base_and_changes_only_its_own_outputs(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "base")
    adapter = make_lora_adapter(model_dir, tmp_path / "lora")
    base = load_llm(str(model_dir))
    before = next_token_logits(base, PROMPTS[1])
    base_texts = base.generate(PROMPTS, max_new_tokens=4, stop=())
    tuned = load_llm(str(model_dir), adapter=str(adapter))
    assert tuned is not base
    assert tuned.load_info["shared_base"] and tuned.load_info["adapter"] == str(adapter)
    assert load_llm(str(model_dir), adapter=str(adapter)) is tuned
    adapted = next_token_logits(tuned, PROMPTS[1])
    assert adapted.shape == before.shape
    assert not torch.allclose(adapted, before)
    assert torch.equal(next_token_logits(base, PROMPTS[1]), before)
    assert base.generate(PROMPTS, max_new_tokens=4, stop=()) == base_texts
    assert len(tuned.generate(PROMPTS, max_new_tokens=4)) == len(PROMPTS)


def test_adapter_for_another_base_is_refused_and_leaves_the_model_intact(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "base")
    other = make_lora_adapter(make_model_dir(tmp_path / "other", hidden_size=48), tmp_path / "other-lora")
    base = load_llm(str(model_dir))
    before = next_token_logits(base, PROMPTS[0])
    with pytest.raises(ModelLoadError, match=f"adapter {other} does not fit model .*weight shapes differ"):
        load_llm(str(model_dir), adapter=str(other))
    assert torch.equal(next_token_logits(base, PROMPTS[0]), before)
