"""Fine-tuning data and adapters: ``zhrag build-data``, ``train``, ``generate-data``, ``review`` and
``export-pairs``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from zhrag import settings
from zhrag.cli.common import _split_values
from zhrag.cli.options import (
    DeviceOpt,
    EngineOpt,
    PassageKbOpt,
    StoreOptions,
    adapter_option,
    fields_of,
    force_option,
    model_option,
    out_option,
    with_option_groups,
)
from zhrag.errors import ConfigError
from zhrag.jsonl import writable_dir


@with_option_groups
def build_data(
    store_options: StoreOptions,
    out: Annotated[Path, out_option("Folder for the train/eval files, dataset_info.json, manifest.")],
    task: Annotated[
        str, typer.Option(help="answer, judge, both, tools (A3 tool-use traces searched through qdrant-find), or "
                               "preference (chosen/rejected answers sampled from --model, for train --method dpo).")
    ] = "both",
    source: Annotated[
        str, typer.Option(help="rc (the shared reading-comprehension pairs), rc:FILE (other pairs) or a QA jsonl file; "
                               "preference: several, comma-separated (QA files give closed-book prompts).")
    ] = "rc",
    kb: PassageKbOpt = None,
    data_format: Annotated[str, typer.Option("--format", help="sharegpt or alpaca.")] = "sharegpt",
    limit: Annotated[int | None, typer.Option(help="A seeded sample of N pairs / questions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample, passage order and held-out split.")] = 0,
    model: Annotated[
        str, typer.Option(help="Model the data is for: its chat template (or none) decides the prompt form.")
    ] = settings.DEFAULT_LLM,
    name: Annotated[str, typer.Option(help="File name prefix (<name>_train.jsonl, <name>_eval.jsonl).")] = "zhrag",
    judge_check: Annotated[
        bool, typer.Option("--judge-check/--no-judge-check", help="tools: the judge model (--model) checks each trace.")
    ] = True,
    judge_threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="tools: judge score a trace's passage must reach.")
    ] = None,
    samples: Annotated[int, typer.Option(help="preference: answers sampled per prompt.")] = 4,
    temperature: Annotated[float, typer.Option(help="preference: sampling temperature.")] = 1.0,
    engine: EngineOpt = "auto",
) -> None:
    """Write fine-tuning examples (train and held-out eval splits) in the graph's own prompt formats into OUT."""
    from zhrag.training.base_model import uses_chat_template
    from zhrag.training.build import build_qa_data, build_rc_data
    from zhrag.training.formats import write_splits

    writable_dir(out, "--out", create=False)
    if task == "preference":
        _build_preference_data(out, source, kb, data_format, limit, seed, model, name, samples, temperature, engine)
        return
    if task == "tools":
        _build_tool_data(store_options.resolved(), out, source, kb, data_format, limit, seed, model, name,
                         judge_check, judge_threshold)
        return
    chat = uses_chat_template(model)
    if source == "rc" or source.startswith("rc:"):
        rc_file = source.partition(":")[2] or None
        splits = build_rc_data(task, source=rc_file, kb=kb, chat=chat, limit=limit, seed=seed, progress=True)
    else:
        from zhrag.evaluation.datasets import load_questions
        from zhrag.evaluation.retrieval_metrics import kb_covered

        questions = load_questions(source)
        splits = build_qa_data(
            task, questions, relevant=kb_covered, kb=kb, chat=chat, limit=limit, seed=seed, progress=True
        )
    written = write_splits(splits, out, format=data_format, name=name)
    typer.echo(
        f"{len(splits.train)} train / {len(splits.eval)} eval examples ({task}, {data_format}, "
        f"{'chat' if chat else 'completion'} prompts) in {out}: {', '.join(path.name for path in written.values())}"
    )


