"""A2's fallback when the judge keeps nothing: closed-book (the run's own answers) vs the best rejected passage.

Reads an evaluation run (``zhrag eval`` with a2, default fallback ``closed_book``) and, for every a2 record where
the judge kept no passage, answers again exactly as the graph does with ``--a2-fallback top_passage``: the answer
node with the highest-scored rejected passage (``best_rejected`` in the record) as its only context, graded by the
same grader. The other records are unchanged between the two settings (the fallback only acts when nothing is
kept), so the comparison covers the whole run. Run it on a tuning run (dev questions outside the evaluation sample)
and set the default from it, never from the evaluation sample.

    python benchmarks/a2_fallback.py docs/results/tune100 [--out docs/results/tune100/a2_fallback.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from zhrag.evaluation.metrics import compute_metrics, paired_difference
from zhrag.evaluation.report import RESULTS_FILE, read_results
from zhrag.evaluation.rule_grader import grade_by_rules
from zhrag.graph.context import Context
from zhrag.nodes.answer import answer


def main(argv: list[str] | None = None) -> int:
    """Compare the two fallbacks on one run; write the JSON summary and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="evaluation run folder holding a2 records")
    parser.add_argument("--out", type=Path, default=None, help="summary file (default: RUN/a2_fallback.json)")
    args = parser.parse_args(argv)
    records = [r for r in read_results(args.run / RESULTS_FILE) if r["variant"] == "a2"]
    if not records:
        raise SystemExit(f"{args.run}: no a2 records")
    settings = json.loads((args.run / "run.json").read_text(encoding="utf-8"))["settings"]["context"]
    fields = {name: settings[name] for name in ("model", "engine", "max_new_tokens") if name in settings}
    runtime = type("R", (), {"context": Context(**fields)})()

    closed, top, changed = [], [], []
    for record in records:
        kept = [j for j in record.get("judgements", []) if j.get("relevant")]
        grade = record["grade"]
        top_grade = grade
        if not kept and record.get("best_rejected"):
            state = {"question": record["question"], "contexts": [record["best_rejected"]]}
            new_answer = answer(state, runtime)["answer"]
            top_grade = grade_by_rules(record["question"], record["gold"], new_answer).value
            changed.append({"id": record["id"], "closed_book": record["answer"], "top_passage": new_answer,
                            "grade_closed_book": grade, "grade_top_passage": top_grade})
        closed.append(grade)
        top.append(top_grade)
    summary: dict[str, Any] = {
        "run": str(args.run),
        "a2_records": len(records),
        "nothing_kept": len(changed),
        "closed_book": compute_metrics(closed),
        "top_passage": compute_metrics(top),
        "top_passage_minus_closed_book": paired_difference(closed, top),
        "changed": changed,
    }
    out = args.out or args.run / "a2_fallback.json"
    out.write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    brief = {key: value for key, value in summary.items() if key != "changed"}
    print(json.dumps(brief, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
