"""Fit A4's evaluator thresholds on tuning runs: ``stated_threshold`` (the support, the researcher's score of the
best quote stating the answer) and ``evaluator_threshold`` (the evaluator model's P(是) for an answer no quote states).

Reads tuning runs of a4 made with every answer accepted and the evaluator's features recorded (``zhrag eval
--variants a4 --max-review-rounds 0 --stated-threshold 0 --evaluator-threshold 0``), on questions outside every
evaluation sample (training-split reading pairs, dev questions outside the dev300 sample). For each pair of
thresholds on a grid, an answer is kept when it has the asked form and its feature reaches the threshold, else it
becomes 不知道 (NA); the pair of best F over all tuning questions together is chosen (ties: the lower thresholds).
The fit ignores the research round a rejected answer gets when ``max_review_rounds`` > 0 (it can only add answers).
Writes ``thresholds.json`` and ``README.md`` into ``--out``.

    python benchmarks/a4_thresholds.py runs/a4_tune_rc runs/a4_tune_dev --out docs/results/a4_tuning
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zhrag.evaluation.metrics import compute_metrics, proportion
from zhrag.evaluation.report import RESULTS_FILE, read_results

GRID = (0.0, *[round(0.5 + 0.05 * step, 2) for step in range(9)], 0.92, 0.94, 0.96, 0.98, 0.99, 1.01)


def features(record: dict[str, Any]) -> dict[str, Any]:
    """The first verdict's features with the record's grade (the answer the evaluator saw is the record's)."""
    verdict = record["verdicts"][0]
    return {"stated": bool(verdict.get("stated")), "support": verdict.get("support"), "score": verdict.get("score"),
            "fits": bool(verdict.get("fits")), "grade": record["grade"], "source": record["_run"]}


def kept(row: dict[str, Any], stated_threshold: float, evaluator_threshold: float) -> bool:
    if not row["fits"]:
        return False
    if row["stated"]:
        return row["support"] is not None and row["support"] >= stated_threshold
    return row["score"] is not None and row["score"] >= evaluator_threshold


def outcome(rows: Sequence[dict[str, Any]], stated_threshold: float, evaluator_threshold: float) -> dict[str, Any]:
    grades = [row["grade"] if kept(row, stated_threshold, evaluator_threshold) else "NOT_ATTEMPTED" for row in rows]
    metrics = compute_metrics(grades)
    answered = [row for row in rows if row["grade"] != "NOT_ATTEMPTED"]
    wrong = [row for row in answered if row["grade"] == "INCORRECT"]
    right = [row for row in answered if row["grade"] == "CORRECT"]
    return {
        "F": round(metrics["F"], 2), "CO": round(metrics["CO"], 2), "NA": round(metrics["NA"], 2),
        "IN": round(metrics["IN"], 2),
        "rejected_wrong": proportion(sum(not kept(r, stated_threshold, evaluator_threshold) for r in wrong), len(wrong)),
        "rejected_correct": proportion(sum(not kept(r, stated_threshold, evaluator_threshold) for r in right), len(right)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="a4 tuning run folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for thresholds.json and README.md")
    args = parser.parse_args(argv)
    rows = []
    for run in args.runs:
        records = [r for r in read_results(run / RESULTS_FILE) if r["variant"] == "a4" and r.get("verdicts")]
        if not records:
            raise SystemExit(f"{run}: no a4 records with verdicts")
        rows += [features({**record, "_run": run.name}) for record in records]
    fits = [((s, e), outcome(rows, s, e)["F"]) for s in GRID for e in GRID]
    (best_s, best_e), _ = max(fits, key=lambda item: (item[1], -item[0][0], -item[0][1]))
    runs = sorted({row["source"] for row in rows})
    summary = {
        "runs": [str(run) for run in args.runs],
        "n": len(rows),
        "grid": list(GRID),
        "chosen": {"stated_threshold": best_s, "evaluator_threshold": best_e},
        "all": {"chosen": outcome(rows, best_s, best_e), "accept_all": outcome(rows, 0.0, 0.0)},
        "by_run": {run: {"n": sum(row["source"] == run for row in rows),
                         "chosen": outcome([r for r in rows if r["source"] == run], best_s, best_e),
                         "accept_all": outcome([r for r in rows if r["source"] == run], 0.0, 0.0)} for run in runs},
        "stated": {"n": sum(row["stated"] for row in rows),
                   "correct": sum(row["stated"] and row["grade"] == "CORRECT" for row in rows)},
        "unstated": {"n": sum(not row["stated"] for row in rows),
                     "correct": sum(not row["stated"] and row["grade"] == "CORRECT" for row in rows)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "thresholds.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (args.out / "README.md").write_text(render(summary), encoding="utf-8")
    print(json.dumps(summary["chosen"]), file=sys.stdout)
    return 0


def _rate(stats: dict[str, Any]) -> str:
    return "–" if stats["pct"] is None else f"{stats['pct']} [{stats['ci95'][0]}, {stats['ci95'][1]}]"


def render(summary: dict[str, Any]) -> str:
    lines = [
        "# A4 evaluator thresholds (tuning)",
        "",
        "Generated by `python benchmarks/a4_thresholds.py " + " ".join(summary["runs"]) + " --out <this folder>` "
        "from a4 runs on tuning questions outside every evaluation sample, every answer accepted so that the "
        "evaluator's features are recorded (commands in [../README.md](../README.md)). Rule grader. An answer is kept "
        "when it has the asked form and its support (a quote states it) or the evaluator model's P(是) (no quote "
        "states it) reaches the threshold; otherwise it counts as 不知道. The pair of best F over all "
        f"{summary['n']} questions is chosen on the grid {summary['grid']}.",
        "",
        f"Chosen: `stated_threshold` = {summary['chosen']['stated_threshold']}, `evaluator_threshold` = "
        f"{summary['chosen']['evaluator_threshold']}. Stated answers: {summary['stated']['n']} "
        f"({summary['stated']['correct']} correct); unstated: {summary['unstated']['n']} "
        f"({summary['unstated']['correct']} correct).",
        "",
        "| questions | n | setting | CO % | NA % | IN % | F | rejected wrong % | rejected correct % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups = [("all", summary["n"], summary["all"])] + [
        (run, value["n"], value) for run, value in summary["by_run"].items()
    ]
    for name, n, value in groups:
        for setting in ("accept_all", "chosen"):
            row = value[setting]
            lines.append(f"| {name} | {n} | {setting} | {row['CO']} | {row['NA']} | {row['IN']} | {row['F']} "
                         f"| {_rate(row['rejected_wrong'])} | {_rate(row['rejected_correct'])} |")
    lines += ["", "In-sample figures: they chose the thresholds; the evaluation runs check them.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
