"""LoRA training on a tiny random Gemma-3 built from a config (no pretrained weights): batches, tail loss, runs.

The tail loss must equal transformers' own full-logits causal-LM loss (value and gradients); a run must
write the adapter, card and loss plot, resume after an interruption to the same weights as an
uninterrupted run, refuse another adapter's folder, and give an adapter that ``load_llm`` applies.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    PreTrainedTokenizerFast,
)

from zhrag.errors import ConfigError, ModelLoadError
from zhrag.models import load_llm
from zhrag.training.card import CARD_FILE, CHECKPOINTS_DIR, LOSS_PLOT_FILE, RUN_FILE
from zhrag.training.lora import LoraSettings, TrainSettings, train_adapter
from zhrag.training.masking import IGNORE_INDEX, tokenize_conversation
from zhrag.training.sft import LeftPadCollator, logits_needed, tail_loss

from tiny_models import bpe_tokenizer
from trainer_hooks import InterruptAt

pytest.importorskip("datasets", reason="the optional 'datasets' package (zhrag[train]) reads training files")

QA = [
    ("中国的首都是哪里？", "北京"),
    ("《红楼梦》的作者是谁？", "曹雪芹"),
    ("长江发源于哪里？", "唐古拉山脉"),
    ("日本的首都是哪里？", "东京"),
    ("青溪镇以出产什么闻名？", "竹编工艺品"),
    ("白鹭湖的湖心岛上建有什么？", "观鸟塔"),
]
CORPUS = [f"材料：{answer}。\n问题：{question}\n答案：{answer}" for question, answer in QA]
FAST = TrainSettings(
    max_steps=2, batch_size=2, learning_rate=5e-3, max_length=64, save_steps=1, logging_steps=1, warmup_ratio=0.0
)
NO_DROPOUT = LoraSettings(rank=4, alpha=8, dropout=0.0)


def tiny_gemma_dir(path: Path, *, seed: int = 0) -> Path:
    """Save a random two-layer Gemma-3 text model with a byte-level BPE tokenizer (BOS prepended) to ``path``."""
    tokenizer = bpe_tokenizer(CORPUS, vocab_size=500, bos="<bos>", eos="<eos>")
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=256, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    Gemma3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def conversation(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": f"问题：{question}\n答案："}, {"from": "gpt", "value": answer}]


def write_examples(path: Path, pairs: list[tuple[str, str]] = QA, task: str = "answer") -> Path:
    rows = [
        {"id": f"q{index}", "task": task, "conversations": conversation(question, answer), "meta": {}}
        for index, (question, answer) in enumerate(pairs)
    ]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gemma_dir(tmp_path_factory.mktemp("tiny") / "tiny-gemma")


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> tuple[Gemma3ForCausalLM, PreTrainedTokenizerFast]:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    return model, PreTrainedTokenizerFast.from_pretrained(tiny_dir)


def tokenized(tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[str, str]]) -> list[dict[str, list[int]]]:
    return [tokenize_conversation(conversation(q, a), tokenizer, max_length=64) for q, a in pairs]


# ---------------------------------------------------------------------------------------------- batches and loss


def test_collator_pads_on_the_left_with_masked_labels_and_unpadded_positions() -> None:
    features = [
        {"input_ids": [5, 6, 7, 8], "attention_mask": [1, 1, 1, 1], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, 8]},
        {"input_ids": [9, 10], "attention_mask": [1, 1], "labels": [IGNORE_INDEX, 10]},
    ]
    batch = LeftPadCollator(pad_token_id=0)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [0, 0, 9, 10]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [-100, -100, -100, 10]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]
    assert logits_needed(batch["labels"]) == 3  # positions 1..3: position 1 predicts the first learned label
    assert logits_needed(torch.full((2, 4), IGNORE_INDEX)) == 0


def test_tail_loss_equals_the_full_logits_loss_and_its_gradients(tiny) -> None:
    model, tokenizer = tiny
    batch = LeftPadCollator(tokenizer.pad_token_id)(tokenized(tokenizer, QA[:3]))
    assert logits_needed(batch["labels"]) < batch["input_ids"].shape[1] // 2  # the tail is short: that is the point

    model.zero_grad()
    full = model(**batch).loss  # transformers' own shifted cross-entropy over all logits
    full.backward()
    full_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    tail = tail_loss(model, batch)
    tail.backward()
    assert torch.allclose(tail, full, atol=1e-6)
    for full_grad, parameter in zip(full_grads, model.parameters(), strict=True):
        assert torch.allclose(parameter.grad, full_grad, atol=1e-6)
    model.zero_grad()


def test_left_padding_does_not_change_any_example_loss(tiny) -> None:
    model, tokenizer = tiny
    features = tokenized(tokenizer, QA[:3])
    collate = LeftPadCollator(tokenizer.pad_token_id)
    with torch.no_grad():
        sums = [tail_loss(model, collate([f]), num_items_in_batch=1) for f in features]
        learned = sum(sum(label != IGNORE_INDEX for label in f["labels"][1:]) for f in features)
        together = tail_loss(model, collate(features), num_items_in_batch=learned)
        mean = tail_loss(model, collate(features))
    # With num_items_in_batch the losses are sums over the learned tokens divided by that count.
    assert torch.allclose(together, sum(sums) / learned, atol=1e-5)
    assert torch.allclose(mean, together, atol=1e-6)


# ---------------------------------------------------------------------------------------------- training runs


def adapter_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "adapter_model.safetensors")


def test_training_writes_adapter_card_and_loss_curve(tiny_dir: Path, tmp_path: Path) -> None:
    data = write_examples(tmp_path / "train.jsonl")
    out = tmp_path / "adapters" / "tiny"
    result = train_adapter("answer", data, out, model=str(tiny_dir), lora=NO_DROPOUT, train=FAST, progress=False)
    assert result.trained and result.resumed_from is None
    assert {"adapter_config.json", "adapter_model.safetensors", CARD_FILE, "README.md", LOSS_PLOT_FILE} <= {
        path.name for path in out.iterdir()
    }
    assert (out / LOSS_PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = json.loads((out / CARD_FILE).read_text(encoding="utf-8"))
    assert card == result.card
    assert card["task"] == "answer"
    assert card["data"]["examples"] == card["data"]["trained_examples"] == len(QA)
    assert len(card["data"]["sha256"]) == 64
    assert card["base_model"]["name_or_path"] == str(tiny_dir)
    assert card["base_model"]["architecture"]["model_type"] == "gemma3_text"
    assert card["hyperparameters"]["lora_rank"] == 4
    assert card["hyperparameters"]["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert card["result"]["global_step"] == 2
    assert [step for step, _ in card["result"]["loss_curve"]] == [1, 2]
    assert card["result"]["final_loss"] == card["result"]["loss_curve"][-1][1] > 0
    assert card["result"]["wall_s"] > 0 and card["result"]["seconds_per_example"] > 0
    assert card["device"]["type"] == "cpu" and card["device"]["dtype"] == "float32"
    session = card["session"]  # when, with which code, and how loaded the machine was (see zhrag.run_folder)
    assert set(session["code"]) == {"commit", "dirty"} and session["started"] <= session["finished"]
    assert "load_average_at_start" in session and "load_average_at_end" in session
    assert json.loads((out / CHECKPOINTS_DIR / RUN_FILE).read_text(encoding="utf-8"))["sessions"] == [session]
    assert "training loss" in (out / "README.md").read_text(encoding="utf-8")
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["r"] == 4 and config["base_model_name_or_path"] == str(tiny_dir)

    again = train_adapter("answer", data, out, model=str(tiny_dir), lora=NO_DROPOUT, train=FAST, progress=False)
    assert not again.trained and again.card == card  # the same command finds the finished adapter


def test_interrupted_run_resumes_to_the_same_adapter(tiny_dir: Path, tmp_path: Path) -> None:
    data = write_examples(tmp_path / "train.jsonl")
    straight = train_adapter(
        "answer", data, tmp_path / "straight", model=str(tiny_dir), lora=NO_DROPOUT, train=FAST, progress=False
    )
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_adapter(
            "answer", data, out, model=str(tiny_dir), lora=NO_DROPOUT, train=FAST, progress=False,
            callbacks=[InterruptAt(2)],
        )
    assert (out / CHECKPOINTS_DIR / RUN_FILE).is_file()
    assert (out / CHECKPOINTS_DIR / "checkpoint-1").is_dir() and not (out / CARD_FILE).exists()

    resumed = train_adapter("answer", data, out, model=str(tiny_dir), lora=NO_DROPOUT, train=FAST, progress=False)
    assert resumed.trained and resumed.resumed_from.endswith("checkpoint-1")
    assert resumed.card["result"]["global_step"] == 2
    first, second = adapter_weights(tmp_path / "straight"), adapter_weights(out)
    assert first.keys() == second.keys()
    assert all(torch.allclose(first[name], second[name], atol=1e-6) for name in first)
    assert resumed.card["result"]["loss_curve"] == straight.card["result"]["loss_curve"]
    interrupted, finished = json.loads((out / CHECKPOINTS_DIR / RUN_FILE).read_text(encoding="utf-8"))["sessions"]
    assert "finished" not in interrupted and finished == resumed.card["session"]

    longer = replace(FAST, max_steps=3)  # a longer schedule continues the same adapter
    extended = train_adapter("answer", data, out, model=str(tiny_dir), lora=NO_DROPOUT, train=longer, progress=False)
    assert extended.resumed_from.endswith("checkpoint-2") and extended.card["result"]["global_step"] == 3


def test_another_adapter_in_out_is_refused_unless_forced(tiny_dir: Path, tmp_path: Path) -> None:
    data = write_examples(tmp_path / "train.jsonl")
    other = write_examples(tmp_path / "other.jsonl", QA[:4])
    out = tmp_path / "adapter"
    train_adapter("answer", data, out, model=str(tiny_dir), lora=NO_DROPOUT, train=FAST, progress=False)
    before = (out / "adapter_model.safetensors").read_bytes()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"holds an adapter trained with other settings \(data_sha256\).*--force"):
        train_adapter("answer", other, out, model=str(tiny_dir), lora=NO_DROPOUT, train=FAST, progress=False)
    rank8 = LoraSettings(rank=8, alpha=8, dropout=0.0)
    with pytest.raises(ConfigError, match=r"other settings \(lora.rank\)"):
        train_adapter("answer", data, out, model=str(tiny_dir), lora=rank8, train=FAST, progress=False)
    assert (out / "adapter_model.safetensors").read_bytes() == before

    forced = train_adapter(
        "answer", other, out, model=str(tiny_dir), lora=NO_DROPOUT, train=FAST, progress=False, force=True
    )
    assert forced.trained and forced.card["data"]["examples"] == 4
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"  # only the adapter's own files are replaced
    [backup] = out.glob("replaced-*")  # and those are moved aside, not deleted
    assert (backup / "adapter_model.safetensors").read_bytes() == before


def test_trained_adapter_loads_on_its_base_and_is_refused_on_another(tiny_dir: Path, tmp_path: Path) -> None:
    data = write_examples(tmp_path / "train.jsonl")
    out = tmp_path / "adapter"
    strong = replace(FAST, max_steps=4, learning_rate=5e-2)
    train_adapter("answer", data, out, model=str(tiny_dir), lora=NO_DROPOUT, train=strong, progress=False)
    prompt = "问题：中国的首都是哪里？\n答案："
    base, tuned = load_llm(str(tiny_dir)), load_llm(str(tiny_dir), adapter=str(out))
    with base.hf_model() as (model, tokenizer), torch.no_grad():
        before = model(**tokenizer(prompt, return_tensors="pt")).logits
    with tuned.hf_model() as (model, tokenizer), torch.no_grad():
        after = model(**tokenizer(prompt, return_tensors="pt")).logits
    assert not torch.allclose(before, after)

    edited = shutil.copytree(out, tmp_path / "edited-adapter")  # a card recording another architecture
    card = json.loads((edited / CARD_FILE).read_text(encoding="utf-8"))
    card["base_model"]["architecture"]["vocab_size"] += 1
    (edited / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"was trained on a base model with vocab_size=\d+ \(this one has \d+\)"):
        load_llm(str(tiny_dir), adapter=str(edited))

    renamed = shutil.copytree(tiny_dir, tmp_path / "another-model")  # same shapes, another base model
    with pytest.raises(ModelLoadError, match=f"adapter {out} was trained on base model '.*tiny-gemma'"):
        load_llm(str(renamed), adapter=str(out))
    (out / CARD_FILE).unlink()  # without a card, peft's adapter_config.json names the base model
    with pytest.raises(ModelLoadError, match="was trained on base model"):
        load_llm(str(renamed), adapter=str(out))
    assert load_llm(str(renamed)).generate([prompt], max_new_tokens=2, stop=()) is not None  # base left usable


def test_bad_settings_and_unknown_target_modules_are_clear_errors(tiny_dir: Path, tmp_path: Path) -> None:
    data = write_examples(tmp_path / "train.jsonl")
    with pytest.raises(ConfigError, match="LoRA rank must be >= 1"):
        train_adapter("answer", data, tmp_path / "a", model=str(tiny_dir), lora=LoraSettings(rank=0), progress=False)
    with pytest.raises(ConfigError, match="max steps must be >= 1"):
        train_adapter("answer", data, tmp_path / "a", model=str(tiny_dir), train=TrainSettings(max_steps=0))
    with pytest.raises(ModelLoadError, match="cannot add LoRA"):
        train_adapter(
            "answer", data, tmp_path / "a", model=str(tiny_dir), lora=LoraSettings(target_modules=("nope_proj",)),
            train=FAST, progress=False,
        )
    with pytest.raises(ModelLoadError, match="model path not found"):
        train_adapter("answer", data, tmp_path / "a", model=str(tmp_path / "missing"), train=FAST)


def test_output_tokens_train_their_output_rows_and_unknown_ones_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    data = write_examples(tmp_path / "train.jsonl")
    lora = replace(NO_DROPOUT, output_tokens=("<eos>",))
    result = train_adapter("answer", data, tmp_path / "rows", model=str(tiny_dir), lora=lora, train=FAST,
                           progress=False)
    assert result.card["hyperparameters"]["lora_output_tokens"] == ["<eos>"]
    weights = load_file(str(tmp_path / "rows" / "adapter_model.safetensors"))
    [rows] = [value for name, value in weights.items() if name.endswith("trainable_tokens_delta")]
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    eos = PreTrainedTokenizerFast.from_pretrained(tiny_dir).convert_tokens_to_ids("<eos>")
    assert rows.shape == (1, 32) and not torch.allclose(rows[0], base.get_output_embeddings().weight[eos])
    assert not any("base_layer" in name for name in weights)  # no copy of the frozen layers
    with pytest.raises(ConfigError, match="output token '不在词表' is not one token of the model's vocabulary"):
        train_adapter("answer", data, tmp_path / "bad", model=str(tiny_dir),
                      lora=replace(NO_DROPOUT, output_tokens=("不在词表",)), train=FAST, progress=False)
    with pytest.raises(ConfigError, match="not both"):
        LoraSettings(target_modules=("q_proj", "lm_head"), output_tokens=("<eos>",)).check()


class _Tokenizer:
    """What resolve_output_tokens reads of a tokenizer."""

    def __init__(self, added: dict[str, int]) -> None:
        self.added, self.all_special_tokens = added, ["<eos>"]

    def get_added_vocab(self) -> dict[str, int]:
        return self.added

    def get_vocab(self) -> dict[str, int]:
        return {"a": 0, **self.added}


@pytest.mark.parametrize(
    ("task", "added", "tied", "expected"),
    [
        ("tools", {"<tool_call>": 5, "</tool_call>": 6}, False, ("<tool_call>", "</tool_call>")),
        ("tools", {"<tool_call>": 5, "</tool_call>": 6}, True, ()),  # llama.cpp could not apply them
        ("tools", {}, False, ()),  # the tags are plain text (ChatML text of a base model)
        ("answer", {"<tool_call>": 5, "</tool_call>": 6}, False, ()),
    ],
)
def test_auto_output_tokens_are_the_tool_call_tags_of_tool_adapters(task, added, tied, expected) -> None:
    from types import SimpleNamespace

    from zhrag.training.lora import resolve_output_tokens

    config = SimpleNamespace(tie_word_embeddings=tied)
    assert resolve_output_tokens(LoraSettings(), task, _Tokenizer(added), config).output_tokens == expected
