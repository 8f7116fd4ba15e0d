"""Evaluation report from a small hand-made results list: numbers in report.md and summary.json, valid PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from zhrag.errors import DatasetError
from zhrag.evaluation import report as report_module
from zhrag.evaluation.report import PLOT_FILES, rebuild_report, write_report


def record(id_: str, variant: str, category: str, grade: str, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "variant": variant, "question": f"{id_}？", "gold": "金", "answer": "答",
            "primary_category": category, "grade": grade, "contexts": [], "retrieved": [], **extra}


def a1_timings(total: float) -> dict[str, float]:
    return {"retrieve": 100.0, "answer": total - 100.0, "total": total}


def a0_fields(total: float, answer_correctness: float | None, kb_covered: bool | None) -> dict[str, Any]:
    return {"timings_ms": {"answer": total, "total": total},
            "scores": {"faithfulness": None, "answer_correctness": answer_correctness},
            "recall": {"retrieved": None, "kept": None}, "kb_covered": kb_covered}


RESULTS = [
    # A0: CO 50, NA 25, IN 25 → CGA 66.7, F 57.1; latency totals 1000, 3000, 2000, 2000 ms.
    record("q1", "A0", "社会", "CORRECT", **a0_fields(1000.0, 1.0, True)),
    record("q2", "A0", "社会", "INCORRECT", **a0_fields(3000.0, 0.0, False)),
    record("q3", "A0", "中华文化", "NOT_ATTEMPTED", **a0_fields(2000.0, 0.5, True)),
    record("q4", "A0", "中华文化", "CORRECT", **a0_fields(2000.0, None, None)),
    # A1: CO 75, NA 0, IN 25 → CGA 75, F 75; faithfulness 0.8, 0.6, -, 1.0; recall retrieved 2/3, kept 2/4.
    record("q1", "A1", "社会", "CORRECT", timings_ms=a1_timings(1100.0), scores={"faithfulness": 0.8},
           recall={"retrieved": True, "kept": True}, kb_covered=True),
    record("q2", "A1", "社会", "CORRECT", timings_ms=a1_timings(1300.0), scores={"faithfulness": 0.6},
           recall={"retrieved": True, "kept": False}, kb_covered=False),
    record("q3", "A1", "中华文化", "INCORRECT", timings_ms=a1_timings(1500.0), scores={"faithfulness": None},
           recall={"retrieved": False, "kept": False}, kb_covered=True),
    record("q4", "A1", "中华文化", "CORRECT", timings_ms=a1_timings(1700.0), scores={"faithfulness": 1.0},
           recall={"retrieved": None, "kept": True}, kb_covered=None),
]


def table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """Rows of the first table under ``## heading``, keyed by their first cell."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[2:]}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("report")
    assert write_report(RESULTS, out_dir) == out_dir / "report.md"
    return out_dir


def points(cells: list[str]) -> list[str]:
    """The cells without their bootstrap intervals, after checking each interval holds its point value."""
    values = []
    for cell in cells:
        point, _, interval = cell.partition(" [")
        if interval:
            low, high = (float(x) for x in interval.rstrip("]").split(", "))
            assert low <= float(point) <= high, cell
        values.append(point)
    return values


def test_main_table_numbers(report_dir: Path) -> None:
    rows = table_rows((report_dir / "report.md").read_text(encoding="utf-8"), "All questions")
    # variant | n | CO | NA | IN | CGA | F | faithfulness | answer_correctness | recall retrieved | recall kept
    # | latency p50 s | mean s | p95 s  (p95 by linear interpolation: 1000, 2000, 2000, 3000 ms → 2850 ms)
    assert points(rows["A0"]) == ["4", "50.0", "25.0", "25.0", "66.7", "57.1", "– (4 missing)", "0.500 (1 missing)",
                                  "–", "–", "2.00", "2.00", "2.85"]
    assert points(rows["A1"]) == ["4", "75.0", "0.0", "25.0", "75.0", "75.0", "0.800 (1 missing)", "– (4 missing)",
                                  "66.7", "50.0", "1.40", "1.40", "1.67"]
    assert rows["A1"][1].startswith("75.0 [") and rows["A1"][2] == "0.0 [0.0, 0.0]"


