"""Exact checks of a benchmark's derived numbers (rates, ratios) against the rounded numbers it recorded.

A benchmark computes a rate from unrounded times and then rounds both, so the rate recomputed from the recorded
time differs from the recorded rate by an amount that depends on how fast the machine was (a slow run has small
rates, where rounding to one decimal is a large relative error). These checks allow exactly the rounding: they
hold for every machine speed and fail only when the benchmark computed the number from something else.
"""

from __future__ import annotations

import math


def measured_range(recorded: float, decimals: int | None) -> tuple[float, float]:
    """The values that ``round(value, decimals)`` records as ``recorded`` (``None``: an exact count)."""
    if decimals is None:
        return recorded, recorded
    half = 0.5 * 10.0**-decimals + 1e-12 * max(1.0, abs(recorded))  # and a margin for float error
    return recorded - half, recorded + half


def assert_rounded_quotient(
    stored: float,
    decimals: int,
    numerator: float,
    numerator_decimals: int | None,
    denominator: float,
    denominator_decimals: int | None,
) -> None:
    """Assert that ``stored`` is ``round(n / d, decimals)`` for some measured ``n`` and ``d`` behind the recorded
    ``numerator`` and ``denominator`` (rounded to ``numerator_decimals`` / ``denominator_decimals``)."""
    n_low, n_high = measured_range(numerator, numerator_decimals)
    d_low, d_high = measured_range(denominator, denominator_decimals)
    assert d_high > 0, f"denominator {denominator} is not positive"
    low = round(n_low / d_high, decimals)
    high = round(n_high / d_low, decimals) if d_low > 0 else math.inf
    assert low <= stored <= high, (
        f"{stored} is not {numerator} / {denominator} rounded to {decimals} decimals (expected {low} to {high})"
    )