def _build_preference_data(
    out: Path, source: str, kb: Path | None, data_format: str, limit: int | None, seed: int, model: str, name: str,
    samples: int, temperature: float, engine: str,
) -> None:
    """``build-data --task preference``: sampled answers of --model graded by the rule grader, as DPO pairs."""
    from zhrag.models import load_llm
    from zhrag.training.base_model import uses_chat_template
    from zhrag.training.build import build_preference_items
    from zhrag.training.formats import FORMATS
    from zhrag.training.preference import build_preference_pairs, write_preference_splits

    if data_format not in FORMATS:
        raise ConfigError(f"unknown --format {data_format!r}; use one of {list(FORMATS)}")
    if samples < 2:
        raise ConfigError(f"--samples must be >= 2 to find a wrong and a right answer, got {samples}")
    if temperature <= 0:
        raise ConfigError(f"--temperature must be > 0, got {temperature}")
    items, kept_out = build_preference_items(
        _split_values([source]), kb=kb, chat=uses_chat_template(model), limit=limit, seed=seed
    )
    llm = load_llm(model, engine=engine)

    def sample(prompts, n, sample_seed):
        return llm.generate_samples(prompts, n, temperature=temperature, seed=sample_seed)

    splits = build_preference_pairs(items, sample, samples=samples, seed=seed, progress=True)
    extra = {"model": model, "temperature": temperature, "sources": kept_out}
    written = write_preference_splits(splits, out, format=data_format, name=name, extra=extra)
    manifest = splits.manifest
    typer.echo(
        f"{len(splits.train)} train / {len(splits.eval)} eval preference pairs from {manifest['prompts']} prompts "
        f"(chosen: {', '.join(f'{k} {v}' for k, v in manifest['chosen'].items())}; skipped: "
        f"{', '.join(f'{k} {v}' for k, v in manifest['skipped'].items())}) in {out}: "
        f"{', '.join(path.name for path in written.values())}"
    )


def _build_tool_data(
    options: StoreOptions, out: Path, source: str, kb: Path | None, data_format: str, limit: int | None, seed: int,
    model: str, name: str, judge_check: bool, judge_threshold: float | None,
) -> None:
    """``build-data --task tools``: A3 traces searched through qdrant-find, checked by the judge model."""
    from zhrag.graph.context import DEFAULT_JUDGE_THRESHOLD, Context
    from zhrag.mcp.client import KnowledgeClient
    from zhrag.nodes.retrieve import server_config
    from zhrag.training.build import build_tool_data
    from zhrag.training.formats import write_splits

    if source != "rc" and not source.startswith("rc:"):
        raise ConfigError("--task tools is built from reading pairs: use --source rc or rc:FILE")
    check = None
    if judge_check:
        from zhrag.models import load_llm
        from zhrag.nodes.judge import score_passages

        llm = load_llm(model)

        def check(question: str, passages):
            return [score for score, _ in score_passages(llm, question, passages)]

    # The knowledge server the a3 graph would use with these store options (same reranker and evidence).
    with KnowledgeClient(server_config(Context(**fields_of(options)))) as client:
        splits, rejected = build_tool_data(
            client, source=source.partition(":")[2] or None, kb=kb, check=check,
            threshold=DEFAULT_JUDGE_THRESHOLD if judge_threshold is None else judge_threshold,
            limit=limit, seed=seed, progress=True,
        )
    written = write_splits(splits, out, format=data_format, name=name, rejected=rejected)
    typer.echo(
        f"{len(splits.train)} train / {len(splits.eval)} eval tool traces, {len(rejected)} rejected "
        f"({', '.join(f'{reason} {count}' for reason, count in splits.skipped.items()) or 'none'}) in {out}: "
        f"{', '.join(path.name for path in written.values())}"
    )