def test_paired_comparison_counts_questions_only_one_variant_answers(report_dir: Path) -> None:
    rows = table_rows((report_dir / "report.md").read_text(encoding="utf-8"), "Variants compared on the same questions")
    [(label, cells)] = rows.items()
    assert label == "A1 − A0" and cells[0] == "4"
    assert cells[1].startswith("+17.9 [") and cells[2].startswith("+25.0 [")
    assert cells[3:] == ["0", "1"]


def test_category_and_covered_tables(report_dir: Path) -> None:
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    by_category = table_rows(markdown, "By primary category")
    # category | A0 n | A0 CO | A0 F | A1 n | A1 CO | A1 F
    assert by_category["社会"] == ["2", "50.0", "50.0", "2", "100.0", "100.0"]
    assert by_category["中华文化"] == ["2", "50.0", "66.7", "2", "50.0", "50.0"]
    covered = table_rows(markdown, "Questions the knowledge base covers")
    assert points(covered["A0"][:6]) == ["2", "50.0", "50.0", "0.0", "100.0", "66.7"]  # q1 CORRECT, q3 NOT_ATTEMPTED
    assert points(covered["A1"][:6]) == ["2", "50.0", "0.0", "50.0", "50.0", "50.0"]  # q1 CORRECT, q3 INCORRECT
    assert "4 of the 6 records whose coverage is known" in markdown


