"""Calibration and accuracy of the A2 relevance judge on reading-comprehension judge examples (``zhrag eval-judge``).

``zhrag build-data --task judge`` (or ``both``) writes judge examples from the reading-comprehension pairs: the
question with its gold passage (relevant, 是) and with a retrieved passage of another paragraph that mentions no
answer (not relevant, 否), split by paragraph into training and held-out files. This module scores a seeded sample
of each split exactly as the judge node does (:func:`zhrag.nodes.judge.judge_scores`: the next-token probabilities
of 是 / 否, or the parsed verdict of a model without probabilities), then

- **calibrates** on the training split: the threshold of best F1 (ties: the lowest such threshold);
- **reports** on the held-out split, at that threshold: precision, recall, F1 and accuracy, plus the threshold-free
  ROC AUC (the probability that a relevant passage scores above an irrelevant one).

The run folder (:mod:`zhrag.run_folder`) holds ``run.json``, ``results.jsonl`` (one scored example per line,
resumable), ``summary.json``, ``report.md`` and ``judge.png`` (score distributions and precision / recall by threshold).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhrag.errors import ConfigError, TrainingDataError
from zhrag.models import LLM
from zhrag.nodes.judge import judge_scores
from zhrag.prompts import Prompt
from zhrag.run_folder import RESULTS_FILE, claim_run, finish_run, process_pending
from zhrag.training.card import examples_sha256
from zhrag.training.examples import Example, example_prompt
from zhrag.training.formats import import_examples

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
PLOT_FILE = "judge.png"
#: Version of the ``run.json`` / results layout.
RUN_FORMAT = 1
#: Splits of a build-data folder: the one the threshold is fitted on, the one reported.
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class JudgeItem:
    """One judge example: id, split, the judge node's prompt and whether the passage is relevant."""

    id: str
    split: str
    prompt: Prompt
    relevant: bool


def split_files(data: str | Path) -> dict[str, Path]:
    """The ``*_train.jsonl`` and ``*_eval.jsonl`` files of a ``build-data`` folder.

    Raises:
        TrainingDataError: not a folder, or a split file missing or ambiguous.
    """
    folder = Path(data).expanduser()
    if not folder.is_dir():
        raise TrainingDataError(f"judge data must be a folder written by zhrag build-data: {folder}")
    files = {}
    for split in SPLITS:
        found = sorted(folder.glob(f"*_{split}.jsonl"))
        if len(found) != 1:
            raise TrainingDataError(f"{folder}: expected one *_{split}.jsonl file, found {len(found)}")
        files[split] = found[0]
    return files


def judge_items(examples: Sequence[Example], split: str, *, chat: bool) -> list[JudgeItem]:
    """The judge examples of ``examples`` as prompts for a chat (messages) or base (completion text) model.

    Raises:
        TrainingDataError: an example whose turns do not fit the model's prompt form, or without ``meta.relevant``.
    """
    items = []
    for example in examples:
        if example["task"] != "judge":
            continue
        prompt = example_prompt(example, chat=chat)
        relevant = example["meta"].get("relevant")
        if not isinstance(relevant, bool):
            raise TrainingDataError(f"example {example['id']!r} has no boolean meta.relevant")
        items.append(JudgeItem(id=example["id"], split=split, prompt=prompt, relevant=relevant))
    return items