def train(
    task: Annotated[str, typer.Option(help="What the adapter is for: answer, judge or tools (the a3 agent).")],
    data: Annotated[Path, typer.Option(help="ShareGPT / Alpaca file, or a folder written by zhrag build-data.")],
    out: Annotated[Path, out_option("Adapter folder, e.g. adapters/NAME; re-running resumes.")],
    model: Annotated[str, model_option("Base")] = settings.DEFAULT_LLM,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimiser steps (overrides --epochs).")] = None,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (linear warm-up and decay).")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per device per forward pass.")] = 4,
    grad_accum: Annotated[int, typer.Option(help="Forward passes per optimiser step.")] = 1,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (scale alpha / rank).")] = 32.0,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    target_modules: Annotated[
        str, typer.Option(help="Comma-separated module names to adapt.")
    ] = "q_proj,k_proj,v_proj,o_proj",
    output_tokens: Annotated[str, typer.Option(
        help="Tokens whose output-layer rows are trained outright, comma-separated; auto: a tools adapter's "
             "<tool_call> tags where they are special tokens of an untied output layer (Qwen2.5); none: no rows.")
    ] = "auto",
    max_length: Annotated[int, typer.Option(help="Most tokens per example (longer prompts lose their start).")] = 1536,
    limit: Annotated[int | None, typer.Option(help="Train on a seeded sample of N examples.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample, LoRA init and data order.")] = 0,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N optimiser steps.")] = 50,
    logging_steps: Annotated[int, typer.Option(help="Log the loss every N optimiser steps.")] = 5,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or mps (default: auto; bf16 on CUDA).")] = None,
    force: Annotated[bool, force_option("Replace another adapter or other checkpoints in OUT.")] = False,
    method: Annotated[str, typer.Option(
        help="sft (supervised, on examples) or dpo (preference pairs of build-data --task preference; answer only).")
    ] = "sft",
    beta: Annotated[float, typer.Option(help="dpo: how far the adapter may move from the base model (DPO's beta).")] = 0.1,
) -> None:
    """Train a LoRA adapter for the answer or judge node or the a3 agent (resumable; multi-GPU with accelerate launch -m zhrag.cli)."""
    from zhrag.training.lora import LoraSettings, TrainSettings

    tokens = output_tokens.strip()
    lora = LoraSettings(
        rank=rank, alpha=alpha, dropout=dropout, target_modules=tuple(_split_values([target_modules])),
        output_tokens=tokens if tokens == "auto" else () if tokens in ("", "none") else tuple(_split_values([tokens])),
    )
    schedule = TrainSettings(
        epochs=epochs, max_steps=max_steps, learning_rate=lr, batch_size=batch_size, grad_accum=grad_accum,
        max_length=max_length, limit=limit, seed=seed, save_steps=save_steps, logging_steps=logging_steps,
    )
    result = _train(method, task, data, out, model, lora, schedule, beta, device, force)
    if not result.card:  # not the main process of a multi-process run
        return
    outcome = result.card["result"]
    if not result.trained:
        typer.echo(f"{out} already holds this adapter ({outcome['global_step']} steps); nothing to do")
        return
    resumed = f", resumed from {Path(result.resumed_from).name}" if result.resumed_from else ""
    loss = outcome["final_loss"]
    typer.echo(
        f"adapter: {out} ({outcome['global_step']} steps, final loss {'-' if loss is None else f'{loss:.4f}'}, "
        f"{outcome['wall_s']:.0f} s{resumed}); card: {out / 'training_card.json'}"
    )


def _train(
    method: str, task: str, data: Path, out: Path, model: str, lora: Any, schedule: Any, beta: float,
    device: str | None, force: bool,
) -> Any:
    """``train``'s run by ``method``: supervised (:func:`train_adapter`) or DPO (:func:`train_dpo_adapter`)."""
    from zhrag.training.dpo import METHODS, DpoSettings, train_dpo_adapter
    from zhrag.training.lora import train_adapter

    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}; use one of {list(METHODS)}")
    if method == "sft":
        return train_adapter(task, data, out, model=model, lora=lora, train=schedule, device=device, force=force)
    if task != "answer":
        raise ConfigError(f"--method dpo trains the answer node on preference pairs; use --task answer, not {task!r}")
    return train_dpo_adapter(
        data, out, model=model, lora=lora, train=schedule, dpo=DpoSettings(beta=beta), device=device, force=force
    )


