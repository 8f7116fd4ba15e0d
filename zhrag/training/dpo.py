"""Preference training of the answer node's LoRA adapter: ``zhrag train --method dpo`` (TRL's ``DPOTrainer``).

The pairs are those of ``zhrag build-data --task preference`` (:mod:`zhrag.training.preference`): a prompt of the
answer node, a chosen and a rejected answer. The base model, LoRA settings, devices, checkpoints, ``--force`` and the
adapter folder are those of :func:`zhrag.training.lora.train_adapter`: TRL wraps the base model with the project's
LoRA configuration and, with no separate reference model, computes the reference log-probabilities with the adapter
disabled (the frozen base model). Chat models get conversational pairs (the chat template renders them, as the
answer node's messages are rendered); base models get the completion prompt text.

The card (``training_card.json``, ``README.md``) adds ``method: dpo``, the DPO settings (``beta``, loss type) and
the logged curves of the loss, ``rewards/margins`` (mean β·(log-ratio chosen − log-ratio rejected) against the
reference) and ``rewards/accuracies`` (share of pairs whose chosen reward is the larger); ``loss.png`` and
``rewards.png`` draw them. The adapter is saved like an SFT adapter, so ``--answer-adapter`` and the llama.cpp LoRA
conversion serve it unchanged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhrag import settings
from zhrag.compat import check_lora_stack
from zhrag.errors import ConfigError, ModelLoadError, TrainingDataError
from zhrag.models.failures import first_line
from zhrag.run_folder import finish_run
from zhrag.training import card as cards
from zhrag.training.base_model import (
    base_model_identity,
    load_base,
    load_config,
    load_tokenizer,
    resolve_base_model,
    uses_chat_template,
)
from zhrag.training.lora import (
    LoraSettings,
    TrainResult,
    TrainSettings,
    _checkpoint_step,
    _device_type,
    _dtype_name,
    _last_checkpoint,
    _lora_record,
    _schedule,
    card_sections,
    lora_config,
    resolve_output_tokens,
    trainer_arguments,
)
from zhrag.training.preference import PREFERENCE_TASK, PreferencePair, load_preference_pairs

#: ``zhrag train --method`` values.
METHODS = ("sft", "dpo")
#: TRL's logged reward metrics drawn in ``rewards.png`` and kept in the card.
REWARD_METRICS = ("rewards/margins", "rewards/accuracies")
_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


@dataclass(frozen=True)
class DpoSettings:
    """DPO's own settings: ``beta`` (how far the policy may move from the reference) and TRL's loss type."""

    beta: float = 0.1
    loss_type: str = "sigmoid"

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        if self.beta <= 0:
            raise ConfigError(f"DPO beta must be > 0, got {self.beta}")
        if self.loss_type not in ("sigmoid", "ipo", "hinge", "robust"):
            raise ConfigError(f"unknown DPO loss type {self.loss_type!r}; use sigmoid, ipo, hinge or robust")


def pairs_sha256(pairs: Sequence[PreferencePair]) -> str:
    """SHA-256 of the pairs as trained on (ids, prompt turns, chosen and rejected, in order)."""
    digest = hashlib.sha256()
    for pair in pairs:
        record = [pair.id, [[t["from"], t["value"]] for t in pair.turns], pair.chosen, pair.rejected]
        digest.update(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def trl_rows(pairs: Sequence[PreferencePair], *, chat: bool) -> list[dict[str, Any]]:
    """TRL's preference rows: conversational (message lists) for chat models, prompt text for base models.

    Raises:
        TrainingDataError: a pair's prompt does not have the model's form (several turns for a base model).
    """
    rows = []
    for pair in pairs:
        if chat:
            prompt: Any = [{"role": _ROLES.get(t["from"], "user"), "content": t["value"]} for t in pair.turns]
            rows.append({
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": pair.chosen}],
                "rejected": [{"role": "assistant", "content": pair.rejected}],
            })
            continue
        if len(pair.turns) != 1:
            raise TrainingDataError(
                f"pair {pair.id!r} has a chat prompt ({len(pair.turns)} turns) but the model has no chat template; "
                "build the data with --model set to the model trained"
            )
        rows.append({"prompt": pair.turns[0]["value"], "chosen": pair.chosen, "rejected": pair.rejected})
    return rows


def train_dpo_adapter(
    data: str | Path,
    out: str | Path,
    *,
    model: str = settings.DEFAULT_LLM,
    lora: LoraSettings | None = None,
    train: TrainSettings | None = None,
    dpo: DpoSettings | None = None,
    device: str | None = None,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train (or resume, or find already trained) the answer node's LoRA adapter on the preference pairs ``data``.

    Arguments as :func:`zhrag.training.lora.train_adapter` (``None``: the default settings), with ``dpo`` the DPO
    settings; ``data`` is a ``build-data --task preference`` folder or a preference file.

    Raises:
        TrainingDataError: unusable pairs, or none fits ``max_length``; ConfigError: a bad setting, or ``out`` holds
        another adapter and ``force`` is false; ModelLoadError: the base model cannot be loaded or adapted.
    """
    started = time.perf_counter()
    lora, train, dpo = lora or LoraSettings(), train or TrainSettings(), dpo or DpoSettings()
    check_lora_stack()
    lora.check()
    train.check()
    dpo.check()
    out = Path(out).expanduser()
    device_type = _device_type(device)
    path, pairs = load_preference_pairs(data)
    pairs = _seeded_sample(pairs, train.limit, train.seed)
    base = resolve_base_model(model)
    config = load_config(base)
    lora = resolve_output_tokens(lora, PREFERENCE_TASK, load_tokenizer(base), config)
    run = dpo_run_settings(pairs, base_model_identity(base, config), lora, train, dpo)
    cards.claim_output_dir(out, run, force=force)
    existing = cards.read_card(out)
    if existing is not None and existing.get("schedule") == _schedule(train):
        return TrainResult(out=out, card=existing, trained=False, resumed_from=None)
    rows = trl_rows(pairs, chat=uses_chat_template(model))
    tokenizer, base_model = load_base(base, _dtype_name(device_type))
    trainer = _dpo_trainer(base_model, tokenizer, rows, out, lora, train, dpo, device_type, callbacks, progress)
    if len(trainer.train_dataset) == 0:
        raise TrainingDataError(f"{path}: no preference pair's prompt fits --max-length {train.max_length}")
    is_main = trainer.is_world_process_zero()
    if is_main:
        cards.write_run(out, run)
    checkpoint = _last_checkpoint(out / cards.CHECKPOINTS_DIR)
    output = trainer.train(resume_from_checkpoint=checkpoint)
    card: dict[str, Any] = {}
    if is_main:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(out), save_embedding_layers=False)
        session = finish_run(out / cards.CHECKPOINTS_DIR)
        history = trainer.state.log_history
        curve = cards.loss_curve(history)
        title = f"DPO answer adapter: {base.model}"
        plot = cards.write_loss_plot(curve, out / cards.LOSS_PLOT_FILE, title=title)
        rewards = {name: cards.metric_curve(history, name) for name in REWARD_METRICS}
        rewards_plot = cards.write_curves_plot(rewards, out / cards.REWARDS_PLOT_FILE, title=title)
        card = {
            **_card(out, path, pairs, trainer, base, config, lora, train, dpo, run, output, curve, rewards,
                    start_step=_checkpoint_step(checkpoint), resumed_from=checkpoint,
                    wall_s=time.perf_counter() - started, session=session),
            "files": {
                "adapter": sorted(name for name in cards.ADAPTER_FILES if (out / name).is_file()),
                "loss_plot": plot.name if plot else None,
                "rewards_plot": rewards_plot.name if rewards_plot else None,
            },
        }
        cards.write_card(out, card)
    return TrainResult(out=out, card=card, trained=True, resumed_from=checkpoint)


