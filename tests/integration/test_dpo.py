"""``zhrag train --method dpo`` on the packaged Gemma-3-270M: a short, interrupted and resumed DPO run whose adapter
shifts the preference on its training pairs.

Three hand-written preference pairs (closed-book answer prompts of the base model's completion form; chosen: the
right answer or 不知道, rejected: a wrong one), cut to 96 tokens, three optimiser steps. The run is interrupted
after the first checkpoint and resumed by the CLI. The implicit DPO reward margin of every pair, the log-ratio
(adapter against the base model) of the chosen answer minus that of the rejected one, is computed here from the
model's token log-probabilities, independently of TRL: it is 0 before training (a fresh LoRA is the base model) and
positive for every pair after. The adapter is then served on llama.cpp (converted to a GGUF LoRA).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zhrag.cli import main
from zhrag.models import load_llm
from zhrag.prompts import build_answer_prompt
from zhrag.training.base_model import load_base, resolve_base_model
from zhrag.training.dpo import train_dpo_adapter
from zhrag.training.lora import LoraSettings, TrainSettings, lora_config

from trainer_hooks import InterruptAt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

pytest.importorskip("trl", reason="the optional 'trl' package (zhrag[train]) runs DPO")

PAIRS = [  # (question, chosen, rejected): written for this test, not benchmark questions
    ("太阳通常从哪个方向升起？", "东方", "西方"),
    ("一个星期有几天？", "七天", "五天"),
    ("小明家的猫叫什么名字？", "不知道", "花花"),
]
SETTINGS = TrainSettings(max_steps=3, batch_size=3, max_length=96, save_steps=1, logging_steps=1, learning_rate=1e-3)
TRAIN_ARGV = ["--model", "gemma3-270m", "--max-steps", "3", "--batch-size", "3", "--max-length", "96",
              "--save-steps", "1", "--logging-steps", "1", "--lr", "1e-3", "--device", "cpu"]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("preference") / "pairs.jsonl"
    rows = [
        {"id": f"p{index}", "task": "answer",
         "conversations": [{"from": "human", "value": build_answer_prompt(question, [], chat=False)}],
         "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected}}
        for index, (question, chosen, rejected) in enumerate(PAIRS)
    ]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """Sum of the log-probabilities of the tokens of ``completion`` after ``prompt``."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + completion)["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(prompt_ids, full_ids, strict=False)) if a != b), len(prompt_ids))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    return float(sum(logprobs[i - 1, full_ids[i]] for i in range(start, len(full_ids))))


def margins(peft_model, tokenizer) -> list[float]:
    """Per pair: (log π(chosen) − log π_ref(chosen)) − (log π(rejected) − log π_ref(rejected)), π_ref the base."""
    result = []
    for question, chosen, rejected in PAIRS:
        prompt = build_answer_prompt(question, [], chat=False)
        tuned = [completion_logprob(peft_model, tokenizer, prompt, text) for text in (chosen, rejected)]
        with peft_model.disable_adapter():
            reference = [completion_logprob(peft_model, tokenizer, prompt, text) for text in (chosen, rejected)]
        result.append((tuned[0] - reference[0]) - (tuned[1] - reference[1]))
    return result


def test_interrupted_dpo_resumes_and_widens_the_reward_margin(pairs_file: Path, tmp_path: Path, capsys) -> None:
    from peft import PeftModel, get_peft_model

    out = tmp_path / "adapters" / "dpo"
    with pytest.raises(KeyboardInterrupt):
        train_dpo_adapter(pairs_file, out, model="gemma3-270m", train=SETTINGS, device="cpu", progress=False,
                          callbacks=[InterruptAt(2)])
    assert (out / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors").is_file()
    assert not (out / "training_card.json").exists()

    capsys.readouterr()
    argv = ["train", "--method", "dpo", "--task", "answer", "--data", str(pairs_file), "--out", str(out), *TRAIN_ARGV]
    assert main(argv) == 0
    assert "resumed from checkpoint-1" in capsys.readouterr().out
    for name in ("adapter_config.json", "adapter_model.safetensors", "training_card.json", "README.md", "loss.png",
                 "rewards.png"):
        assert (out / name).is_file(), name
    card = json.loads((out / "training_card.json").read_text(encoding="utf-8"))
    assert card["method"] == "dpo" and card["task"] == "answer" and card["settings"]["dpo"]["beta"] == 0.1
    assert card["data"]["examples"] == 3 and card["data"]["trained_examples"] == 3
    assert card["result"]["global_step"] == 3 and card["result"]["resumed_from"].endswith("checkpoint-1")
    assert [step for step, _ in card["result"]["rewards_margins_curve"]] == [1, 2, 3]
    assert [step for step, _ in card["result"]["rewards_accuracies_curve"]] == [1, 2, 3]
    assert main(argv) == 0
    assert "already holds this adapter" in capsys.readouterr().out
    assert main([*argv, "--beta", "0.5"]) == 2  # other DPO settings: another adapter
    assert "trained with other settings (dpo.beta)" in capsys.readouterr().err

    tokenizer, base_model = load_base(resolve_base_model("gemma3-270m"), "float32")
    torch.manual_seed(0)
    fresh = get_peft_model(base_model, lora_config(base_model, LoraSettings(output_tokens=()), tokenizer))
    before = margins(fresh.eval(), tokenizer)
    assert before == pytest.approx([0.0] * len(PAIRS), abs=1e-4)  # a fresh LoRA adapter is the base model
    trained = PeftModel.from_pretrained(fresh.unload(), str(out)).eval()
    after = margins(trained, tokenizer)
    assert all(margin > 0.1 for margin in after), after
    assert sum(after) > sum(before) + 1.0, (before, after)

    served = load_llm("gemma3-270m", adapter=str(out))  # served like an SFT adapter: llama.cpp with the GGUF LoRA
    assert served.load_info["engine"] == "llama.cpp" and served.load_info["adapter"] == str(out.resolve())
    assert len(served.generate([build_answer_prompt(PAIRS[0][0], [], chat=False)], max_new_tokens=4)) == 1