def generate_data(
    out: Annotated[Path, out_option("Pairs file (.jsonl); re-running resumes it.")],
    kb: PassageKbOpt = None,
    model: Annotated[str, model_option("Generating")] = settings.DEFAULT_LLM,
    adapter: Annotated[str | None, adapter_option("generating")] = None,
    device: DeviceOpt = None,
    limit: Annotated[int | None, typer.Option(help="Use the first N passages of the seeded order (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the passage order.")] = 0,
    per_passage: Annotated[int, typer.Option(help="Question/answer pairs asked for per passage.")] = 1,
    llm_check: Annotated[bool, typer.Option("--llm-check/--no-llm-check", help="Also ask the model whether the passage supports each pair.")] = True,
    copy_span: Annotated[int, typer.Option(help="Reject questions sharing this many consecutive characters with the passage.")] = 12,
    max_answer_chars: Annotated[int, typer.Option(help="Reject longer answers.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Passages generated together.")] = 4,
    force: Annotated[bool, force_option("Replace OUT when it holds a run with other settings.")] = False,
) -> None:
    """Let the model write question/answer pairs from KB passages, check each, and keep all with status and reason."""
    from zhrag.models import load_llm
    from zhrag.training.generate import GenerationSettings, generate_dataset

    run_settings = GenerationSettings(
        per_passage=per_passage, copy_span_chars=copy_span, max_answer_chars=max_answer_chars, llm_check=llm_check,
        seed=seed, batch_size=batch_size,
    )
    llm = load_llm(model, adapter=adapter, device=device)
    report = generate_dataset(llm, out, kb=kb, limit=limit, settings=run_settings, force=force)
    reasons = ", ".join(f"{name} {count}" for name, count in report.reasons.most_common()) or "none"
    typer.echo(
        f"{report.processed} passages processed ({report.already_done} already done) in {report.seconds:.0f} s: "
        f"{report.statuses['accepted']} accepted, {report.statuses['rejected']} rejected ({reasons}); "
        f"pairs: {report.out}, settings: {report.meta}"
    )


def review(
    file: Annotated[Path, typer.Argument(help="Generated pairs (.jsonl) or ShareGPT / Alpaca examples to review.")],
    port: Annotated[int, typer.Option(help="Port of the review page.")] = 7860,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    decisions: Annotated[
        Path | None, typer.Option(help="Decisions file, appended as you go (default: <FILE stem>.decisions.jsonl).")
    ] = None,
) -> None:
    """Open a web page to accept, reject or edit the items of FILE one by one; every decision is saved at once."""
    from zhrag.training.review import ReviewSession
    from zhrag.training.review_app import serve

    session = ReviewSession(file, decisions)
    counts = session.counts()
    typer.echo(f"{counts['total']} items, {counts['undecided']} undecided; decisions: {session.decisions_path}", err=True)
    serve(session, host=host, port=port)


def export_pairs(
    file: Annotated[Path, typer.Argument(help="Pairs file written by zhrag generate-data.")],
    out: Annotated[Path, out_option("Reading-comprehension pairs file for build-data --source rc:OUT.")],
    decisions: Annotated[Path | None, typer.Option(help="Review decisions to apply (default: the review default, if present).")] = None,
) -> None:
    """Write the accepted (and reviewed) generated pairs as reading-comprehension pairs for build-data."""
    from zhrag.errors import TrainingDataError
    from zhrag.training.generate import generated_rc_pairs, write_rc_pairs
    from zhrag.training.review import default_decisions_path

    if decisions is None and default_decisions_path(file).exists():
        decisions = default_decisions_path(file)
    pairs = generated_rc_pairs(file, decisions)
    if not pairs:
        raise TrainingDataError(f"{file}: no accepted pairs to export")
    write_rc_pairs(pairs, out)
    applied = f" after the decisions in {decisions}" if decisions else ""
    typer.echo(f"{len(pairs)} accepted pairs{applied} written to {out}; next: zhrag build-data --source rc:{out}")