def dpo_run_settings(
    pairs: Sequence[PreferencePair], base_identity: dict[str, Any], lora: LoraSettings, train: TrainSettings,
    dpo: DpoSettings,
) -> dict[str, Any]:
    """The settings that make a DPO adapter "the same" one (compared on resume and before overwriting)."""
    return {
        "task": PREFERENCE_TASK,
        "method": "dpo",
        "data_sha256": pairs_sha256(pairs),
        "base_model": base_identity,
        "lora": _lora_record(lora),
        "optimizer": {
            "learning_rate": train.learning_rate,
            "batch_size": train.batch_size,
            "grad_accum": train.grad_accum,
            "warmup_ratio": train.warmup_ratio,
            "seed": train.seed,
        },
        "max_length": train.max_length,
        "dpo": {"beta": dpo.beta, "loss_type": dpo.loss_type},
    }


def _seeded_sample(pairs: list[PreferencePair], limit: int | None, seed: int) -> list[PreferencePair]:
    import random

    if limit is None or limit >= len(pairs):
        return pairs
    return [pairs[index] for index in sorted(random.Random(f"{seed}:limit").sample(range(len(pairs)), limit))]


def _dpo_trainer(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], out: Path, lora: LoraSettings, train: TrainSettings,
    dpo: DpoSettings, device_type: str, callbacks: Sequence[Any], progress: bool,
) -> Any:
    """TRL's ``DPOTrainer`` over ``model`` with the project's LoRA config, checkpointing into ``out/checkpoints``."""
    import datasets
    import torch
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        **trainer_arguments(out, train, len(rows), device_type, progress),
        beta=dpo.beta,
        loss_type=[dpo.loss_type],
        max_length=train.max_length,
    )
    torch.manual_seed(train.seed)  # the LoRA initialisation
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return DPOTrainer(
                model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                peft_config=lora_config(model, lora, tokenizer), callbacks=list(callbacks) or None,
            )
    except ValueError as error:
        raise ModelLoadError(f"cannot set up DPO on the base model: {first_line(error)}") from error


