"""``zhrag build-data`` and ``zhrag train`` on the packaged Gemma-3-270M: a short, interrupted and resumed LoRA run.

Four reading-comprehension answer examples built from the shared data (pairs over a KB subset), cut to 96
tokens, two optimiser steps:
the run is interrupted after the first checkpoint, the same command resumes it, writes the adapter, card
and loss curve, finds it finished when run again, refuses other data without --force, and the adapter
loads through ``load_llm`` and ``zhrag ask --answer-adapter``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zhrag.cli import main
from zhrag.models import load_llm
from zhrag.rc_pairs import default_rc_source
from zhrag.training.formats import import_examples
from zhrag.training.lora import LoraSettings, TrainSettings, train_adapter

from trainer_hooks import InterruptAt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

pytest.importorskip("datasets", reason="the optional 'datasets' package (zhrag[train]) writes training files")

TRAIN_OPTIONS = {"--model": "gemma3-270m", "--limit": 4, "--max-steps": 2, "--batch-size": 2, "--max-length": 96, "--save-steps": 1,
                 "--logging-steps": 1, "--lr": 1e-3, "--device": "cpu"}
SETTINGS = TrainSettings(
    limit=4, max_steps=2, batch_size=2, max_length=96, save_steps=1, logging_steps=1, learning_rate=1e-3
)


def train_argv(data: Path, out: Path, **overrides) -> list[str]:
    options = {**TRAIN_OPTIONS, **overrides}
    return ["train", "--task", "answer", "--data", str(data), "--out", str(out),
            *(str(item) for pair in options.items() for item in pair)]


@pytest.fixture(scope="module")
def data_dir(kb_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``zhrag build-data`` output for the first shared reading-comprehension pairs over the KB subset."""
    if not default_rc_source().is_file():
        pytest.skip(f"shared reading-comprehension pairs not found at {default_rc_source()}")
    passages = {json.loads(line)["id"] for line in kb_subset.read_text(encoding="utf-8").splitlines()}
    pairs = []
    with default_rc_source().open(encoding="utf-8") as handle:
        for line in handle:
            if json.loads(line)["passage_id"] in passages:
                pairs.append(line)
            if len(pairs) == 12:
                break
    folder = tmp_path_factory.mktemp("data")
    (folder / "rc.jsonl").write_text("".join(pairs), encoding="utf-8")
    argv = ["build-data", "--task", "answer", "--source", f"rc:{folder / 'rc.jsonl'}", "--kb", str(kb_subset),
            "--model", "gemma3-270m"]
    assert main([*argv, "--out", str(folder / "rc")]) == 0
    return folder / "rc"


def test_interrupted_training_resumes_and_the_adapter_loads(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "adapters" / "rc-answer"
    with pytest.raises(KeyboardInterrupt):
        train_adapter(
            "answer", data_dir, out, model="gemma3-270m", lora=LoraSettings(), train=SETTINGS, device="cpu",
            progress=False, callbacks=[InterruptAt(2)],
        )
    assert (out / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors").is_file()
    assert not (out / "training_card.json").exists()

    capsys.readouterr()
    assert main(train_argv(data_dir, out)) == 0
    assert "resumed from checkpoint-1" in capsys.readouterr().out
    for name in ("adapter_config.json", "adapter_model.safetensors", "training_card.json", "README.md", "loss.png"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    card = json.loads((out / "training_card.json").read_text(encoding="utf-8"))
    assert card["task"] == "answer"
    assert card["base_model"]["model"] == "gemma3-270m" and card["base_model"]["kind"] == "packaged"
    assert card["base_model"]["architecture"]["vocab_size"] == 262144
    assert card["data"]["examples"] == 4 and card["data"]["path"].endswith("zhrag_train.jsonl")
    assert card["data"]["trained_examples"] == 4 and card["data"]["learned_tokens"] >= 8
    assert len(card["data"]["sha256"]) == 64
    assert card["hyperparameters"]["lora_rank"] == 16 and card["hyperparameters"]["max_length"] == 96
    assert card["result"]["global_step"] == 2 and card["result"]["resumed_from"].endswith("checkpoint-1")
    assert [step for step, _ in card["result"]["loss_curve"]] == [1, 2]
    assert card["result"]["final_loss"] > 0 and card["result"]["wall_s"] > 0
    assert card["device"] == {**card["device"], "type": "cpu", "dtype": "float32"}

    assert main(train_argv(data_dir, out)) == 0  # finished: nothing to do, nothing changed
    assert "already holds this adapter" in capsys.readouterr().out
    assert main(train_argv(data_dir / "zhrag_eval.jsonl", out)) == 2
    assert "holds an adapter trained with other settings (data_sha256)" in capsys.readouterr().err
    assert json.loads((out / "training_card.json").read_text(encoding="utf-8")) == card

    prompt = import_examples(data_dir / "zhrag_eval.jsonl")[0]["conversations"][0]["value"]
    base, tuned = load_llm("gemma3-270m", engine="transformers"), load_llm("gemma3-270m", adapter=str(out), engine="transformers")
    assert tuned.load_info["shared_base"] and tuned.load_info["adapter"] == str(out)
    logits = []
    for llm in (base, tuned):
        with llm.hf_model() as (model, tokenizer), torch.no_grad():
            logits.append(model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1])
    assert not torch.allclose(*logits)
    assert main(["ask", "--variant", "a0", "--model", "gemma3-270m", "--answer-adapter", str(out), "--max-new-tokens", "4",
                 "中国的首都是哪里？"]) == 0
