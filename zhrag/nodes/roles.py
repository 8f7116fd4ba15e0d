"""What A4's roles share: the hand-off record, and what an A4 run adds to its CLI / evaluation record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def handoff(source: str, target: str, round_number: int, note: str) -> dict[str, Any]:
    """One hand-off between roles (``GraphState.handoffs``): who hands what to whom in which round."""
    return {"from": source, "to": target, "round": round_number, "note": note}


def roles_record(state: Mapping[str, Any]) -> dict[str, Any]:
    """What an A4 run adds to its CLI / evaluation record: the plan, the evidence, every hand-off, the evaluator's
    verdicts and how many times it sent the work back."""
    return {"plan": state.get("plan"), "evidence": state.get("evidence", []), "handoffs": state.get("handoffs", []),
            "verdicts": state.get("verdicts", []), "review_rounds": state.get("review_rounds", 0)}