def _card(
    out: Path, path: Path, pairs: Sequence[PreferencePair], trainer: Any, base: Any, config: Any, lora: LoraSettings,
    train: TrainSettings, dpo: DpoSettings, run: dict[str, Any], output: Any, curve: list[tuple[int, float]],
    rewards: dict[str, list[tuple[int, float]]], *, start_step: int, resumed_from: str | None, wall_s: float,
    session: dict[str, Any] | None,
) -> dict[str, Any]:
    """The training card of a finished DPO run (the SFT card's layout, see :mod:`zhrag.training.card`)."""
    import peft
    import torch
    import transformers
    import trl

    trained = len(trainer.train_dataset)
    result = {
        **{name.replace("/", "_") + "_curve": [list(point) for point in points] for name, points in rewards.items()},
        "final_reward_margin": rewards["rewards/margins"][-1][1] if rewards["rewards/margins"] else None,
        "final_reward_accuracy": rewards["rewards/accuracies"][-1][1] if rewards["rewards/accuracies"] else None,
    }
    shared = card_sections(
        trainer, output, base, config, run["base_model"], run, train, curve, start_step=start_step,
        resumed_from=resumed_from, wall_s=wall_s, extra_hyperparameters={"beta": dpo.beta, "loss_type": dpo.loss_type},
        extra_result=result,
    )
    return {
        "card_version": cards.CARD_VERSION,
        "task": PREFERENCE_TASK,
        "method": "dpo",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": run,
        "schedule": shared["schedule"],
        "base_model": shared["base_model"],
        "data": {
            "path": str(path),
            "sha256": run["data_sha256"],
            "examples": len(pairs),
            "trained_examples": trained,
            "skipped_too_long": len(pairs) - trained,
        },
        "hyperparameters": shared["hyperparameters"],
        "result": shared["result"],
        "device": shared["device"],
        "session": session,
        "versions": {
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "trl": trl.__version__,
        },
    }