def evaluate_judge(
    llm: LLM,
    data: str | Path,
    out: str | Path,
    *,
    model: Mapping[str, Any],
    limit: int = 300,
    seed: int = 0,
    batch_size: int = 8,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``limit`` seeded judge examples of each split with ``llm``, calibrate, report; returns the summary.

    Raises:
        ConfigError: bad ``limit`` / ``batch_size``, or ``out`` holds another run and not ``force``.
        TrainingDataError: unreadable data, no judge example in a split, or examples of the wrong prompt form.
    """
    if limit < 2:
        raise ConfigError(f"limit must be >= 2 (examples per split), got {limit}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    items: list[JudgeItem] = []
    hashes = {}
    for split, path in split_files(data).items():
        examples = [example for example in import_examples(path) if example["task"] == "judge"]
        if not examples:
            raise TrainingDataError(f"{path}: no judge examples")
        hashes[split] = examples_sha256(examples)
        pool = judge_items(examples, split, chat=llm.is_chat)
        items += random.Random(f"{seed}:{split}").sample(pool, min(limit, len(pool)))
    out = Path(out)
    run_settings = {
        "format": RUN_FORMAT,
        "data": {"path": str(Path(data).expanduser().resolve()), "judge_examples_sha256": hashes},
        "model": json.loads(json.dumps(dict(model))),
        "chat": llm.is_chat,
        "limit": limit,
        "seed": seed,
    }
    files = (RESULTS_FILE, SUMMARY_FILE, REPORT_FILE, PLOT_FILE)
    claim_run(out, run_settings, force, kind="judge", files=files)
    records = process_pending(
        items, out / RESULTS_FILE, lambda batch: judge_scores(llm, [item.prompt for item in batch]), _record,
        batch_size=batch_size, desc="judge", progress=progress,
    )
    summary = summarize(records, run_settings)
    write_reports(summary, records, out)
    finish_run(out)
    return summary


def _record(item: JudgeItem, scored: tuple[float, str | None], ms: float) -> dict[str, Any]:
    score, raw = scored
    record = {"id": item.id, "split": item.split, "relevant": item.relevant, "score": score, "ms": round(ms, 1)}
    if raw is not None:
        record["raw"] = raw
    return record


def classification(records: Sequence[Mapping[str, Any]], threshold: float) -> dict[str, Any]:
    """Precision, recall, F1 and accuracy (percent) of "score >= threshold" against ``relevant``."""
    tp = sum(r["relevant"] and r["score"] >= threshold for r in records)
    fp = sum(not r["relevant"] and r["score"] >= threshold for r in records)
    fn = sum(r["relevant"] and r["score"] < threshold for r in records)
    tn = len(records) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": len(records), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": round(100 * precision, 1), "recall": round(100 * recall, 1), "f1": round(100 * f1, 1),
        "accuracy": round(100 * (tp + tn) / len(records), 1) if records else None,
    }


def roc_auc(records: Sequence[Mapping[str, Any]]) -> float | None:
    """P(a relevant example scores above an irrelevant one), ties counted half; ``None`` without both classes."""
    positives = sorted(r["score"] for r in records if r["relevant"])
    negatives = sorted(r["score"] for r in records if not r["relevant"])
    if not positives or not negatives:
        return None
    wins = 0.0
    for score in positives:
        below = _count_below(negatives, score)
        equal = _count_below(negatives, score, inclusive=True) - below
        wins += below + 0.5 * equal
    return round(wins / (len(positives) * len(negatives)), 4)


def _count_below(values: Sequence[float], score: float, *, inclusive: bool = False) -> int:
    import bisect

    return (bisect.bisect_right if inclusive else bisect.bisect_left)(values, score)


def best_threshold(records: Sequence[Mapping[str, Any]]) -> float:
    """The threshold (one of the scores) of highest F1 on ``records``; the lowest one among ties."""
    candidates = sorted({float(r["score"]) for r in records})
    if not candidates:
        raise TrainingDataError("no scored example to calibrate on")
    return max(candidates, key=lambda t: (classification(records, t)["f1"], -t))


def summarize(records: Sequence[Mapping[str, Any]], run_settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Calibrated threshold (training split) and the held-out split's classification at it and at 0.5."""
    by_split = {split: [r for r in records if r["split"] == split] for split in SPLITS}
    threshold = best_threshold(by_split["train"])
    summary: dict[str, Any] = {"settings": dict(run_settings or {}), "threshold": threshold}
    for split, group in by_split.items():
        summary[split] = {
            "at_threshold": classification(group, threshold),
            "at_0.5": classification(group, 0.5),
            "auc": roc_auc(group),
            "ms_mean": round(sum(r["ms"] for r in group) / len(group), 1) if group else None,
        }
    return summary


def write_reports(summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """Write ``summary.json``, ``report.md`` and ``judge.png`` into ``out``; returns the report's path."""
    (out / SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    _plot(records, summary["threshold"], out / PLOT_FILE)
    settings = summary.get("settings", {})
    threshold = summary["threshold"]
    lines = [
        "# Relevance judge: calibration and held-out accuracy",
        "",
        f"Data: `{settings.get('data', {}).get('path')}`; model: `{settings.get('model', {}).get('model')}`; "
        f"{settings.get('limit')} seeded examples per split (seed {settings.get('seed')}).",
        "",
        "Score = P(是) / (P(是) + P(否)) of the judge prompt's next token. The threshold is the one of best F1 on the "
        f"training split: **{threshold:.4f}**. Held-out examples come from paragraphs no training example uses.",
        "",
        "| split | threshold | n | precision % | recall % | F1 % | accuracy % | AUC | ms / example |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for split in ("eval", "train"):
        stats = summary[split]
        for label, key in ((f"{threshold:.4f}", "at_threshold"), ("0.5", "at_0.5")):
            c = stats[key]
            cells = [split, label, c["n"], c["precision"], c["recall"], c["f1"], c["accuracy"], stats["auc"], stats["ms_mean"]]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    lines += ["", f"![judge]({PLOT_FILE})"]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _plot(records: Sequence[Mapping[str, Any]], threshold: float, path: Path) -> None:
    """Held-out score histograms per class, and precision / recall / F1 by threshold."""
    from matplotlib.figure import Figure

    held_out = [r for r in records if r["split"] == "eval"] or list(records)
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    bins = [i / 20 for i in range(21)]
    left.hist([r["score"] for r in held_out if r["relevant"]], bins=bins, alpha=0.6, label="relevant")
    left.hist([r["score"] for r in held_out if not r["relevant"]], bins=bins, alpha=0.6, label="not relevant")
    left.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
    left.set(xlabel="judge score", ylabel="held-out examples", title="Score by class (held out)")
    left.legend(fontsize="small")
    grid = [i / 100 for i in range(101)]
    curves = [classification(held_out, t) for t in grid]
    for name in ("precision", "recall", "f1"):
        right.plot(grid, [c[name] for c in curves], label=name)
    right.axvline(threshold, color="black", linestyle="--")
    right.set(xlabel="threshold", ylabel="%", title="Held-out precision / recall / F1", ylim=(0, 101))
    right.legend(fontsize="small")
    figure.savefig(path, dpi=120)