def test_summary_json(report_dir: Path) -> None:
    summary = json.loads((report_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_records"] == 8 and summary["n_questions"] == 4
    a1 = summary["variants"]["A1"]
    assert a1["F"] == pytest.approx(75.0)
    assert a1["scores"]["faithfulness"] == {"mean": pytest.approx(0.8), "n": 3, "missing": 1}
    assert a1["node_ms"] == {"retrieve": pytest.approx(100.0), "answer": pytest.approx(1300.0)}
    assert summary["variants"]["A0"]["node_ms"] == {"retrieve": 0.0, "answer": pytest.approx(2000.0)}
    assert summary["by_category"]["A0"]["中华文化"]["CGA"] == pytest.approx(100.0)


def test_plots_are_valid_pngs(report_dir: Path) -> None:
    for name in PLOT_FILES.values():
        with Image.open(report_dir / name) as image:
            assert image.format == "PNG"
            assert image.width > 300 and image.height > 200
            image.verify()


def test_packaged_cjk_font_is_found_first() -> None:
    path = report_module.packaged_cjk_font()
    assert path is not None and Path(path).name == "NotoSansCJK-Regular.ttc"
    family = report_module.find_cjk_font("中华文化社会")
    assert family is not None and family.startswith("Noto Sans CJK")
    from matplotlib import font_manager

    assert font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False) == path


def test_plots_label_categories_in_chinese(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    drawn: dict[str, tuple[list[str], set[str]]] = {}
    save = Figure.savefig

    def recording_savefig(figure: Figure, path: Any, *args: Any, **kwargs: Any) -> None:
        save(figure, path, *args, **kwargs)  # draws the figure, so the tick labels have their final text and font
        ticks = figure.axes[0].get_xticklabels()
        drawn[Path(path).name] = ([tick.get_text() for tick in ticks], {tick.get_fontname() for tick in ticks})

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    markdown = write_report(RESULTS, tmp_path).read_text(encoding="utf-8")
    names, fonts = drawn[PLOT_FILES["f_by_category"]]
    assert sorted(names) == ["中华文化", "社会"]
    assert len(fonts) == 1 and next(iter(fonts)).startswith("Noto Sans CJK")
    assert "No CJK font" not in markdown
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["category_labels"] is None


def test_plots_fall_back_to_ascii_category_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_module, "find_cjk_font", lambda characters: None)
    markdown = write_report(RESULTS, tmp_path).read_text(encoding="utf-8")
    assert "| C1 | 中华文化 |\n| C2 | 社会 |" in markdown
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["category_labels"] == {"C1": "中华文化", "C2": "社会"}
    with Image.open(tmp_path / PLOT_FILES["f_by_category"]) as image:
        image.verify()


def test_rebuild_report_from_results_file(report_dir: Path, tmp_path: Path) -> None:
    lines = [json.dumps(result, ensure_ascii=False) for result in RESULTS]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert rebuild_report(tmp_path) == tmp_path / "report.md"
    rebuilt = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert rebuilt == (report_dir / "report.md").read_text(encoding="utf-8")
    assert all((tmp_path / name).is_file() for name in PLOT_FILES.values())


def test_bad_results_are_named(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text(json.dumps(RESULTS[0]) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"results.jsonl:2: malformed JSON line"):
        rebuild_report(tmp_path)
    with pytest.raises(DatasetError, match="results file not found"):
        rebuild_report(tmp_path / "missing")
    with pytest.raises(DatasetError, match="result record 2: grade must be"):
        write_report([RESULTS[0], {**RESULTS[1], "grade": "MAYBE"}], tmp_path)
    with pytest.raises(DatasetError, match="no result records"):
        write_report([], tmp_path)


def test_knowledge_paths_are_counted_with_their_grades(tmp_path: Path) -> None:
    def used(source: str, **candidates: str) -> dict[str, Any]:
        return {"knowledge": {"source": source, "passages": [], "reason": "…"},
                "candidates": {path: {"answer": text, "confidence": 0.5, "passages": []}
                               for path, text in candidates.items()}}

    results = [
        record("q1", "a2", "社会", "CORRECT", **used("passages")),
        # the arbiter chose the wrong passage answer over a closed-book one that matches the gold answer
        record("q2", "a2", "社会", "INCORRECT", **used("passages", passages="错", closed_book="金")),
        record("q3", "a2", "社会", "CORRECT", **used("closed_book")),
        record("q4", "a2", "社会", "INCORRECT", **used("top_passage")),
        record("q1", "a1", "社会", "CORRECT"),  # recorded before the field existed: no row
    ]
    markdown = write_report(results, tmp_path).read_text(encoding="utf-8")
    section = markdown.split("## Knowledge the answers used\n", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| a")]
    assert [row[:3] + row[4:] for row in rows] == [
        ["a2", "passages", "2", "50.0", "50.0", "1 of 1"],
        ["a2", "top_passage", "1", "0.0", "0.0", "–"],
        ["a2", "closed_book", "1", "100.0", "100.0", "–"],
    ]
    assert rows[0][3].startswith("50.0 [")
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["variants"]["a1"]["knowledge"] is None
    assert summary["variants"]["a2"]["knowledge"]["paths"]["passages"]["share"]["count"] == 2


def test_the_evaluators_verdicts_are_tabled_against_the_truth(tmp_path: Path) -> None:
    def checked(*verdicts: tuple[str, str], timings: dict[str, float] | None = None) -> dict[str, Any]:
        return {"verdicts": [{"answer": answer, "decision": decision} for answer, decision in verdicts],
                "review_rounds": len(verdicts) - 1, "timings_ms": timings or {}}

    timings = {"planner:propose": 500.0, "researcher:read": 2000.0, "answer": 1000.0, "answerer:quote": 0.5,
               "evaluator:verify": 700.0, "total": 4200.5}
    results = [
        record("q1", "a4", "社会", "CORRECT", **checked(("金", "accept"), timings=timings)),  # correct, accepted
        record("q2", "a4", "社会", "NOT_ATTEMPTED", **checked(("银", "research"), ("铜", "abstain"))),  # 2 wrong rejected
        record("q3", "a4", "社会", "INCORRECT", **checked(("银", "accept"))),  # wrong, accepted
        record("q4", "a4", "社会", "NOT_ATTEMPTED", **checked(("金子", "research"), ("不知道", "abstain"))),
        record("q1", "a1", "社会", "CORRECT"),
    ]
    markdown = write_report(results, tmp_path).read_text(encoding="utf-8")
    section = markdown.split("## The evaluator's verdicts (A4)\n", 1)[1].split("\n## ", 1)[0]
    [row] = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()
             if line.startswith("| a4")]
    assert row[:6] == ["a4", "1", "1", "1", "2", "1"]
    assert row[6].startswith("66.7 [") and row[7].startswith("50.0 [") and row[8:10] == ["2", "2"]
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["variants"]["a1"]["evaluator"] is None
    assert summary["variants"]["a4"]["role_ms"] == {"planner": 125.0, "researcher": 500.0, "answerer": 250.125,
                                                    "evaluator": 175.0}
