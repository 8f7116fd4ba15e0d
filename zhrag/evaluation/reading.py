"""Reading accuracy of an answer model on held-out answer examples (``zhrag eval-reading``).

Each answer example of an evaluation file (the ``*_eval.jsonl`` split of ``zhrag build-data``) holds the
prompt the graph's answer node sends (a completion text for base models, system + user messages for chat
models) and the accepted answers (``meta.answers``, else the target turn). The model completes every prompt
as the node does (greedy, at most ``max_new_tokens``, stopping at the first newline), the completion is
cleaned with the node's own :func:`~zhrag.prompts.answer.clean_answer` (given the question and the prompt's
passages, as the node gives them), and scored against the answers:

- **exact**: the normalised answer equals a normalised accepted answer;
- **contains**: a normalised accepted answer (or, for ``X（Y）``, X or Y) occurs in the normalised answer,
  numbers compared as whole numbers — the rule grader's CORRECT;
- **abstained**: the cleaned answer is empty or a refusal (不知道).

Normalisation is the rule grader's (:mod:`zhrag.evaluation.rule_grader`). The run is resumable: one
fsync'd JSON line per example in ``results.jsonl``; ``run.json`` records the data, model and adapter, and a
run with other settings into the same folder is refused unless ``force`` (the run folder's rules are
:mod:`zhrag.run_folder`'s). ``summary.json`` and
``report.md`` are rewritten at the end of every run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.evaluation.datasets import seeded_sample
from zhrag.evaluation.rule_grader import is_refusal, mentions_gold, normalize_answer
from zhrag.models import LLM
from zhrag.prompts import Prompt, clean_answer
from zhrag.run_folder import RESULTS_FILE, claim_run, finish_run, process_pending
from zhrag.training.card import examples_sha256
from zhrag.training.examples import Example, example_prompt
from zhrag.training.formats import import_examples

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
#: Version of the ``run.json`` / results layout.
RUN_FORMAT = 1
#: The answer node's generation budget (``Context.max_new_tokens``).
DEFAULT_MAX_NEW_TOKENS = 32
#: Prompts per ``generate`` call (the CPU pipeline's batch size).
DEFAULT_BATCH_SIZE = 8

_QUESTION_LINE = re.compile(r"^问题：(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class ReadingItem:
    """One held-out answer example: its id, question, the node's prompt, accepted answers and metadata."""

    id: str
    question: str
    prompt: Prompt
    answers: tuple[str, ...]
    meta: dict[str, Any]


def eval_file(data: str | Path) -> Path:
    """The evaluation file of ``data``: the file itself, or the one ``*_eval.jsonl`` of a ``build-data`` folder.

    Raises:
        TrainingDataError: missing path, or a folder without exactly one ``*_eval.jsonl``.
    """
    path = Path(data).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise TrainingDataError(f"evaluation data not found: {path}")
    files = sorted(path.glob("*_eval.jsonl"))
    if len(files) != 1:
        raise TrainingDataError(f"{path}: expected one *_eval.jsonl file, found {len(files)}; pass the file itself")
    return files[0]


def reading_items(examples: Sequence[Example], *, chat: bool) -> list[ReadingItem]:
    """The answer examples of ``examples`` as prompts for a chat (messages) or base (completion text) model.

    Raises:
        TrainingDataError: no answer example, or an example whose prompt form (system + user turns for chat
            models, one user turn for base models) does not fit the model, or whose prompt has no 问题： line.
    """
    items = [_item(example, chat) for example in examples if example["task"] == "answer"]
    if not items:
        raise TrainingDataError("no answer examples to evaluate")
    return items


def _item(example: Example, chat: bool) -> ReadingItem:
    prompt = example_prompt(example, chat=chat)
    *prompt_turns, target = example["conversations"]
    user_text = prompt_turns[-1]["value"]
    questions = _QUESTION_LINE.findall(user_text)
    if not questions:
        raise TrainingDataError(f"example {example['id']!r}: its prompt has no 问题： line")
    answers = example["meta"].get("answers") or [target["value"]]
    return ReadingItem(
        id=example["id"],
        question=questions[-1].strip(),
        prompt=prompt,
        answers=tuple(str(answer) for answer in answers),
        meta=dict(example["meta"]),
    )


def score_answer(answer: str, answers: Sequence[str]) -> dict[str, bool]:
    """``exact``, ``contains`` and ``abstained`` of a cleaned answer against the accepted ``answers``."""
    key = normalize_answer(answer)
    return {
        "exact": bool(key) and any(key == normalize_answer(gold) for gold in answers),
        "contains": bool(key) and any(mentions_gold(gold, answer) for gold in answers),
        "abstained": is_refusal(answer),
    }


def adapter_identity(adapter: str | Path | None) -> dict[str, Any] | None:
    """Path and weight-file SHA-256 of an adapter folder (``None`` without adapter), recorded in ``run.json``."""
    if adapter is None:
        return None
    path = Path(adapter).expanduser().resolve()
    files = (path / name for name in ("adapter_model.safetensors", "adapter_model.bin"))
    weights = next((file for file in files if file.is_file()), None)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights else None
    return {"path": str(path), "weights_sha256": digest}


