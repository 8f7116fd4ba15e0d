"""A2's arbiter: fit its rule on tuning runs, or compare it with the simple alternatives on an evaluation run.

Reads a2 runs made with every candidate answer written (``zhrag eval --variants a2 --a2-candidates all``): each
record holds the closed-book answer, the answer from the kept passages (when the judge kept any) and the answer from
the best rejected passage (when it kept none), with the signals the rule decides from. Every candidate is graded by
the rule grader, so each policy's answers on the same questions are known without running the model again:

- ``closed_book``: always the model alone (the a0 answer);
- ``judge``: the judge's verdict alone (kept passages, else closed-book; A2 before the arbiter);
- ``grounded``: always a passage answer (kept passages, else the best rejected passage);
- ``rule``: :func:`zhrag.nodes.arbitrate.choose` with the given thresholds;
- ``oracle``: a correct candidate whenever one exists, else a 不知道 one if any (the ceiling of any arbiter over
  these candidates).

``fit`` searches the rule's three thresholds on a grid for the best F over all tuning questions together (ties: the
better worse-run F, then the lower thresholds), reports a seeded 5-fold cross-validated F (fit on four folds, scored
on the fifth) beside the in-sample one, and writes ``arbiter.json`` and ``README.md`` into ``--out``. ``compare`` scores
the policies on an evaluation run with the context's default thresholds (or ``--thresholds`` from a fit), with paired
intervals against the rule, and writes ``arbiter.json`` and ``README.md`` into the run folder.

    python benchmarks/a2_arbiter.py fit runs/a2arb_tune_rc runs/a2arb_tune_dev --out docs/results/a2_arbiter/tuning
    python benchmarks/a2_arbiter.py compare docs/results/a2_arbiter/dev40
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zhrag.evaluation.metrics import compute_metrics, paired_difference, proportion
from zhrag.evaluation.report import RESULTS_FILE, read_results
from zhrag.evaluation.rule_grader import grade_by_rules
from zhrag.graph.context import Context
from zhrag.nodes.arbitrate import choose

#: Threshold grids of the fit (1.0: only a certain answer or score passes).
SCORE_GRID = (0.0, 0.5, 0.7, 0.8, 0.9, 0.944, 0.97, 0.99, 1.0)
CONFIDENCE_GRID = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
THRESHOLDS = ("arbiter_stated_score", "arbiter_closed_confidence", "arbiter_grounded_confidence")
POLICIES = ("closed_book", "judge", "grounded", "rule", "oracle")
FOLDS = 5


def rows_of(run: Path) -> list[dict[str, Any]]:
    """One row per a2 record of ``run``: its signals and each candidate's rule grade.

    Raises:
        SystemExit: the run has no a2 records, or they were not made with every candidate written.
    """
    records = [r for r in read_results(run / RESULTS_FILE) if r["variant"] == "a2"]
    if not records:
        raise SystemExit(f"{run}: no a2 records")
    rows = []
    for record in records:
        candidates = record.get("candidates") or {}
        arbitration = record.get("arbitration") or {}
        if "closed_book" not in candidates or "features" not in arbitration:
            raise SystemExit(f"{run}: record {record['id']} lacks candidates: run with --a2-candidates all")
        grades = {path: grade_by_rules(record["question"], record["gold"], c["answer"]).value
                  for path, c in candidates.items()}
        rows.append({"id": record["id"], "run": run.name, "features": arbitration["features"], "grades": grades,
                     "answers": {path: c["answer"] for path, c in candidates.items()}})
    return rows


def pick(row: dict[str, Any], policy: str, context: Context) -> str:
    """The path ``policy`` takes on ``row``."""
    grounded = row["features"]["grounded_path"]
    if policy == "closed_book":
        return "closed_book"
    if policy == "judge":
        return "passages" if grounded == "passages" else "closed_book"
    if policy == "grounded":
        return grounded or "closed_book"
    if policy == "oracle":
        rank = {"CORRECT": 0, "NOT_ATTEMPTED": 1, "INCORRECT": 2}
        return min(row["grades"], key=lambda path: rank[row["grades"][path]])
    return choose(row["features"], context)[0]


def grades_of(rows: Sequence[dict[str, Any]], policy: str, context: Context) -> list[str]:
    return [row["grades"][pick(row, policy, context)] for row in rows]


def score(rows: Sequence[dict[str, Any]], context: Context) -> float:
    return compute_metrics(grades_of(rows, "rule", context))["F"] if rows else 0.0


def fit(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, float], float]:
    """The grid thresholds of best F on ``rows`` (ties: the better worse-run F, then the lower thresholds)."""
    runs = sorted({row["run"] for row in rows})
    best: tuple[tuple[float, ...], dict[str, float]] | None = None
    for values in itertools.product(SCORE_GRID, CONFIDENCE_GRID, CONFIDENCE_GRID):
        params = dict(zip(THRESHOLDS, values, strict=True))
        context = Context(**params)
        overall = score(rows, context)
        worst = min(score([r for r in rows if r["run"] == run], context) for run in runs)
        key = (round(overall, 6), round(worst, 6), *(-v for v in values))
        if best is None or key > best[0]:
            best = (key, params)
    assert best is not None
    return best[1], best[0][0]


def cross_validated(rows: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Seeded ``FOLDS``-fold cross-validation: each fold's rule grades come from thresholds fit on the others."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    folds = [order[k::FOLDS] for k in range(FOLDS)]
    grades: dict[int, str] = {}
    chosen = []
    for held in folds:
        train = [rows[i] for i in order if i not in held]
        params, _ = fit(train)
        chosen.append(params)
        context = Context(**params)
        for i in held:
            grades[i] = rows[i]["grades"][pick(rows[i], "rule", context)]
    metrics = compute_metrics([grades[i] for i in range(len(rows))])
    return {"folds": FOLDS, "seed": seed, "F": round(metrics["F"], 2), "CO": round(metrics["CO"], 2),
            "thresholds_by_fold": chosen}


def policy_table(rows: Sequence[dict[str, Any]], context: Context) -> dict[str, Any]:
    """Each policy's metrics on ``rows``, with the paired difference against the rule."""
    rule = grades_of(rows, "rule", context)
    table: dict[str, Any] = {}
    for policy in POLICIES:
        grades = grades_of(rows, policy, context)
        metrics = compute_metrics(grades)
        entry: dict[str, Any] = {name: round(metrics[name], 2) for name in ("CO", "NA", "IN", "F")}
        if policy not in ("rule", "oracle"):
            diff = paired_difference(grades, rule)
            entry["rule_minus_this"] = {"dF": round(diff["dF"], 2),
                                        "interval": [round(v, 2) for v in diff["dF_interval"]],
                                        "only_rule_correct": diff["only_second_correct"],
                                        "only_this_correct": diff["only_first_correct"]}
        table[policy] = entry
    return table


