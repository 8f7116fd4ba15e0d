"""Evaluation report: ``summary.json``, ``report.md`` and PNG plots from per-question result records.

One result record per question × variant::

    {"id", "variant", "question", "gold", "answer", "primary_category",
     "grade": "CORRECT" | "INCORRECT" | "NOT_ATTEMPTED",
     "contexts": [...], "retrieved": [...], "timings_ms": {node: ms, "total": ms},
     "scores": {"faithfulness": float | None, "faithfulness_reason": str | None,
                "answer_correctness": float | None, ...},
     "recall": {"retrieved": bool | None, "kept": bool | None}, "kb_covered": bool | None}

Only ``variant`` and ``grade`` are required; a missing or ``None`` value is left out of its mean and
counted as missing. Plots are drawn with matplotlib's Agg renderer (no display needed). Chinese category
labels need a CJK font: the Noto Sans CJK of PyPI ``noto-cjk-sans-otc`` (a dependency), else a system font;
without one the plots label categories C1, C2, ... and ``report.md`` gives the key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from zhrag.errors import DatasetError
from zhrag.evaluation.abstention import read_thresholds, with_abstention
from zhrag.evaluation.metrics import (
    Grade,
    bootstrap_intervals,
    compute_metrics,
    metrics_by,
    paired_difference,
    proportion,
)
from zhrag.evaluation.retrieval_metrics import MIN_SHARED_BIGRAMS
from zhrag.evaluation.rule_grader import grade_by_rules, is_refusal
from zhrag.jsonl import iter_jsonl
from zhrag.run_folder import RESULTS_FILE

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
PLOT_FILES = {
    "f_by_variant": "f_by_variant.png",
    "f_by_category": "f_by_category.png",
    "latency_by_node": "latency_by_node.png",
}
#: Score columns always shown in the main table (other numeric scores found in the records follow).
STANDARD_SCORES = ("faithfulness", "answer_correctness")
#: Nodes in graph order for the latency plot; other nodes follow alphabetically.
_NODE_ORDER = ("retrieve", "judge", "requery", "answer")
_METRIC_COLUMNS = ("CO", "NA", "IN", "CGA", "F")

Record = Mapping[str, Any]


# ---------------------------------------------------------------------------------------------- numbers


def _validate(record: Any, where: str) -> None:
    if not isinstance(record, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("variant"), str) or not record["variant"]:
        raise DatasetError(f"{where}: missing 'variant'")
    try:
        Grade(record.get("grade"))
    except ValueError:
        grade = record.get("grade")
        raise DatasetError(f"{where}: grade must be CORRECT, INCORRECT or NOT_ATTEMPTED, got {grade!r}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean_of(values: Sequence[Any]) -> dict[str, float | int | None]:
    """Mean over the numeric values, with how many there were and how many were missing."""
    present = [float(value) for value in values if _is_number(value)]
    mean = float(np.mean(present)) if present else None
    return {"mean": mean, "n": len(present), "missing": len(values) - len(present)}


def _rate_of(values: Sequence[Any]) -> dict[str, float | int | None]:
    """Percentage of ``True`` among the boolean values (``None`` and absent values are left out)."""
    present = [bool(value) for value in values if isinstance(value, bool)]
    return {"rate": 100.0 * sum(present) / len(present) if present else None, "n": len(present)}


def _score_names(records: Iterable[Record]) -> list[str]:
    found = {name for record in records for name, value in (record.get("scores") or {}).items() if _is_number(value)}
    return list(STANDARD_SCORES) + sorted(found - set(STANDARD_SCORES))


def _node_names(records: Iterable[Record]) -> list[str]:
    found = {node for record in records for node in (record.get("timings_ms") or {}) if node != "total"}
    return [node for node in _NODE_ORDER if node in found] + sorted(found - set(_NODE_ORDER))


def _field(record: Record, group: str, name: str) -> Any:
    """``record[group][name]``, or None when either is absent."""
    return (record.get(group) or {}).get(name)


def summarize(records: Sequence[Record], score_names: Sequence[str], node_names: Sequence[str]) -> dict[str, Any]:
    """Grade metrics, score means, recall rates and latencies (ms) of one group of records."""
    totals = [_field(record, "timings_ms", "total") for record in records]
    totals = [float(total) for total in totals if _is_number(total)]
    return {
        **compute_metrics(record["grade"] for record in records),
        "intervals": bootstrap_intervals([record["grade"] for record in records]),
        "scores": {name: _mean_of([_field(record, "scores", name) for record in records]) for name in score_names},
        "recall": {
            kind: _rate_of([_field(record, "recall", kind) for record in records]) for kind in ("retrieved", "kept")
        },
        "latency_ms": {
            "mean": float(np.mean(totals)) if totals else None,
            "p50": float(np.percentile(totals, 50)) if totals else None,
            "p95": float(np.percentile(totals, 95)) if totals else None,
            "n": len(totals),
        },
        "tool_use": tool_use(records),
        "knowledge": knowledge_use(records),
        "evaluator": evaluator_use(records),
        "role_ms": role_ms(records),
        "node_ms": {
            node: float(np.mean([float(_field(record, "timings_ms", node) or 0.0) for record in records]))
            if records
            else 0.0
            for node in node_names
        },
    }


def tool_use(records: Sequence[Record]) -> dict[str, Any] | None:
    """How an agent variant used its tool (records with ``tool_calls``, i.e. A3): calls per question, share of
    well-formed calls (with a 95 % Wilson interval), questions with no call, and questions where the agent
    stopped by itself (a final reply) rather than at its round budget. ``None`` when no record has tool calls."""
    agent = [record for record in records if isinstance(record.get("tool_calls"), list)]
    if not agent:
        return None
    calls = [call for record in agent for call in record["tool_calls"]]
    well_formed = sum(bool(call.get("well_formed")) and not call.get("error") for call in calls)
    stopped = sum(record.get("agent_reply") is not None for record in agent)
    rounds = [int(record.get("tool_rounds") or 0) for record in agent]
    return {
        "n": len(agent),
        "calls": len(calls),
        "calls_per_question": len(calls) / len(agent),
        "well_formed": proportion(well_formed, len(calls)),
        "no_call": sum(not record["tool_calls"] for record in agent),
        "stopped_by_agent_pct": 100.0 * stopped / len(agent),
        "rounds": {str(value): rounds.count(value) for value in sorted(set(rounds))},
    }


#: The knowledge an answer can use (``knowledge.source`` of a record), in report order.
KNOWLEDGE_SOURCES = ("passages", "top_passage", "closed_book")


def knowledge_use(records: Sequence[Record]) -> dict[str, Any] | None:
    """How often each knowledge source was given to the answer node (``passages``, A2's ``top_passage`` fallback,
    ``closed_book``), with the grade's CO and F on each path: whether the path taken answered right. ``None`` when no
    record says which knowledge it used (runs recorded before the field existed)."""
    known = [record for record in records if isinstance(record.get("knowledge"), dict)]
    if not known:
        return None
    paths: dict[str, Any] = {}
    for source in KNOWLEDGE_SOURCES:
        taken = [record for record in known if record["knowledge"].get("source") == source]
        if taken:
            metrics = compute_metrics(record["grade"] for record in taken)
            weighed = [record for record in taken if len(record.get("candidates") or {}) > 1]
            paths[source] = {"n": len(taken), "share": proportion(len(taken), len(known)),
                             "CO": metrics["CO"], "F": metrics["F"], "weighed": len(weighed),
                             "other_path_right": sum(_other_path_right(record, source) for record in weighed)}
    return {"n": len(known), "paths": paths}


def _other_path_right(record: Record, source: str) -> bool:
    """Whether ``record``'s answer is not correct while a candidate of another path is (rule grader)."""
    if record["grade"] == Grade.CORRECT.value:
        return False
    return any(
        grade_by_rules(record["question"], record["gold"], candidate["answer"]) is Grade.CORRECT
        for path, candidate in (record.get("candidates") or {}).items()
        if path != source
    )