def evaluate_reading(
    llm: LLM,
    data: str | Path,
    out: str | Path,
    *,
    model: Mapping[str, Any],
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Answer the held-out prompts of ``data`` with ``llm``, score them, and write the run folder ``out``.

    Args:
        llm: The answer model (adapter attached), as the answer node loads it.
        data: Evaluation file or ``build-data`` folder (see :func:`eval_file`).
        out: Run folder: ``run.json``, ``results.jsonl``, ``summary.json``, ``report.md``.
        model: What ``run.json`` records about the model (name, adapter identity).
        limit: Only the first ``limit`` answer examples (of the sample, with ``sample``; a larger limit later
            extends the same run).
        sample: A seeded random draw of ``sample`` answer examples over the whole file (all sources), answered
            in the order drawn, so that a run stopped early (or ``limit``) covers a random part of it
            (:func:`~zhrag.evaluation.datasets.seeded_sample`); recorded in ``run.json``.
        seed: Seed of ``sample``.
        batch_size: Prompts per ``generate`` call; each finished example is written at once.
        max_new_tokens: Generation budget per answer (the node's default: 32).
        force: Start afresh when ``out`` holds a run with other settings (its files are moved to
            ``replaced-<time>/``).
        progress: Show a progress bar.

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        ConfigError: bad ``limit`` / ``sample`` / ``batch_size``, or ``out`` holds another run and not ``force``.
        TrainingDataError: unreadable data, or examples that do not fit the model's prompt form.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if sample is not None and sample < 1:
        raise ConfigError(f"sample must be >= 1, got {sample}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    path = eval_file(data)
    examples = [example for example in import_examples(path) if example["task"] == "answer"]
    all_items = reading_items(examples, chat=llm.is_chat)
    items = (all_items if sample is None else seeded_sample(all_items, sample, seed, keep_order=False))[:limit]
    out = Path(out)
    run_settings = {
        "format": RUN_FORMAT,
        "data": {"path": str(path.resolve()), "answer_examples_sha256": examples_sha256(examples)},
        "model": json.loads(json.dumps(dict(model))),
        "chat": llm.is_chat,
        "max_new_tokens": max_new_tokens,
    }
    if sample is not None:  # absent for whole-file runs, so their earlier run folders still resume
        run_settings["sample"] = {"size": sample, "seed": seed, "of": len(all_items)}
    claim_run(out, run_settings, force, kind="reading", files=(RESULTS_FILE, SUMMARY_FILE, REPORT_FILE))
    records = process_pending(
        items, out / RESULTS_FILE,
        lambda batch: llm.generate([item.prompt for item in batch], max_new_tokens=max_new_tokens, stop=("\n",)),
        _record, batch_size=batch_size, desc="reading", progress=progress,
    )
    summary = summarize(records, run_settings)
    write_reports(summary, records, out)
    finish_run(out)
    return summary


def passage_text(prompt: Prompt) -> str:
    """The passages an answer prompt shows (between its last 资料： and 问题：), the node's cleaning context."""
    text = prompt if isinstance(prompt, str) else str(prompt[-1].content)
    shown = text[text.rfind("资料：") + len("资料：") if "资料：" in text else 0 :]
    return shown[: shown.rfind("问题：")] if "问题：" in shown else shown


def _record(item: ReadingItem, raw: str, ms: float) -> dict[str, Any]:
    answer = clean_answer(raw, item.question, passage_text(item.prompt))
    return {
        "id": item.id,
        "question": item.question,
        "answers": list(item.answers),
        "raw": raw,
        "answer": answer,
        **score_answer(answer, item.answers),
        "source": item.meta.get("source"),
        "gold_position": item.meta.get("gold_position"),
        "ms": round(ms, 1),
    }


def summarize(records: Sequence[Mapping[str, Any]], run_settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Counts and rates (exact, contains, abstained), overall, by source and by gold-passage position."""

    def stats(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        n = len(group)
        result: dict[str, Any] = {"n": n}
        for name in ("exact", "contains", "abstained"):
            count = sum(bool(record[name]) for record in group)
            result[name] = count
            result[f"{name}_pct"] = round(100.0 * count / n, 1) if n else None
        result["ms_mean"] = round(sum(record["ms"] for record in group) / n, 1) if n else None
        return result

    by: dict[str, dict[str, list[Mapping[str, Any]]]] = {
        "source": defaultdict(list),
        "gold_position": defaultdict(list),
    }
    for record in records:
        for field in by:
            by[field][str(record.get(field))].append(record)
    return {
        "settings": dict(run_settings or {}),
        "overall": stats(records),
        **{f"by_{field}": {key: stats(group) for key, group in sorted(groups.items())} for field, groups in by.items()},
    }


def write_reports(summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """Write ``summary.json`` and ``report.md`` (tables and a sample of missed answers, by id) into ``out``."""
    (out / SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    settings = summary.get("settings", {})
    model = settings.get("model", {})
    adapter = (model.get("adapter") or {}).get("path", "none")
    where = f"Data: `{settings.get('data', {}).get('path')}`; model: `{model.get('model')}`; adapter: `{adapter}`."
    legend = (
        "exact: the cleaned answer equals an accepted answer; contains: it contains one (rule-grader "
        "normalisation); abstained: empty or a refusal. ms: generation time per example (batched)."
    )
    missed = [record for record in records if not record["contains"]][:15]
    lines = [
        "# Reading accuracy",
        "",
        where,
        "",
        legend,
        "",
        *_table("all", {"all": summary["overall"]}),
        "",
        *_table("source", summary["by_source"]),
        "",
        *_table("gold passage position", summary["by_gold_position"]),
        "",
        "## Missed answers (first 15, by id)",
        "",
        "| id | accepted | answer |",
        "|---|---|---|",
        *[f"| {r['id']} | {_cell(' / '.join(r['answers']))} | {_cell(r['answer'])} |" for r in missed],
    ]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _table(label: str, groups: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = [f"| {label} | n | exact % | contains % | abstained % | ms / example |", "|---|---|---|---|---|---|"]
    for key, s in groups.items():
        cells = [key, s["n"], s["exact_pct"], s["contains_pct"], s["abstained_pct"], s["ms_mean"]]
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")[:40]
