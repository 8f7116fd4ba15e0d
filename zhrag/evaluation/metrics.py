"""Grade labels and the Chinese-SimpleQA metrics.

For ``n`` graded answers (all values in percent):

- CO: share graded correct; NA: share not attempted; IN: share incorrect (CO + NA + IN = 100).
- CGA (correct given attempted) = CO / (CO + IN).
- F = harmonic mean of CO and CGA = 2 · CGA · CO / (CGA + CO).

A zero denominator gives 0, as in the benchmark's own scoring code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any


class Grade(str, Enum):
    """The grade of one answer against its gold answer (serialises as its name)."""

    CORRECT = "CORRECT"
    INCORRECT = "INCORRECT"
    NOT_ATTEMPTED = "NOT_ATTEMPTED"


def compute_metrics(grades: Iterable[Grade | str]) -> dict[str, float]:
    """CO, NA, IN, CGA and F (percent) and the count ``n`` of a collection of grades.

    Raises:
        ValueError: A grade is not one of ``CORRECT``, ``INCORRECT``, ``NOT_ATTEMPTED``.
    """
    counts = dict.fromkeys(Grade, 0)
    for grade in grades:
        counts[Grade(grade)] += 1
    n = sum(counts.values())

    def percent(count: int) -> float:
        return 100.0 * count / n if n else 0.0

    co, na, in_ = percent(counts[Grade.CORRECT]), percent(counts[Grade.NOT_ATTEMPTED]), percent(counts[Grade.INCORRECT])
    cga = 100.0 * co / (co + in_) if co + in_ else 0.0
    f = 2 * cga * co / (cga + co) if cga + co else 0.0
    return {"n": n, "CO": co, "NA": na, "IN": in_, "CGA": cga, "F": f}


def metrics_by(records: Iterable[Mapping[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """``compute_metrics`` over the ``grade`` of records grouped by ``record[key]`` (absent or None: ""), sorted."""
    groups: dict[str, list[str]] = {}
    for record in records:
        value = record.get(key)
        groups.setdefault("" if value is None else str(value), []).append(record["grade"])
    return {name: compute_metrics(groups[name]) for name in sorted(groups)}