def evaluator_use(records: Sequence[Record]) -> dict[str, Any] | None:
    """The A4 evaluator's verdicts against the truth (records with ``verdicts``): every answer it checked, graded
    by the rule grader against the gold answer, by what the evaluator did with it (accepted; sent back or answered
    不知道: rejected). ``None`` when no record has verdicts.

    ``rejected_wrong`` is the share of the wrong answers it saw that it rejected, ``rejected_correct`` that of the
    correct ones (each with a 95 % Wilson interval); answers that were already 不知道 are counted apart."""
    checked = [record for record in records if isinstance(record.get("verdicts"), list)]
    if not checked:
        return None
    table = {"correct": {"accept": 0, "reject": 0}, "wrong": {"accept": 0, "reject": 0}}
    unknown = 0
    for record in checked:
        for verdict in record["verdicts"]:
            answer = str(verdict.get("answer") or "")
            if is_refusal(answer):
                unknown += 1
                continue
            correct = grade_by_rules(record["question"], record["gold"], answer) is Grade.CORRECT
            truth = "correct" if correct else "wrong"
            table[truth]["accept" if verdict.get("decision") == "accept" else "reject"] += 1
    return {
        "n": len(checked),
        "verdicts": sum(len(record["verdicts"]) for record in checked),
        "table": table,
        "unknown_answers": unknown,
        "rejected_wrong": proportion(table["wrong"]["reject"], sum(table["wrong"].values())),
        "rejected_correct": proportion(table["correct"]["reject"], sum(table["correct"].values())),
        "sent_back": sum(int(record.get("review_rounds") or 0) > 0 for record in checked),
        "abstained": sum(record["verdicts"][-1].get("decision") == "abstain" for record in checked if record["verdicts"]),
    }


