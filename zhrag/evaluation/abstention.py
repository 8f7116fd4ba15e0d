"""Calibrated abstention: answer 不知道 when the answer's confidence is below a threshold tuned on other questions.

Chinese-SimpleQA's F is the harmonic mean of CO and CGA = CO / (CO + IN): a wrong answer lowers CGA, an answer
not given does not, so dropping the least confident answers can raise F. Every evaluation record keeps its
answer's confidence (geometric-mean token probability), so a threshold can be applied after the fact:

- :func:`tune_thresholds` picks, per variant, the threshold of highest F on a *tuning* run (dev questions outside
  the evaluation sample, see ``zhrag eval --exclude-sample``), written as ``abstention.json``;
- :func:`with_abstention` re-grades an evaluation run's records at those thresholds (an answer below its threshold
  counts as not attempted), which is exactly what ``Context.abstain_below`` does inside the graph.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zhrag.errors import DatasetError
from zhrag.evaluation.metrics import Grade, compute_metrics
from zhrag.nodes.answer import abstains

ABSTENTION_FILE = "abstention.json"


def with_abstention(records: Sequence[Mapping[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Copies of ``records`` whose answer's confidence is below ``threshold`` re-graded as not attempted."""
    regraded = []
    for record in records:
        copy = dict(record)
        if abstains(str(record.get("answer", "")), record.get("answer_confidence"), threshold):
            copy["grade"] = Grade.NOT_ATTEMPTED.value
            copy["abstained"] = True
        regraded.append(copy)
    return regraded


def tune_thresholds(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: the confidence threshold of highest F (the lowest among ties; 0 means never abstain).

    Raises:
        DatasetError: no record has an answer confidence (the model gave no probabilities).
    """
    tuned: dict[str, dict[str, Any]] = {}
    for variant in sorted({str(record["variant"]) for record in records}):
        group = [record for record in records if record["variant"] == variant]
        confidences = sorted({float(c) for r in group if (c := r.get("answer_confidence")) is not None})
        if not confidences:
            raise DatasetError(f"no {variant} record has an answer confidence: nothing to tune")
        candidates = [0.0, *confidences]
        best = max(candidates, key=lambda t: (compute_metrics(r["grade"] for r in with_abstention(group, t))["F"], -t))
        tuned[variant] = {
            "threshold": best,
            "n": len(group),
            "before": compute_metrics(record["grade"] for record in group),
            "after": compute_metrics(record["grade"] for record in with_abstention(group, best)),
        }
    return tuned


def write_thresholds(tuned: Mapping[str, Any], path: Path, *, source: str) -> Path:
    """Write ``abstention.json``: the tuned thresholds, where they come from, and F before / after on that run."""
    document = {"source": source, "variants": dict(tuned)}
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def read_thresholds(path: Path) -> dict[str, float]:
    """``{variant: threshold}`` of an ``abstention.json`` file.

    Raises:
        DatasetError: the file is missing or not an abstention file.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        return {variant: float(entry["threshold"]) for variant, entry in document["variants"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DatasetError(f"{path} is not an abstention file written by zhrag tune-abstention") from None
