"""PEFT LoRA adapters on llama.cpp: converted to GGUF LoRA files and applied to the packaged GGUF base, with the
same effect as on the transformers engine (real Gemma-3-270M, real llama.cpp)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

from zhrag import settings
from zhrag.errors import ModelLoadError
from zhrag.models import load_llm
from zhrag.models.gguf_lora import gguf_adapter
from zhrag.models.packaged import packaged_gguf

pytestmark = pytest.mark.integration
PROMPT = "问题：中国的首都是哪里？\n答案："


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random (non-zero) LoRA on the attention and MLP projections of the dequantized Gemma-3-270M."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    source = load_llm(settings.SMALL_LLM, engine="transformers").load_info["source"]
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(source)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                        init_lora_weights=False)
    path = tmp_path_factory.mktemp("lora") / "random"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        get_peft_model(base, config).save_pretrained(path)
    return path


def test_a_converted_adapter_moves_llama_cpp_as_it_moves_transformers(adapter: Path):
    base = load_llm(settings.SMALL_LLM)
    served = load_llm(settings.SMALL_LLM, adapter=str(adapter))  # engine auto: llama.cpp with the GGUF LoRA
    reference = load_llm(settings.SMALL_LLM, adapter=str(adapter), engine="transformers")
    assert served.load_info["engine"] == "llama.cpp" and served.load_info["adapter"] == str(adapter.resolve())
    assert Path(served.load_info["gguf_lora"]).is_file()
    first = [llm.generate_scored([PROMPT], max_new_tokens=3)[0] for llm in (base, served, reference)]
    assert first[1].tokens[0] != first[0].tokens[0]  # the adapter changes the next token on llama.cpp ...
    assert first[1].tokens[0] == first[2].tokens[0]  # ... to the one transformers + peft chooses
    # Converted once: the cached file is reused, and a fresh load of the base is untouched by the adapter.
    assert gguf_adapter(adapter, packaged_gguf(settings.SMALL_LLM)[0]) == Path(served.load_info["gguf_lora"])
    assert base.generate_scored([PROMPT], max_new_tokens=3)[0].tokens == first[0].tokens


def test_adapters_llama_cpp_cannot_apply_are_refused_or_run_on_transformers(
    adapter: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    gguf = packaged_gguf(settings.SMALL_LLM)[0]
    dora = tmp_path / "dora"
    dora.mkdir()
    for file in adapter.iterdir():
        (dora / file.name).write_bytes(file.read_bytes())
    config = json.loads((adapter / "adapter_config.json").read_text("utf-8"))
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}), "utf-8")
    with pytest.raises(ModelLoadError, match="uses DoRA, which llama.cpp cannot apply"):
        gguf_adapter(dora, gguf)
    with pytest.raises(ModelLoadError, match="uses DoRA"):
        load_llm(settings.SMALL_LLM, adapter=str(dora), engine="llama.cpp")
    with caplog.at_level(logging.WARNING, logger="zhrag.models.loader"):
        fallback = load_llm(settings.SMALL_LLM, adapter=str(dora))  # auto: transformers runs it
    assert fallback.load_info["engine"] == "transformers" and "transformers engine instead" in caplog.text
    other = tmp_path / "other"
    other.mkdir()
    for file in adapter.iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    (other / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": ["lm_head"]}), "utf-8")
    with pytest.raises(ModelLoadError, match="modules_to_save"):
        gguf_adapter(other, gguf)
    qwen = packaged_gguf("qwen2.5-coder-0.5b")[0] if _has_qwen() else None
    if qwen is not None:
        with pytest.raises(ModelLoadError, match="not this model's adapter"):
            gguf_adapter(adapter, qwen)  # Gemma's layers are not the Qwen model's


def _has_qwen() -> bool:
    try:
        packaged_gguf("qwen2.5-coder-0.5b")
    except ModelLoadError:
        return False
    return True


def _random_adapter(source: str, targets: list[str], path: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on adapting the output layer
        get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
                       ).save_pretrained(path)
    return path


def test_a_lora_on_the_output_layer_runs_on_llama_cpp_where_the_gguf_has_its_own(tmp_path: Path):
    # Qwen2.5-Coder's GGUF keeps output.weight apart from the token embeddings: lm_head's LoRA goes there.
    reference = load_llm("qwen2.5-coder-0.5b", engine="transformers")
    adapter = _random_adapter(reference.load_info["source"], ["lm_head"], tmp_path / "head")
    served = load_llm("qwen2.5-coder-0.5b", adapter=str(adapter), engine="llama.cpp")
    adapted = load_llm("qwen2.5-coder-0.5b", adapter=str(adapter), engine="transformers")
    first = [llm.generate_scored([PROMPT], max_new_tokens=2)[0].tokens[0]
             for llm in (load_llm("qwen2.5-coder-0.5b"), served, adapted)]
    assert first[1] != first[0] and first[1] == first[2]


def test_a_lora_on_a_tied_output_layer_is_refused_by_llama_cpp_and_runs_on_transformers(tmp_path: Path):
    # Gemma-3-270M's GGUF has no output.weight (tied to token_embd): llama.cpp cannot apply a LoRA on lm_head.
    source = load_llm(settings.SMALL_LLM, engine="transformers").load_info["source"]
    adapter = _random_adapter(source, ["q_proj", "lm_head"], tmp_path / "tied")
    with pytest.raises(ModelLoadError, match="ties its output layer to the token embeddings"):
        gguf_adapter(adapter, packaged_gguf(settings.SMALL_LLM)[0])
    assert load_llm(settings.SMALL_LLM, adapter=str(adapter)).load_info["engine"] == "transformers"


def test_output_rows_trained_outright_run_on_llama_cpp_as_on_transformers(tmp_path: Path):
    # zhrag train --output-tokens: peft's trainable tokens on lm_head, converted to a rank-k LoRA on output.weight.
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = load_llm("qwen2.5-coder-0.5b", engine="transformers").load_info["source"]
    tokenizer = AutoTokenizer.from_pretrained(source)
    base = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        first = int(base(**tokenizer(PROMPT, return_tensors="pt")).logits[0, -1].argmax())
    tag = tokenizer.convert_tokens_to_ids("<tool_call>")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], trainable_token_indices={"lm_head": [tag]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(base, config)
        rows = model.base_model.model.lm_head.token_adapter.trainable_tokens_delta["default"]
        with torch.no_grad():  # the tag's new output row: twice the row of the token the base model would write
            rows.copy_(2 * base.lm_head.weight[first].unsqueeze(0))
        model.save_pretrained(tmp_path / "rows", save_embedding_layers=False)
    served = load_llm("qwen2.5-coder-0.5b", adapter=str(tmp_path / "rows"), engine="llama.cpp")
    # A LoRA on lm_head loaded first into the shared transformers model: the rows cannot join it there, so they
    # get their own copy of the base model.
    head = _random_adapter(source, ["lm_head"], tmp_path / "head")
    assert load_llm("qwen2.5-coder-0.5b", adapter=str(head), engine="transformers").load_info["adapter"]
    adapted = load_llm("qwen2.5-coder-0.5b", adapter=str(tmp_path / "rows"), engine="transformers")
    assert adapted.load_info["shared_base"] is False
    assert [llm.generate_scored([PROMPT], max_new_tokens=1)[0].tokens[0] for llm in (served, adapted)] == [
        "<tool_call>", "<tool_call>"
    ]