def role_ms(records: Sequence[Record]) -> dict[str, float] | None:
    """Mean wall time per A4 role (ms per question, summed over its nodes and rounds; the shared answer node counts
    for the answerer). ``None`` when no record has role timings."""
    checked = [record for record in records if isinstance(record.get("verdicts"), list)]
    if not checked:
        return None
    totals: dict[str, float] = {}
    for record in checked:
        for node, ms in (record.get("timings_ms") or {}).items():
            if node != "total" and _is_number(ms):
                role = "answerer" if node == "answer" else node.split(":", 1)[0]
                totals[role] = totals.get(role, 0.0) + float(ms)
    return {role: total / len(checked) for role, total in totals.items()}


def _evaluator_section(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = {variant: stats["evaluator"] for variant, stats in summaries.items() if stats.get("evaluator")}
    if not rows:
        return []
    lines = [
        "## The evaluator's verdicts (A4)",
        "",
        "Every answer the evaluator checked (one per round), graded by the rule grader against the gold answer, by "
        "what the evaluator did with it: accepted, or rejected (sent back to the researcher, or replaced by 不知道). "
        "Rejected wrong / correct: share of the wrong / correct answers it rejected ([low, high]: 95 % Wilson "
        "interval). Mean seconds per question spent in each role.",
        "",
        "| variant | correct: accepted | correct: rejected | wrong: accepted | wrong: rejected | 不知道 seen "
        "| rejected wrong % | rejected correct % | sent back | answered 不知道 | seconds by role |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    def share(stats: Mapping[str, Any]) -> str:
        return f"{_pct(stats['pct'])} [{stats['ci95'][0]}, {stats['ci95'][1]}]" if stats["ci95"] else "–"

    for variant, use in rows.items():
        table = use["table"]
        timing = summaries[variant].get("role_ms") or {}
        roles = ", ".join(f"{role} {_seconds(ms)}" for role, ms in timing.items())
        lines.append(
            f"| {variant} | {table['correct']['accept']} | {table['correct']['reject']} | {table['wrong']['accept']} "
            f"| {table['wrong']['reject']} | {use['unknown_answers']} | {share(use['rejected_wrong'])} "
            f"| {share(use['rejected_correct'])} | {use['sent_back']} | {use['abstained']} | {roles} |"
        )
    return [*lines, ""]


def _knowledge_section(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = {variant: stats["knowledge"] for variant, stats in summaries.items() if stats.get("knowledge")}
    if not rows:
        return []
    lines = [
        "## Knowledge the answers used",
        "",
        "What each answer was given (the record's `knowledge.source`): the retrieved or kept passages, A2's fallback "
        "to the best-scored rejected passage, or nothing (closed-book); share of the variant's questions "
        "([low, high]: 95 % Wilson interval), and CO / F of the answers on that path. Where A2's arbiter weighed "
        "several candidate answers, the last column counts the answers on the path that are not correct while "
        "another path's candidate is (rule grader): the choices it got wrong (of the weighed answers).",
        "",
        "| variant | path | n | share % | CO % | F | another path right |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, use in rows.items():
        for source, path in use["paths"].items():
            share = path["share"]
            cell = f"{_pct(share['pct'])} [{share['ci95'][0]}, {share['ci95'][1]}]" if share["ci95"] else "–"
            weighed = path.get("weighed", 0)
            other = f"{path['other_path_right']} of {weighed}" if weighed else "–"
            lines.append(f"| {variant} | {source} | {path['n']} | {cell} | {_pct(path['CO'])} | {path['F']:.1f} "
                         f"| {other} |")
    return [*lines, ""]


def _tool_use_section(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = {variant: stats["tool_use"] for variant, stats in summaries.items() if stats.get("tool_use")}
    if not rows:
        return []
    lines = [
        "## Tool use (agent variants)",
        "",
        "Calls of qdrant-find the agent made; well-formed: in the chat template's own format with a known tool and a "
        "query ([low, high]: 95 % Wilson interval); stopped by itself: the agent gave a final reply before its round "
        "budget ran out; rounds: questions by the number of tool rounds run.",
        "",
        "| variant | n | calls / question | well-formed calls % | questions without a call | stopped by itself % "
        "| rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, use in rows.items():
        share = use["well_formed"]
        well = f"{_pct(share['pct'])} [{share['ci95'][0]}, {share['ci95'][1]}]" if share["ci95"] else "–"
        spread = ", ".join(f"{rounds}: {count}" for rounds, count in use["rounds"].items())
        lines.append(f"| {variant} | {use['n']} | {use['calls_per_question']:.2f} | {well} | {use['no_call']} "
                     f"| {_pct(use['stopped_by_agent_pct'])} | {spread} |")
    return [*lines, ""]


def _by_variant(records: Sequence[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record["variant"], []).append(record)
    return {variant: groups[variant] for variant in sorted(groups)}


# ---------------------------------------------------------------------------------------------- markdown


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _score_cell(stats: Mapping[str, Any]) -> str:
    if stats["mean"] is None:
        return f"– ({stats['missing']} missing)" if stats["missing"] else "–"
    missing = f" ({stats['missing']} missing)" if stats["missing"] else ""
    return f"{stats['mean']:.3f}{missing}"


def _seconds(ms: float | None) -> str:
    return "–" if ms is None else f"{ms / 1000:.2f}"


def _with_interval(stats: Mapping[str, Any], column: str) -> str:
    interval = (stats.get("intervals") or {}).get(column)
    if interval is None:
        return _pct(stats[column])
    return f"{_pct(stats[column])} [{interval[0]:.1f}, {interval[1]:.1f}]"


def _main_table(summaries: Mapping[str, Mapping[str, Any]], score_names: Sequence[str]) -> list[str]:
    header = ["variant", "n", *_METRIC_COLUMNS, *score_names]
    header += ["recall retrieved %", "recall kept %", "latency p50 s", "latency mean s", "latency p95 s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, stats in summaries.items():
        cells = [
            variant,
            str(stats["n"]),
            *(_with_interval(stats, column) for column in _METRIC_COLUMNS),
            *(_score_cell(stats["scores"][name]) for name in score_names),
            _pct(stats["recall"]["retrieved"]["rate"]),
            _pct(stats["recall"]["kept"]["rate"]),
            _seconds(stats["latency_ms"].get("p50")),
            _seconds(stats["latency_ms"]["mean"]),
            _seconds(stats["latency_ms"]["p95"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _category_table(by_category: Mapping[str, Mapping[str, Mapping[str, Any]]], categories: Sequence[str]) -> list[str]:
    variants = list(by_category)
    header = ["category", *(f"{variant} {column}" for variant in variants for column in ("n", "CO", "F"))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for category in categories:
        cells = [category or "(none)"]
        for variant in variants:
            stats = by_category[variant].get(category)
            cells += [str(stats["n"]), _pct(stats["CO"]), _pct(stats["F"])] if stats else ["0", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _paired_section(pairs: Sequence[Mapping[str, Any]]) -> list[str]:
    if not pairs:
        return []
    lines = [
        "## Variants compared on the same questions",
        "",
        "Differences of the second variant minus the first, with 95 % paired-bootstrap intervals; the last two columns "
        "count the questions only one of the two answers correctly.",
        "",
        "| comparison | n | ΔF | ΔCO | only first correct | only second correct |",
        "|---|---|---|---|---|---|",
    ]
    for pair in pairs:
        f_low, f_high = pair["dF_interval"]
        co_low, co_high = pair["dCO_interval"]
        lines.append(
            f"| {pair['second']} − {pair['first']} | {pair['n']} | {pair['dF']:+.1f} [{f_low:+.1f}, {f_high:+.1f}] | "
            f"{pair['dCO']:+.1f} [{co_low:+.1f}, {co_high:+.1f}] | {pair['only_first_correct']} | "
            f"{pair['only_second_correct']} |"
        )
    return [*lines, ""]


def _abstention_section(abstention: Mapping[str, Any] | None) -> list[str]:
    if not abstention:
        return []
    lines = [
        "## With calibrated abstention",
        "",
        f"Answers whose confidence (geometric-mean token probability) is below the variant's threshold count as not "
        f"attempted (不知道). Thresholds tuned on other questions: `{abstention['source']}`.",
        "",
        "| variant | threshold | abstained | CO | NA | IN | CGA | F | F without |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, entry in abstention["variants"].items():
        stats = entry["metrics"]
        cells = [variant, f"{entry['threshold']:.3f}", str(entry["abstained"])]
        cells += [_with_interval(stats, column) for column in _METRIC_COLUMNS]
        cells.append(_pct(entry["F_without"]))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


#: How the report names each grader of ``run.json`` (``settings.context.grader``).
GRADER_LABELS = {
    "rules": "Graded by the offline rule grader (string matching, `grader: rules` in run.json); the benchmark's own "
    "grade uses an LLM judge (`--grader official`), so these scores are not official ones.",
    "official": "Graded by the benchmark's grading prompt sent to the evaluation judge (`grader: official` in "
    "run.json; judge model: {judge}).",
}


def _grader(out_dir: Path) -> dict[str, Any] | None:
    """``{"grader", "eval_model"}`` from ``out_dir/run.json``, or ``None`` when the folder records none."""
    try:
        context = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))["settings"]["context"]
        return {"grader": str(context["grader"]), "eval_model": context.get("eval_model")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _grader_line(grader: Mapping[str, Any] | None) -> list[str]:
    if not grader:
        return []
    label = GRADER_LABELS.get(grader["grader"], "Graded by the grader `{name}` (run.json).")
    return [label.format(judge=grader.get("eval_model") or "the run's model", name=grader["grader"]), ""]


def _render_markdown(summary: Mapping[str, Any], categories: Sequence[str], labels: Mapping[str, str] | None) -> str:
    score_names = summary["score_names"]
    lines = [
        "# Evaluation report",
        "",
        f"{summary['n_records']} result records, {summary['n_questions']} questions, "
        f"variants: {', '.join(summary['variants'])}.",
        "",
        *_grader_line(summary.get("grader")),
        "CO / NA / IN: % correct / not attempted / incorrect; CGA = CO / (CO + IN); F = 2·CGA·CO / (CGA + CO); "
        "[low, high]: 95 % percentile-bootstrap interval over the questions. "
        "Scores are means over the records that have them. Recall: % of records whose retrieved (after the "
        "retrieve node) or kept (given to the answer node) passages contain the gold answer. Latency: wall time "
        "of the graph per question, without the metric nodes.",
        "",
        "## All questions",
        "",
        *_main_table(summary["variants"], score_names),
        "",
        *_tool_use_section(summary["variants"]),
        *_knowledge_section(summary["variants"]),
        *_evaluator_section(summary["variants"]),
        *_paired_section(summary.get("paired") or []),
        *_abstention_section(summary.get("abstention")),
        "## By primary category",
        "",
        *_category_table(summary["by_category"], categories),
        "",
        "## Questions the knowledge base covers",
        "",
    ]
    covered = summary["kb_covered"]
    if covered["n_known"]:
        lines += [
            f"{covered['n_covered']} of the {covered['n_known']} records whose coverage is known have a knowledge-base "
            f"passage that contains the gold answer and shares at least {MIN_SHARED_BIGRAMS} content character bigrams "
            "with the question (a loose automatic criterion: on dev questions most such matches hold the answer string by "
            "coincidence, see zhrag/evaluation/retrieval_sets.py).",
            "",
            *(_main_table(covered["variants"], score_names) if covered["n_covered"] else ["No covered question."]),
        ]
    else:
        lines.append("No record says whether the knowledge base covers its question.")
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({file})" for name, file in PLOT_FILES.items()]
    if labels:
        lines += ["", "No CJK font was found for the plots; their category labels stand for:", ""]
        lines += ["| label | category |", "|---|---|"]
        lines += [f"| {label} | {name or '(none)'} |" for label, name in labels.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- plots


#: The Simplified Chinese face of the packaged Noto Sans CJK collection (matplotlib >= 3.10 registers every face
#: of a .ttc; older releases register the first, Noto Sans CJK JP, which has the same glyphs).
PACKAGED_CJK_FAMILY = "Noto Sans CJK SC"


def packaged_cjk_font() -> str | None:
    """Path of the Noto Sans CJK collection shipped by PyPI ``noto-cjk-sans-otc`` (OFL-1.1), or None without it."""
    try:
        from noto_cjk_sans_otc import FONT_PATH
    except ImportError:
        return None
    path = Path(str(FONT_PATH))
    return str(path) if path.is_file() else None


@lru_cache(maxsize=32)
def find_cjk_font(characters: str) -> str | None:
    """Family name of a font with all of ``characters`` (registered with matplotlib), or None.

    The packaged Noto Sans CJK (:func:`packaged_cjk_font`) comes first, so plots carry Chinese labels offline
    on any machine; then the system's fonts.
    """
    from matplotlib import font_manager, ft2font

    packaged = packaged_cjk_font()
    for path in [*([packaged] if packaged else []), *sorted(font_manager.findSystemFonts())]:
        try:
            font = ft2font.FT2Font(path)
        except (OSError, RuntimeError):
            continue
        if all(font.get_char_index(ord(character)) for character in characters):
            font_manager.fontManager.addfont(path)
            if path == packaged:
                faces = {entry.name for entry in font_manager.fontManager.ttflist if entry.fname == path}
                if PACKAGED_CJK_FAMILY in faces:
                    return PACKAGED_CJK_FAMILY
            return font_manager.FontProperties(fname=path).get_name()
    return None


def _draw_plots(summary: Mapping[str, Any], categories: Sequence[str], out_dir: Path) -> dict[str, str] | None:
    """Write the PNG plots; returns the category label key when labels had to be ASCII, else None."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    variants = list(summary["variants"])
    wide = "".join(sorted({character for name in categories for character in name if not character.isascii()}))
    font = find_cjk_font(wide) if wide else None
    labels = None
    tick_names = [name or "(none)" for name in categories]
    if wide and font is None:
        labels = {f"C{index}": name for index, name in enumerate(categories, start=1)}
        tick_names = list(labels)
    family = [font, "DejaVu Sans"] if font else ["DejaVu Sans"]
    x = np.arange(len(variants))

    with rc_context({"font.family": family, "axes.unicode_minus": False}):
        figure = Figure(figsize=(max(4.0, 1.2 * len(variants) + 2), 3.5), layout="constrained")
        axes = figure.subplots()
        values = [summary["variants"][variant]["F"] for variant in variants]
        bars = axes.bar(x, values, color="tab:blue")
        axes.bar_label(bars, fmt="%.1f")
        top = max(100.0, *values) * 1.1
        axes.set(xticks=x, xticklabels=variants, ylabel="F (%)", title="F by variant", ylim=(0, top))
        figure.savefig(out_dir / PLOT_FILES["f_by_variant"], dpi=120)

        figure = Figure(figsize=(max(6.0, 0.4 * len(categories) * len(variants) + 2), 4.0), layout="constrained")
        axes = figure.subplots()
        positions = np.arange(len(categories))
        width = 0.8 / max(1, len(variants))
        for index, variant in enumerate(variants):
            per_category = summary["by_category"][variant]
            heights = [per_category[name]["F"] if name in per_category else 0.0 for name in categories]
            axes.bar(positions + (index - (len(variants) - 1) / 2) * width, heights, width, label=variant)
        axes.set(xticks=positions, ylabel="F (%)", title="F by primary category and variant", ylim=(0, 100))
        slanted = len(categories) > 3 and max(len(name) for name in tick_names) > 4
        axes.set_xticklabels(tick_names, rotation=30 if slanted else 0, ha="right" if slanted else "center")
        axes.legend(title="variant", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        figure.savefig(out_dir / PLOT_FILES["f_by_category"], dpi=120)

        figure = Figure(figsize=(max(4.0, 1.2 * len(variants) + 3), 3.5), layout="constrained")
        axes = figure.subplots()
        bottom = np.zeros(len(variants))
        for node in summary["node_names"]:
            seconds = np.array([summary["variants"][variant]["node_ms"][node] / 1000 for variant in variants])
            axes.bar(x, seconds, bottom=bottom, label=node)
            bottom += seconds
        axes.set(xticks=x, xticklabels=variants, ylabel="mean seconds per question", title="Mean latency per node")
        if summary["node_names"]:
            axes.legend(title="node", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        figure.savefig(out_dir / PLOT_FILES["latency_by_node"], dpi=120)
    return labels


# ---------------------------------------------------------------------------------------------- entry points


def _paired(groups: Mapping[str, Sequence[Record]]) -> list[dict[str, Any]]:
    """Each later variant against each earlier one, on the questions both answered."""
    variants = list(groups)
    pairs = []
    for i, first in enumerate(variants):
        for second in variants[i + 1 :]:
            by_id = {record.get("id"): record["grade"] for record in groups[first]}
            shared = [(by_id[record.get("id")], record["grade"]) for record in groups[second] if record.get("id") in by_id]
            if shared:
                result = paired_difference([a for a, _ in shared], [b for _, b in shared])
                pairs.append({"first": first, "second": second, **result})
    return pairs


def _abstention(groups: Mapping[str, Sequence[Record]], thresholds: Mapping[str, float], source: str) -> dict[str, Any]:
    variants = {}
    for variant, records in groups.items():
        if variant not in thresholds:
            continue
        regraded = with_abstention(records, thresholds[variant])
        grades = [record["grade"] for record in regraded]
        variants[variant] = {
            "threshold": thresholds[variant],
            "abstained": sum(bool(a.get("abstained")) and not bool(b.get("abstained")) for a, b in zip(regraded, records, strict=True)),
            "metrics": {**compute_metrics(grades), "intervals": bootstrap_intervals(grades)},
            "F_without": compute_metrics(record["grade"] for record in records)["F"],
        }
    return {"source": source, "variants": variants}



def write_report(
    results: list[dict[str, Any]], out_dir: Path, *, abstention: Mapping[str, float] | None = None,
    abstention_source: str | None = None,
) -> Path:
    """Write ``summary.json``, ``report.md`` and the PNG plots for ``results`` into ``out_dir``.

    ``abstention`` (``{variant: threshold}``, from ``abstention_source``) adds the metrics with calibrated
    abstention. Returns the path of ``report.md``.

    Raises:
        DatasetError: No records, or a record without a variant or with an unknown grade.
    """
    if not results:
        raise DatasetError("no result records to report on")
    for number, record in enumerate(results, start=1):
        _validate(record, f"result record {number}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    score_names, node_names = _score_names(results), _node_names(results)
    groups = _by_variant(results)
    covered_groups = {
        variant: [record for record in records if record.get("kb_covered") is True]
        for variant, records in groups.items()
    }
    categories = sorted({str(record.get("primary_category") or "") for record in results})
    summary: dict[str, Any] = {
        "n_records": len(results),
        "n_questions": len({record.get("id", index) for index, record in enumerate(results)}),
        "score_names": score_names,
        "node_names": node_names,
        "variants": {variant: summarize(records, score_names, node_names) for variant, records in groups.items()},
        "by_category": {variant: metrics_by(records, "primary_category") for variant, records in groups.items()},
        "kb_covered": {
            "n_known": sum(isinstance(record.get("kb_covered"), bool) for record in results),
            "n_covered": sum(record.get("kb_covered") is True for record in results),
            "variants": {
                variant: summarize(records, score_names, node_names)
                for variant, records in covered_groups.items()
                if records
            },
        },
    }
    summary["grader"] = _grader(out_dir)
    summary["paired"] = _paired(groups)
    if abstention:
        summary["abstention"] = _abstention(groups, abstention, abstention_source or "")
    labels = _draw_plots(summary, categories, out_dir)
    summary["plots"] = dict(PLOT_FILES)
    summary["category_labels"] = labels
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    report = out_dir / REPORT_FILE
    report.write_text(_render_markdown(summary, categories, labels), encoding="utf-8")
    return report


def read_results(path: Path) -> list[dict[str, Any]]:
    """The records of a ``results.jsonl`` file.

    Raises:
        DatasetError: Missing file, or a line that is not a valid result record (named by file and line).
    """
    if not path.is_file():
        raise DatasetError(f"results file not found: {path}")
    records = []
    for where, record in iter_jsonl(path, DatasetError):
        _validate(record, where)
        records.append(record)
    return records


def merged_results(runs: Sequence[tuple[Path, str | None]]) -> list[dict[str, Any]]:
    """The result records of several run folders for one report: each run's variants renamed ``LABEL:variant``
    when it has a label (runs of the same variant with other models or adapters stay apart).

    Raises:
        DatasetError: a run without results, or two runs giving the same variant name.
    """
    records: list[dict[str, Any]] = []
    owners: dict[str, Path] = {}
    for run_dir, label in runs:
        run_records = read_results(Path(run_dir) / RESULTS_FILE)
        for record in run_records:
            record["variant"] = f"{label}:{record['variant']}" if label else record["variant"]
        for variant in {record["variant"] for record in run_records}:
            if owners.setdefault(variant, Path(run_dir)) != Path(run_dir):
                raise DatasetError(f"variant {variant!r} is in {owners[variant]} and {run_dir}: label one run (DIR=LABEL)")
        records += run_records
    return records


def rebuild_report(run_dir: Path, *, abstention: Path | None = None) -> Path:
    """Rewrite the summary, report and plots of a run from its ``results.jsonl``; returns ``report.md``.

    ``abstention`` is an ``abstention.json`` of tuned thresholds (``zhrag tune-abstention``) to report with.
    """
    run_dir = Path(run_dir)
    thresholds = read_thresholds(abstention) if abstention is not None else None
    return write_report(
        read_results(run_dir / RESULTS_FILE), run_dir, abstention=thresholds,
        abstention_source=str(abstention) if abstention is not None else None,
    )