def path_table(rows: Sequence[dict[str, Any]], context: Context) -> dict[str, Any]:
    """How often the rule takes each path, and how often the path it took answered correctly when some candidate did."""
    table: dict[str, Any] = {}
    for path in ("passages", "top_passage", "closed_book"):
        taken = [row for row in rows if pick(row, "rule", context) == path]
        decidable = [row for row in taken if "CORRECT" in row["grades"].values()]
        right = sum(row["grades"][path] == "CORRECT" for row in decidable)
        table[path] = {"taken": proportion(len(taken), len(rows)), "right_when_one_was": proportion(right, len(decidable))}
    return table


def summarise(rows: Sequence[dict[str, Any]], params: dict[str, float]) -> dict[str, Any]:
    context = Context(**params)
    runs = sorted({row["run"] for row in rows})
    return {
        "n": len(rows),
        "thresholds": params,
        "policies": policy_table(rows, context),
        "paths": path_table(rows, context),
        "by_run": {run: {"n": sum(r["run"] == run for r in rows),
                         "policies": policy_table([r for r in rows if r["run"] == run], context)} for run in runs},
    }


def render(title: str, command: str, summary: dict[str, Any], note: str) -> str:
    lines = [f"# {title}", "", f"Generated by `{command}`. Rule grader (every candidate answer graded by "
             "`zhrag/evaluation/rule_grader.py`). " + note, "",
             "Thresholds: " + ", ".join(f"`{k}` = {v}" for k, v in summary["thresholds"].items()) + ".", ""]
    if "cross_validated" in summary:
        cv = summary["cross_validated"]
        lines += [f"In-sample F of the chosen rule: {summary['in_sample_F']}. Seeded {cv['folds']}-fold "
                  f"cross-validated F (thresholds fit on four folds, scored on the fifth): **{cv['F']}**.", ""]
    groups = [("all", summary["n"], summary["policies"])]
    groups += [(run, value["n"], value["policies"]) for run, value in summary["by_run"].items()]
    lines += ["| questions | n | policy | CO % | NA % | IN % | F | ΔF rule − this [95 % paired] | only rule / only this correct |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, n, policies in groups:
        for policy, entry in policies.items():
            diff = entry.get("rule_minus_this")
            delta = f"{diff['dF']} [{diff['interval'][0]}, {diff['interval'][1]}]" if diff else "–"
            counts = f"{diff['only_rule_correct']} / {diff['only_this_correct']}" if diff else "–"
            lines.append(f"| {name} | {n} | {policy} | {entry['CO']} | {entry['NA']} | {entry['IN']} | {entry['F']} "
                         f"| {delta} | {counts} |")
    lines += ["", "Paths the rule took (right: the taken path's answer is correct, among questions where some "
              "candidate is):", "", "| path | taken % [95 %] | right % [95 %] |", "|---|---|---|"]
    for path in ("passages", "top_passage", "closed_book"):
        entry = summary["paths"][path]
        lines.append(f"| {path} | {_rate(entry['taken'])} | {_rate(entry['right_when_one_was'])} |")
    lines.append("")
    return "\n".join(lines)


def _rate(stats: dict[str, Any]) -> str:
    if stats["pct"] is None:
        return "– (0)"
    return f"{stats['pct']} [{stats['ci95'][0]}, {stats['ci95'][1]}] ({stats['count']}/{stats['n']})"


def write(out: Path, summary: dict[str, Any], text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "arbiter.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out / "README.md" if not (out / "report.md").exists() else out / "arbiter.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit_parser = commands.add_parser("fit", help="fit the rule's thresholds on tuning runs")
    fit_parser.add_argument("runs", type=Path, nargs="+", help="a2 tuning run folders (--a2-candidates all)")
    fit_parser.add_argument("--out", type=Path, required=True, help="folder for arbiter.json and README.md")
    compare_parser = commands.add_parser("compare", help="score the policies on an evaluation run")
    compare_parser.add_argument("run", type=Path, help="a2 evaluation run folder (--a2-candidates all)")
    compare_parser.add_argument("--thresholds", type=Path, default=None, help="arbiter.json of a fit (default: the "
                                "context's defaults)")
    args = parser.parse_args(argv)
    if args.command == "fit":
        rows = list({row["id"]: row for run in reversed(args.runs) for row in rows_of(run)}.values())  # first run wins
        params, in_sample = fit(rows)
        summary = {"runs": [str(run) for run in args.runs], **summarise(rows, params),
                   "in_sample_F": round(in_sample, 2), "cross_validated": cross_validated(rows),
                   "grid": {"score": list(SCORE_GRID), "confidence": list(CONFIDENCE_GRID)}}
        command = "python benchmarks/a2_arbiter.py fit " + " ".join(summary["runs"]) + " --out <this folder>"
        note = ("Tuning questions outside every evaluation sample; the in-sample rows chose the thresholds, the "
                "cross-validated F estimates how the choice carries to new questions.")
        write(args.out, summary, render("A2 arbiter: the rule fit on tuning questions", command, summary, note))
        print(json.dumps(params))
        return 0
    if args.thresholds is not None:
        params = json.loads(args.thresholds.read_text(encoding="utf-8"))["thresholds"]
    else:
        defaults = Context()
        params = {name: getattr(defaults, name) for name in THRESHOLDS}
    summary = {"run": str(args.run), **summarise(rows_of(args.run), params)}
    command = f"python benchmarks/a2_arbiter.py compare {args.run}"
    note = "Every policy answers the same questions; the rule's thresholds are the defaults fit on tuning questions."
    write(args.run, summary, render("A2 arbiter against the simple alternatives", command, summary, note))
    print(json.dumps({p: e["F"] for p, e in summary["policies"].items()}), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
