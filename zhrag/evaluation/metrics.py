"""Grade labels and the Chinese-SimpleQA metrics.

For ``n`` graded answers (all values in percent):

- CO: share graded correct; NA: share not attempted; IN: share incorrect (CO + NA + IN = 100).
- CGA (correct given attempted) = CO / (CO + IN).
- F = harmonic mean of CO and CGA = 2 · CGA · CO / (CGA + CO).

A zero denominator gives 0, as in the benchmark's own scoring code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
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


#: Bootstrap resamples behind every interval, and their seed (fixed: a report is reproducible).
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def _metric_arrays(correct: Any, incorrect: Any, n: int) -> dict[str, Any]:
    """CO, NA, IN, CGA, F (percent) from per-resample counts (numpy arrays)."""
    import numpy as np

    co, in_ = 100.0 * correct / n, 100.0 * incorrect / n
    na = 100.0 - co - in_
    with np.errstate(invalid="ignore", divide="ignore"):
        cga = np.where(co + in_ > 0, 100.0 * co / (co + in_), 0.0)
        f = np.where(cga + co > 0, 2 * cga * co / (cga + co), 0.0)
    return {"CO": co, "NA": na, "IN": in_, "CGA": cga, "F": f}


def bootstrap_intervals(grades: Sequence[Grade | str], level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals (default 95 %) of CO, NA, IN, CGA and F over the questions of ``grades``."""
    import numpy as np

    values = [Grade(grade) for grade in grades]
    n = len(values)
    if not n:
        return {}
    correct = np.array([g is Grade.CORRECT for g in values], dtype=float)
    incorrect = np.array([g is Grade.INCORRECT for g in values], dtype=float)
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    arrays = _metric_arrays(correct[picks].sum(axis=1), incorrect[picks].sum(axis=1), n)
    tail = 100 * (1 - level) / 2
    return {name: (float(np.percentile(a, tail)), float(np.percentile(a, 100 - tail))) for name, a in arrays.items()}


def paired_difference(
    first: Sequence[Grade | str], second: Sequence[Grade | str], level: float = 0.95
) -> dict[str, Any]:
    """``second`` minus ``first`` on the same questions (aligned lists): the F and CO differences with paired
    bootstrap intervals, and how many questions only one of them answers correctly."""
    import numpy as np

    a, b = [Grade(g) for g in first], [Grade(g) for g in second]
    if len(a) != len(b):
        raise ValueError(f"paired grades differ in length: {len(a)} and {len(b)}")
    n = len(a)
    picks = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))

    def arrays(grades: list[Grade]) -> dict[str, Any]:
        correct = np.array([g is Grade.CORRECT for g in grades], dtype=float)
        incorrect = np.array([g is Grade.INCORRECT for g in grades], dtype=float)
        return _metric_arrays(correct[picks].sum(axis=1), incorrect[picks].sum(axis=1), n)

    base, other = arrays(a), arrays(b)
    point_a, point_b = compute_metrics(a), compute_metrics(b)
    tail = 100 * (1 - level) / 2
    result: dict[str, Any] = {"n": n}
    for name in ("F", "CO"):
        delta = other[name] - base[name]
        result[f"d{name}"] = point_b[name] - point_a[name]
        result[f"d{name}_interval"] = (float(np.percentile(delta, tail)), float(np.percentile(delta, 100 - tail)))
    result["only_first_correct"] = sum(x is Grade.CORRECT and y is not Grade.CORRECT for x, y in zip(a, b, strict=True))
    result["only_second_correct"] = sum(y is Grade.CORRECT and x is not Grade.CORRECT for x, y in zip(a, b, strict=True))
    return result


#: z of a two-sided 95 % interval.
_Z95 = 1.959963984540054


def proportion(count: int, n: int) -> dict[str, Any]:
    """``count`` of ``n`` as a rate: ``{"count", "n", "pct", "ci95"}`` (percent rounded to 0.1, 95 % Wilson interval;
    ``pct`` and ``ci95`` are ``None`` for ``n == 0``)."""
    return {"count": count, "n": n, "pct": round(100.0 * count / n, 1) if n else None,
            "ci95": wilson_interval(count, n)}


def wilson_interval(count: int, n: int) -> tuple[float, float] | None:
    """95 % Wilson score interval of a proportion, in percent (``None`` for ``n == 0``)."""
    if n == 0:
        return None
    p = count / n
    centre = (p + _Z95**2 / (2 * n)) / (1 + _Z95**2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + _Z95**2 / (4 * n * n)) / (1 + _Z95**2 / n)
    return round(100.0 * max(0.0, centre - half), 1), round(100.0 * min(1.0, centre + half), 1)
