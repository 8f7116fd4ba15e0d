"""Answer cleaning before and after, scored on the same raw completions of a reading run (``zhrag eval-reading``).

Every record of a reading run's ``results.jsonl`` keeps the model's raw completion (``raw``). This script cleans
each one twice, with the answer cleaner of commit cc3e313 (``old_clean_answer`` below, a verbatim reference
copy: first sentence break even inside 《…》, no unit, only a bare echo of the question's opening rejected) and
with the current :func:`zhrag.prompts.answer.clean_answer` (given the question and the passages the prompt
showed, as the answer node gives them), and scores both as ``eval-reading`` does (exact / contains, rule-grader
normalisation; :func:`zhrag.evaluation.reading.score_answer`). The prompt and the generations are the same, so
the difference is the cleaning alone. The passages come from the run's data file (``run.json``).

    python benchmarks/reading_cleaning.py docs/results/reading_seeded200 [--out docs/results/reading_seeded200]

Writes ``cleaning.json`` and ``cleaning.md`` into ``--out`` (default: the run folder): exact and contains with
95 % Wilson intervals, overall and per source, and how many examples each cleaner alone gets right.
``--gold runs/data/rc_qwen/zhrag_train.jsonl`` adds a check of the rules on training-split pairs: both cleaners
applied to the accepted answers themselves (how often a rule spoils an answer that was exactly right).
``--rewrite-report`` also rewrites the run's ``summary.json`` and ``report.md`` from the raw completions with the
current cleaner (a run stopped early writes neither; one resumed across code versions mixes cleaners).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zhrag.errors import TrainingDataError
from zhrag.evaluation.metrics import proportion
from zhrag.evaluation.reading import eval_file, passage_text, reading_items, score_answer, summarize, write_reports
from zhrag.prompts.answer import UNKNOWN_ANSWER, clean_answer
from zhrag.prompts.common import normalize_text
from zhrag.run_folder import RESULTS_FILE, read_run
from zhrag.training.formats import import_examples

# ------------------------------------------------ reference copy: the answer cleaner of commit cc3e313
_OLD_LABEL = re.compile(
    r"^(?:(?:最终|正确)?答案\s*(?:是|为|[:：])|(?:回答|答|answer)\s*[:：]|(?:(?:最终|正确)?答案|回答|答|answer)$)",
    re.IGNORECASE,
)
_OLD_CITATION = re.compile(r"[\[【［]\s*\d+\s*[\]】］]")
_OLD_SENTENCE_END = re.compile(r"[。！？；，!?;]|\.(?:\s|$)")
_OLD_MIN_ECHO_CHARS = 6
_OLD_EDGE_JUNK = " \t\u3000*_:：.,，、。；;！!？?\"'“”‘’「」『』`"


def old_clean_answer(text: str, question: str = "") -> str:
    """The answer cleaner of commit cc3e313, unchanged (the "before" of this comparison)."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _OLD_CITATION.sub("", line.replace("**", "")).strip(_OLD_EDGE_JUNK)
    while (stripped := _OLD_LABEL.sub("", line).strip(_OLD_EDGE_JUNK)) != line:
        line = stripped
    if match := _OLD_SENTENCE_END.search(line):
        line = line[: match.start()]
    line = line.strip(_OLD_EDGE_JUNK)
    key, asked = normalize_text(line), normalize_text(question)
    if len(key) >= max(_OLD_MIN_ECHO_CHARS, len(asked) / 2) and asked.startswith(key):
        return UNKNOWN_ANSWER
    return line or UNKNOWN_ANSWER


# ------------------------------------------------------------------------------------------- rescoring


def rescore(run_dir: Path, rewrite_report: bool = False) -> dict[str, Any]:
    """Both cleaners' scores on the records of ``run_dir`` (see the module docstring); with ``rewrite_report``,
    the run's ``summary.json`` and ``report.md`` are rewritten from its raw completions with the current cleaner
    (for a run stopped early, or one whose sessions ran different cleaners)."""
    record = read_run(run_dir) or {}
    settings = record.get("settings", {})
    path = eval_file(settings["data"]["path"])
    examples = [example for example in import_examples(path) if example["task"] == "answer"]
    contexts = {item.id: passage_text(item.prompt) for item in reading_items(examples, chat=settings["chat"])}
    rows, recleaned = [], []
    for line in (run_dir / RESULTS_FILE).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            result = json.loads(line)
        except json.JSONDecodeError:  # a run stopped mid-write leaves a partial last line; the run redoes it
            continue
        before = old_clean_answer(result["raw"], result["question"])
        after = clean_answer(result["raw"], result["question"], contexts[result["id"]])
        recleaned.append({**result, "answer": after, **score_answer(after, result["answers"])})
        rows.append({
            "id": result["id"], "source": result.get("source"),
            "before": score_answer(before, result["answers"]), "after": score_answer(after, result["answers"]),
            "changed": before != after,
        })
    groups: dict[str, list[dict[str, Any]]] = {"all": rows}
    for row in rows:
        groups.setdefault(str(row["source"]), []).append(row)
    if rewrite_report:
        write_reports(summarize(recleaned, settings), recleaned, run_dir)
    return {
        "run": str(run_dir), "data": str(path), "sample": settings.get("sample"), "model": settings.get("model"),
        "code": (record.get("sessions") or [{}])[-1].get("code"),
        "groups": {name: _stats(group) for name, group in groups.items()},
    }


