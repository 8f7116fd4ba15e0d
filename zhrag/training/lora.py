"""Train a LoRA adapter for the answer or judge node: ``train_adapter`` behind ``zhrag train``.

The base model is resolved like :func:`zhrag.models.load_llm` resolves it (the packaged ``gemma3-270m``
alias → its dequantized safetensors directory, a ``.gguf`` file, a local Hugging Face directory or a hub
id; :mod:`zhrag.training.base_model`), the examples are one task's of a data file or ``build-data`` folder
(:mod:`zhrag.training.dataset`). They are tokenised with :mod:`zhrag.training.masking` (only the assistant
replies are learned), batched with left padding and trained by :class:`zhrag.training.sft.TailLossTrainer`,
a transformers ``Trainer`` that computes logits only for the learned tail of each batch. CPU trains in float32, CUDA in
bfloat16 (float16 without bf16 support); ``accelerate launch -m zhrag.cli train ...`` runs the same code
data-parallel on several GPUs.

The run is resumable: checkpoints go to ``OUT/checkpoints`` every ``save_steps`` optimiser steps, next to
``run.json`` with the run's settings, and running the same command again continues from the last
checkpoint; every session of training (its times, the code's git commit, the load average) is recorded there and,
for the session that finishes, in the card. A directory holding another adapter (other data, base model or
hyper-parameters) is refused unless ``force`` (which moves its files into ``OUT/replaced-<time>/``). At the end
``OUT`` holds the PEFT adapter, ``training_card.json`` + ``README.md`` and ``loss.png`` (see
:mod:`zhrag.training.card`).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zhrag import settings
from zhrag.compat import check_lora_stack
from zhrag.errors import ConfigError, ModelLoadError, TrainingDataError
from zhrag.models.device import resolve_device
from zhrag.models.failures import first_line
from zhrag.run_folder import finish_run
from zhrag.training import card as cards
from zhrag.training.base_model import (
    BaseModel,
    architecture,
    base_model_identity,
    load_base,
    load_config,
    load_tokenizer,
    resolve_base_model,
)
from zhrag.training.dataset import TrainingData, load_training_data

#: LoRA targets for Gemma (and Llama-style) attention: the query, key, value and output projections.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
#: ``output_tokens`` value that picks them by task and model (:func:`resolve_output_tokens`).
AUTO = "auto"
#: The Hermes tool-call tags of chat templates such as Qwen2.5's: special tokens whose output rows the base model
#: never learned (it writes bare JSON instead), trained by tool-use adapters where they are single tokens.
TOOL_CALL_TOKENS = ("<tool_call>", "</tool_call>")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters: rank, alpha (scale = alpha / rank), dropout and the module names to adapt.

    ``output_tokens``: tokens whose rows of the output layer are trained outright (peft's trainable tokens) besides
    the LoRA, for tokens the base model never learned to emit; ``"auto"`` picks them (:func:`resolve_output_tokens`).
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    output_tokens: str | tuple[str, ...] = AUTO

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules or not all(name.strip() for name in self.target_modules):
            raise ConfigError("LoRA target modules must be non-empty names")
        if isinstance(self.output_tokens, str) and self.output_tokens != AUTO:
            raise ConfigError(f"output tokens must be {AUTO!r} or a list of tokens, got {self.output_tokens!r}")
        if self.output_tokens and self.output_tokens != AUTO and "lm_head" in self.target_modules:
            raise ConfigError("train either output tokens or a LoRA on lm_head, not both")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation and schedule settings of a run.

    Attributes:
        epochs: Passes over the data (fractions allowed); ignored when ``max_steps`` is set.
        max_steps: Stop after this many optimiser steps.
        learning_rate: Peak learning rate (linear warm-up over ``warmup_ratio`` of the steps, then linear decay).
        batch_size: Examples per device per forward pass.
        grad_accum: Forward passes per optimiser step.
        max_length: Most tokens per example; longer prompts lose their start, examples whose target does
            not fit are skipped (counted in the card).
        limit: Train on a seeded sample of at most this many examples (of the task).
        seed: Seed of the sample, the LoRA initialisation and the data order.
        warmup_ratio: Share of the optimiser steps used for warm-up.
        save_steps: Checkpoint every this many optimiser steps.
        logging_steps: Log the loss every this many optimiser steps.
    """

    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1536
    limit: int | None = None
    seed: int = 0
    warmup_ratio: float = 0.03
    save_steps: int = 50
    logging_steps: int = 5

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        positive = {
            "batch size": self.batch_size,
            "gradient accumulation": self.grad_accum,
            "save steps": self.save_steps,
            "logging steps": self.logging_steps,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.max_length < 2:
            raise ConfigError(f"max length must be >= 2, got {self.max_length}")
        if self.epochs <= 0 and self.max_steps is None:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max steps must be >= 1, got {self.max_steps}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warm-up ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train_adapter`: the adapter folder, its card, and whether training ran at all."""

    out: Path
    card: dict[str, Any]
    trained: bool
    resumed_from: str | None


def train_adapter(
    task: str,
    data: str | Path,
    out: str | Path,
    *,
    model: str = settings.DEFAULT_LLM,
    lora: LoraSettings = LoraSettings(),
    train: TrainSettings = TrainSettings(),
    device: str | None = None,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train (or resume, or find already trained) the LoRA adapter of ``task`` on ``data`` into ``out``.

    Args:
        task: ``answer``, ``judge`` or ``tools``; only the data's examples of this task are used.
        data: A ShareGPT / Alpaca file, or a ``zhrag build-data`` folder (its training split).
        out: Adapter folder (see the module docstring for its content).
        model: Base model (packaged alias, ``.gguf`` file, local directory or hub id).
        lora: LoRA hyper-parameters.
        train: Optimisation and schedule settings.
        device: ``cpu``, ``cuda`` or ``mps``; ``None`` picks CUDA, then MPS, then CPU (under ``accelerate
            launch`` each process uses its own GPU).
        force: Replace another adapter or other checkpoints found in ``out``.
        progress: Show the Trainer's progress bar and loss logs.
        callbacks: Extra ``transformers.TrainerCallback`` objects.

    Raises:
        TrainingDataError: unusable data (see :func:`load_training_data`), or no example fits ``max_length``.
        ConfigError: a bad setting, ``out`` holds another adapter and ``force`` is false, or the installed
            transformers and peft are an incompatible pair.
        ModelLoadError: the base model cannot be loaded, or a target module is not in it.
    """
    started = time.perf_counter()
    check_lora_stack()
    lora.check()
    train.check()
    out = Path(out).expanduser()
    device_type = _device_type(device)
    training_data = load_training_data(data, task, limit=train.limit, seed=train.seed)
    base = resolve_base_model(model)
    config = load_config(base)
    lora = resolve_output_tokens(lora, task, load_tokenizer(base), config)
    settings = run_settings(task, training_data, base, config, lora, train)
    cards.claim_output_dir(out, settings, force=force)
    existing = cards.read_card(out)
    if existing is not None and existing.get("schedule") == _schedule(train):
        return TrainResult(out=out, card=existing, trained=False, resumed_from=None)
    tokenizer, base_model = load_base(base, _dtype_name(device_type))

    from tqdm.auto import tqdm

    from zhrag.training.masking import tokenize_examples

    tokenized = tokenize_examples(
        tqdm(training_data.examples, desc="tokenizing", disable=not progress, unit="ex"),
        tokenizer,
        max_length=train.max_length,
    )
    if not tokenized.examples:
        raise TrainingDataError(
            f"{training_data.path}: none of the {len(training_data.examples)} {task} examples fits "
            f"--max-length {train.max_length}"
        )
    peft_model = _with_lora(base_model, lora, train.seed, tokenizer)
    trainer = _trainer(peft_model, tokenizer, tokenized.examples, out, train, device_type, callbacks, progress)
    is_main = trainer.is_world_process_zero()
    if is_main:
        cards.write_run(out, settings)
    checkpoint = _last_checkpoint(out / cards.CHECKPOINTS_DIR)
    start_step = _checkpoint_step(checkpoint)
    output = trainer.train(resume_from_checkpoint=checkpoint)
    card: dict[str, Any] = {}
    if is_main:
        # The base model's embedding / output weights stay frozen: no copy of them in the adapter (peft would save
        # one whenever lm_head is a target).
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(out), save_embedding_layers=False)
        session = finish_run(out / cards.CHECKPOINTS_DIR)
        curve = cards.loss_curve(trainer.state.log_history)
        plot = cards.write_loss_plot(curve, out / cards.LOSS_PLOT_FILE, title=f"LoRA {task} adapter: {base.model}")
        card = _card(
            out, task, training_data, tokenized, base, base_model.config, lora, train, settings, trainer, output,
            curve=curve, plot=plot, start_step=start_step, resumed_from=checkpoint,
            wall_s=time.perf_counter() - started, session=session,
        )
        cards.write_card(out, card)
    return TrainResult(out=out, card=card, trained=True, resumed_from=checkpoint)


def run_settings(
    task: str, data: TrainingData, base: BaseModel, config: Any, lora: LoraSettings, train: TrainSettings
) -> dict[str, Any]:
    """The settings that make an adapter "the same" one (compared on resume and before overwriting).

    ``limit`` is not among them: the data hash covers the examples it selected.
    """
    return {
        "task": task,
        "data_sha256": data.sha256,
        "base_model": base_model_identity(base, config),
        "lora": _lora_record(lora),
        "optimizer": {
            "learning_rate": train.learning_rate,
            "batch_size": train.batch_size,
            "grad_accum": train.grad_accum,
            "warmup_ratio": train.warmup_ratio,
            "seed": train.seed,
        },
        "max_length": train.max_length,
    }


def _lora_record(lora: LoraSettings) -> dict[str, Any]:
    record = {**asdict(lora), "target_modules": list(lora.target_modules), "output_tokens": list(lora.output_tokens)}
    if not record["output_tokens"]:  # adapters without output tokens keep the settings they had before the option
        del record["output_tokens"]
    return record


def resolve_output_tokens(lora: LoraSettings, task: str, tokenizer: Any, config: Any) -> LoraSettings:
    """``lora`` with its output tokens decided (``"auto"``: the tool-call tags for a ``tools`` adapter when the
    tokenizer has each as one special token and the model's output layer is its own, not tied to the input
    embeddings, so llama.cpp can still apply the adapter, and is no LoRA target; none otherwise).

    Raises:
        ConfigError: a named output token is not one token of the vocabulary.
    """
    from dataclasses import replace

    if lora.output_tokens == AUTO:
        special = set(getattr(tokenizer, "all_special_tokens", ())) | set(tokenizer.get_added_vocab())
        tied = bool(getattr(config, "tie_word_embeddings", False))
        head = "lm_head" in lora.target_modules  # a LoRA on the output layer already
        wanted = task == "tools" and not tied and not head and all(token in special for token in TOOL_CALL_TOKENS)
        return replace(lora, output_tokens=TOOL_CALL_TOKENS if wanted else ())
    vocabulary = tokenizer.get_vocab()
    for token in lora.output_tokens:
        if token not in vocabulary:
            raise ConfigError(f"output token {token!r} is not one token of the model's vocabulary")
    return lora


def _schedule(train: TrainSettings) -> dict[str, Any]:
    """The settings that may change between runs of the same adapter (they extend or shorten it)."""
    return {
        "epochs": train.epochs,
        "max_steps": train.max_steps,
        "save_steps": train.save_steps,
        "logging_steps": train.logging_steps,
    }


def _device_type(device: str | None) -> str:
    """``cpu``, ``cuda`` or ``mps``: the Trainer picks the GPU index itself (``CUDA_VISIBLE_DEVICES`` selects)."""
    name = resolve_device(device)
    if name.startswith("cuda:"):
        raise ConfigError(f"device {device!r}: training uses 'cuda'; choose the GPU with CUDA_VISIBLE_DEVICES")
    return name


def _dtype_name(device_type: str) -> str:
    """Weights dtype for training: bfloat16 on CUDA (float16 without bf16 support), float32 elsewhere."""
    if device_type == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def _with_lora(model: Any, lora: LoraSettings, seed: int, tokenizer: Any) -> Any:
    """``model`` wrapped by peft with a freshly (seeded) initialised LoRA adapter (and its trainable output rows)."""
    import torch
    from peft import get_peft_model

    config = lora_config(model, lora, tokenizer)
    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft calls a deprecated transformers property
            return get_peft_model(model, config)
    except ValueError as error:
        raise ModelLoadError(f"cannot add LoRA to the base model: {first_line(error)}") from error


def lora_config(model: Any, lora: LoraSettings, tokenizer: Any) -> Any:
    """The peft ``LoraConfig`` of ``lora`` for ``model`` (its output layer's trainable rows named by token id)."""
    from peft import LoraConfig, TaskType

    tokens = None
    if lora.output_tokens:
        output = model.get_output_embeddings()
        name = next(name for name, module in model.named_modules() if module is output)
        tokens = {name: tokenizer.convert_tokens_to_ids(list(lora.output_tokens))}
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.rank,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft annotates int; a float scales as well
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        trainable_token_indices=tokens,
    )
    return config


def _trainer(
    model: Any,
    tokenizer: Any,
    examples: list[Any],
    out: Path,
    train: TrainSettings,
    device_type: str,
    callbacks: Sequence[Any],
    progress: bool,
) -> Any:
    """The :class:`~zhrag.training.sft.TailLossTrainer` of the run, checkpointing into ``out/checkpoints``."""
    from transformers import TrainingArguments

    from zhrag.training.sft import LeftPadCollator, TailLossTrainer

    args = TrainingArguments(
        **trainer_arguments(out, train, len(examples), device_type, progress),
        remove_unused_columns=False,
        label_names=["labels"],
        ddp_find_unused_parameters=False,
    )
    return TailLossTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=LeftPadCollator(tokenizer.pad_token_id),
        callbacks=list(callbacks) or None,
    )


def trainer_arguments(
    out: Path, train: TrainSettings, examples: int, device_type: str, progress: bool
) -> dict[str, Any]:
    """The Trainer arguments SFT and DPO share: schedule, checkpoints every ``save_steps`` under ``OUT/checkpoints``
    (the last two kept), precision per device, seeds, no reporting."""
    import torch

    bf16 = device_type == "cuda" and torch.cuda.is_bf16_supported()
    return {
        "output_dir": str(out / cards.CHECKPOINTS_DIR),
        "per_device_train_batch_size": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps if train.max_steps is not None else -1,
        "learning_rate": train.learning_rate,
        "lr_scheduler_type": "linear",
        "warmup_steps": _warmup_steps(examples, train),
        "logging_steps": train.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "save_total_limit": 2,
        "bf16": bf16,
        "fp16": device_type == "cuda" and not bf16,
        "use_cpu": device_type == "cpu",
        "seed": train.seed,
        "data_seed": train.seed,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "disable_tqdm": not progress,
    }


def _warmup_steps(examples: int, train: TrainSettings) -> int:
    """Warm-up optimiser steps: ``warmup_ratio`` of the run's total steps (all processes together)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if train.max_steps is not None:
        total = train.max_steps
    else:
        batches = math.ceil(examples / (train.batch_size * world))
        total = math.ceil(train.epochs * math.ceil(batches / train.grad_accum))
    return round(train.warmup_ratio * total)


def _last_checkpoint(directory: Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder (by N), or ``None``.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint cut short by a kill is passed over.
    """
    candidates = [
        path
        for path in directory.glob("checkpoint-*")
        if path.name.removeprefix("checkpoint-").isdigit()
        and (path / "adapter_config.json").is_file()
        and (path / "trainer_state.json").is_file()
    ]
    return str(max(candidates, key=lambda path: int(path.name.removeprefix("checkpoint-")))) if candidates else None


def _checkpoint_step(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.removeprefix("checkpoint-")) if checkpoint else 0


def card_sections(
    trainer: Any, output: Any, base: BaseModel, config: Any, identity: Any, settings: dict[str, Any],
    train: TrainSettings, curve: list[tuple[int, float]], *, start_step: int, resumed_from: str | None, wall_s: float,
    extra_hyperparameters: dict[str, Any] | None = None, extra_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card sections SFT and DPO share: ``schedule``, ``base_model``, ``hyperparameters`` (the method's own after
    the optimiser's), ``result`` (the method's own curves after the loss curve) and ``device``."""
    import torch

    args, state = trainer.args, trainer.state
    seen = (state.global_step - start_step) * args.per_device_train_batch_size * args.gradient_accumulation_steps
    seen *= args.world_size
    runtime = float(output.metrics.get("train_runtime", 0.0))
    device_type = args.device.type
    return {
        "schedule": _schedule(train),
        "base_model": {
            "model": base.model,
            "kind": base.kind,
            "name_or_path": base.location,
            "identity": identity,
            "architecture": architecture(config),
        },
        "hyperparameters": {
            **{f"lora_{name}": value for name, value in settings["lora"].items()},
            **settings["optimizer"],
            **(extra_hyperparameters or {}),
            "max_length": train.max_length,
            "limit": train.limit,
            "epochs": train.epochs,
            "max_steps": train.max_steps,
            "warmup_steps": args.warmup_steps,
            "scheduler": "linear",
        },
        "result": {
            "global_step": state.global_step,
            "epochs": float(state.epoch or 0.0),
            "final_loss": curve[-1][1] if curve else None,
            "train_loss": output.training_loss if state.global_step > start_step else None,
            "loss_curve": [list(point) for point in curve],
            **(extra_result or {}),
            "wall_s": round(wall_s, 1),
            "train_runtime_s": round(runtime, 1),
            "seconds_per_example": round(runtime / seen, 3) if seen else None,
            "resumed_from": resumed_from,
        },
        "device": {
            "type": device_type,
            "name": torch.cuda.get_device_name(args.device) if device_type == "cuda" else platform.processor() or None,
            "dtype": "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32",
            "world_size": args.world_size,
            "threads": torch.get_num_threads(),
        },
    }


def _card(
    out: Path,
    task: str,
    data: TrainingData,
    tokenized: Any,
    base: BaseModel,
    config: Any,
    lora: LoraSettings,
    train: TrainSettings,
    settings: dict[str, Any],
    trainer: Any,
    output: Any,
    *,
    curve: list[tuple[int, float]],
    plot: Path | None,
    start_step: int,
    resumed_from: str | None,
    wall_s: float,
    session: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The training card of a finished run (see :mod:`zhrag.training.card`)."""
    import peft
    import torch
    import transformers

    shared = card_sections(trainer, output, base, config, settings["base_model"], settings, train, curve,
                           start_step=start_step, resumed_from=resumed_from, wall_s=wall_s)
    return {
        "card_version": cards.CARD_VERSION,
        "task": task,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "schedule": shared["schedule"],
        "base_model": shared["base_model"],
        "data": {
            "path": str(data.path),
            "sha256": data.sha256,
            "examples": len(data.examples),
            "trained_examples": len(tokenized.examples),
            "skipped_too_long": len(tokenized.skipped_ids),
            "tokens": sum(len(example["input_ids"]) for example in tokenized.examples),
            "learned_tokens": sum(sum(label != -100 for label in e["labels"]) for e in tokenized.examples),
        },
        "hyperparameters": shared["hyperparameters"],
        "result": shared["result"],
        "device": shared["device"],
        "session": session,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "files": {
            "adapter": sorted(name for name in cards.ADAPTER_FILES if (out / name).is_file()),
            "loss_plot": plot.name if plot else None,
        },
    }
