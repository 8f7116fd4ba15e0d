"""Report of a retrieval benchmark run: ``retrieval.md`` (ablation table) and ``retrieval.png`` (recall@k)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zhrag.evaluation.retrieval_eval import KS

REPORT_FILE = "retrieval.md"
PLOT_FILE = "retrieval.png"
_SET_NOTES = {
    "rc": "reading-comprehension pairs; hit = a chunk of the paragraph the question was written on",
    "rc-train": "reading-comprehension pairs of the training paragraphs (retrieval settings are tuned here); hit = a "
    "chunk of the paragraph the question was written on",
    "rc-heldout": "reading-comprehension pairs of the held-out paragraphs (the ones zhrag eval --data rc asks); hit = a "
    "chunk of the paragraph the question was written on",
    "dev-verified": "dev questions the KB answers: picked by a lexical-overlap filter (a retrieval-like selection, "
    "so it favours questions lexical retrieval finds), then checked by hand; hit = a chunk of the answering paragraph",
    "dev-covered": "dev questions the loose automatic criterion calls covered; hit = a chunk mentioning the gold "
    "answer (mostly coincidental matches, see zhrag/evaluation/retrieval_sets.py)",
}


def render_markdown(document: Mapping[str, Any]) -> str:
    """The ablation table: one row per configuration, recall@k / MRR / p50 latency per query set."""
    sets = list(document["sets"])
    settings = document.get("settings", {})
    lines = [
        "# Retrieval benchmark",
        "",
        "Store: " + ", ".join(f"{key} `{value}`" for key, value in settings.items()),
        "",
        "Query sets:",
        *(f"- **{name}** ({document['sets'][name]['n']} questions): {_SET_NOTES.get(name, '')}" for name in sets),
        "",
    ]
    for name in sets:
        lines += [f"## {name}", "", "| configuration | " + " | ".join(f"R@{k}" for k in KS) + " | MRR | p50 ms |"]
        lines.append("|---" * (len(KS) + 3) + "|")
        for row_name, row in document["rows"].items():
            cell = row["sets"].get(name)
            if cell is None:
                continue
            recalls = " | ".join(f"{100 * cell[f'recall@{k}']:.1f}" for k in KS)
            lines.append(f"| {row_name} | {recalls} | {cell['mrr']:.3f} | {cell['latency_ms_p50']:.1f} |")
        lines.append("")
    if document.get("requery"):
        lines += [
            "## A2 requery: a second retrieval round",
            "",
            "Default configuration, 3 passages per round; the second round keeps the first 3 passages the first did",
            "not return. Recovered = share of the first round's misses that the second round finds.",
            "",
            "| set | strategy | round 1 | after round 2 | misses recovered |",
            "|---|---|---|---|---|",
        ]
        for set_name, strategies in document["requery"].items():
            for name, cell in strategies.items():
                lines.append(
                    f"| {set_name} | {name} | {100 * cell['round1_recall']:.1f} | {100 * cell['round2_recall']:.1f} "
                    f"| {100 * cell['misses_recovered']:.1f} |"
                )
        lines.append("")
    return "\n".join(lines)


def draw_plot(document: Mapping[str, Any], path: Path) -> None:
    """Recall@k curves, one panel per query set, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(document["sets"])
    figure, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for axis, name in zip(axes[0], sets, strict=True):
        for row_name, row in document["rows"].items():
            cell = row["sets"].get(name)
            if cell is not None:
                axis.plot(KS, [100 * cell[f"recall@{k}"] for k in KS], marker="o", label=row_name)
        axis.set_title(f"{name} (n={document['sets'][name]['n']})")
        axis.set_xlabel("k")
        axis.set_ylabel("recall@k (%)")
        axis.set_xticks(KS)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_retrieval_report(document: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``retrieval.md`` and ``retrieval.png`` into ``out_dir``; returns the markdown path."""
    out = Path(out_dir).expanduser()
    report = out / REPORT_FILE
    report.write_text(render_markdown(document) + "\n", encoding="utf-8")
    draw_plot(document, out / PLOT_FILE)
    return report