def gold_check(data: Path) -> dict[str, Any]:
    """Each cleaner applied to the accepted answers themselves, as if the model had written the first one: how
    often a cleaner spoils an answer that was exactly right (a check of the rules on training-split pairs)."""
    examples = [example for example in import_examples(eval_file(data)) if example["task"] == "answer"]
    try:
        items = reading_items(examples, chat=True)
    except TrainingDataError:  # completion prompts (data built for a base model)
        items = reading_items(examples, chat=False)
    rows = []
    for item in items:
        gold = item.answers[0]
        before = old_clean_answer(gold, item.question)
        after = clean_answer(gold, item.question, passage_text(item.prompt))
        rows.append({
            "source": item.meta.get("source"), "changed": before != after,
            "before": score_answer(before, item.answers), "after": score_answer(after, item.answers),
        })
    return {"data": str(data), "stats": _stats(rows)}


def _stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    result: dict[str, Any] = {"n": n, "changed": sum(row["changed"] for row in rows)}
    for metric in ("exact", "contains"):
        for side in ("before", "after"):
            result[f"{metric}_{side}"] = proportion(sum(row[side][metric] for row in rows), n)
        result[f"{metric}_gained"] = sum(row["after"][metric] and not row["before"][metric] for row in rows)
        result[f"{metric}_lost"] = sum(row["before"][metric] and not row["after"][metric] for row in rows)
    return result


def markdown(summary: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table."""

    def cell(rate: Mapping[str, Any]) -> str:
        low, high = rate["ci95"] or (None, None)
        return f"{rate['count']} ({rate['pct']} %, {low}–{high})"

    lines = [
        "| examples | n | exact before | exact after | exact +/− | contains before | contains after | contains +/− | answers changed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary["groups"].items():
        lines.append(
            f"| {name} | {s['n']} | {cell(s['exact_before'])} | {cell(s['exact_after'])} | "
            f"+{s['exact_gained']} / −{s['exact_lost']} | {cell(s['contains_before'])} | {cell(s['contains_after'])} | "
            f"+{s['contains_gained']} / −{s['contains_lost']} | {s['changed']} |"
        )
    return (
        f"Run `{summary['run']}` (data `{summary['data']}`, sample {summary['sample']}); counts with percent and 95 % "
        "Wilson interval; +/−: examples only the new / only the old cleaner gets right. Offline rule grader.\n\n"
        + "\n".join(lines) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Rescore one reading run with both cleaners; write cleaning.json and cleaning.md and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="Folder written by zhrag eval-reading.")
    parser.add_argument("--out", type=Path, help="Folder for cleaning.json and cleaning.md (default: RUN_DIR).")
    parser.add_argument(
        "--rewrite-report", action="store_true",
        help="Also rewrite RUN_DIR's summary.json and report.md with the current cleaner from the raw completions.",
    )
    parser.add_argument(
        "--gold", type=Path,
        help="Also clean the accepted answers of this answer-example file (a training split) with both cleaners.",
    )
    args = parser.parse_args(argv)
    summary = rescore(args.run_dir, rewrite_report=args.rewrite_report)
    if args.gold:
        summary["gold_check"] = gold_check(args.gold)
    out = args.out or args.run_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "cleaning.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    table = markdown(summary)
    if "gold_check" in summary:
        g = summary["gold_check"]["stats"]
        table += (
            f"\nThe accepted answers of `{summary['gold_check']['data']}` cleaned as if the model had written them: "
            f"exact {g['exact_before']['pct']} % before, {g['exact_after']['pct']} % after (n {g['n']}; "
            f"+{g['exact_gained']} / −{g['exact_lost']}; {g['changed']} answers changed).\n"
        )
    (out / "cleaning.md").write_text("# Answer cleaning, before and after\n\n" + table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
