"""A2's arbiter: the rule, its signals, and the graph paths it takes (fake models: wiring only, no real model)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fakes import ScoringLLM

from zhrag.errors import ConfigError
from zhrag.graph.builder import build_graph
from zhrag.graph.context import Context
from zhrag.graph.served import served_context
from zhrag.nodes.arbitrate import choose, same_answer, stated
from zhrag.prompts.judge import CHAT_JUDGE_SYSTEM

from test_graph import P_CITY, P_RIVER, FakeKnowledge, knowledge, run  # noqa: F401  (fixture)


def features(**values: Any) -> dict[str, Any]:
    base = {"grounded_path": "passages", "agree": False, "stated": False, "best_score": 0.5, "kept": 1,
            "closed_confidence": 0.1, "grounded_confidence": 0.1}
    return {**base, **values}


RULE = Context(arbiter_stated_score=0.9, arbiter_closed_confidence=0.6, arbiter_grounded_confidence=0.4)


@pytest.mark.parametrize(
    ("signals", "path", "reason"),
    [
        (features(grounded_path=None, closed_confidence=0.0), "closed_book", "no passage"),
        (features(agree=True, closed_confidence=0.99), "passages", "agree"),
        (features(stated=True, best_score=0.95, closed_confidence=0.99), "passages", "state the grounded answer"),
        (features(stated=True, best_score=0.5, closed_confidence=0.7), "closed_book", "closed-book answer's"),
        (features(closed_confidence=0.6, grounded_confidence=0.99), "closed_book", "0.6 >= 0.6"),
        (features(grounded_path="top_passage", grounded_confidence=0.4), "top_passage", "grounded answer's"),
        (features(grounded_confidence=0.39), "closed_book", "no signal"),
        (features(grounded_confidence=None, closed_confidence=None), "passages", "no confidence"),
    ],
)
def test_the_rule_takes_its_clauses_in_order(signals: dict[str, Any], path: str, reason: str) -> None:
    chosen, why = choose(signals, RULE)
    assert chosen == path and reason in why


def test_answers_agree_when_one_holds_the_other_and_neither_is_unknown() -> None:
    assert same_answer("吴沃尧", "清吴沃尧") and same_answer("《九命奇冤》", "九命奇冤")
    assert not same_answer("吴沃尧", "李伯元")
    assert not same_answer("不知道", "不知道") and not same_answer("", "吴沃尧")
    assert stated("乙省", [P_CITY]) and stated("甲城", [P_CITY])  # the title counts
    assert not stated("丁县", [P_CITY]) and not stated("不知道", [P_CITY])


@pytest.fixture
def passages(knowledge: Callable[..., FakeKnowledge]) -> FakeKnowledge:  # noqa: F811
    """Every search finds the city passage, then the river passage."""
    return knowledge(lambda query: [P_CITY, P_RIVER])


def closed_book(text: str) -> bool:
    return "资料" not in text and CHAT_JUDGE_SYSTEM not in text


def test_a2_rule_keeps_what_the_model_knew_when_the_kept_passage_does_not_state_the_answer(
    passages: FakeKnowledge, scoring_model: Callable[..., tuple[str, ScoringLLM]]
) -> None:
    # The judge keeps the river passage; from it the model answers 戊县, which the passage does not state; alone,
    # the model answers 乙省 with high confidence.
    name, llm = scoring_model(lambda text: 0.95 if "丙河" in text else 0.1,
                        answer=lambda text: "乙省" if closed_book(text) else "戊县",
                        confidence=lambda text: 0.9 if closed_book(text) else 0.3)
    order, state = run(build_graph("a2"), Context(model=name, a2_arbiter="rule", arbiter_stated_score=0.9,
                                                  arbiter_closed_confidence=0.6, arbiter_grounded_confidence=0.5))
    assert order == ["retrieve", "judge", "answer", "arbitrate"]
    assert state["answer"] == "乙省" and state["answer_confidence"] == pytest.approx(0.9)
    assert set(state["candidates"]) == {"passages", "closed_book"}
    assert state["candidates"]["passages"] == {"answer": "戊县", "confidence": pytest.approx(0.3), "passages": ["kb#2"]}
    arbitration = state["arbitration"]
    assert (arbitration["arbiter"], arbitration["path"]) == ("rule", "closed_book")
    assert arbitration["features"] == {"best_score": 0.95, "kept": 1, "grounded_path": "passages",
                                       "closed_confidence": pytest.approx(0.9), "grounded_confidence": pytest.approx(0.3),
                                       "stated": False, "agree": False}
    assert state["knowledge"]["source"] == "closed_book" and state["knowledge"]["passages"] == []
    assert "the arbiter (rule) chose closed_book: the closed-book answer's confidence" in state["knowledge"]["reason"]


def test_a2_rule_answers_from_the_passage_that_states_its_answer(
    passages: FakeKnowledge, scoring_model: Callable[..., tuple[str, ScoringLLM]]
) -> None:
    name, _ = scoring_model(lambda text: 0.97 if "乙省北部" in text else 0.1,
                      answer=lambda text: "丁省" if closed_book(text) else "乙省",
                      confidence=lambda text: 0.99 if closed_book(text) else 0.2)
    _, state = run(build_graph("a2"), Context(model=name, a2_arbiter="rule", arbiter_stated_score=0.9,
                                              arbiter_closed_confidence=0.6))
    assert state["answer"] == "乙省" and state["arbitration"]["path"] == "passages"
    assert state["arbitration"]["features"]["stated"] is True
    assert state["knowledge"]["passages"] == ["kb#1"]


def test_a2_judge_arbiter_writes_no_candidate_it_does_not_need_and_all_writes_every_path(
    passages: FakeKnowledge, scoring_model: Callable[..., tuple[str, ScoringLLM]]
) -> None:
    name, llm = scoring_model(lambda text: 0.1, answer=lambda text: "乙省" if closed_book(text) else "丁县")
    _, state = run(build_graph("a2"), Context(model=name, max_requeries=0, a2_arbiter="judge"))
    assert len(llm.scored) == 1  # the answer node's closed-book answer only
    assert set(state["candidates"]) == {"closed_book"}
    assert (state["arbitration"]["arbiter"], state["arbitration"]["path"]) == ("judge", "closed_book")

    llm.scored.clear()
    _, state = run(build_graph("a2"), Context(model=name, max_requeries=0, a2_arbiter="judge", a2_candidates="all"))
    assert len(llm.scored) == 2
    assert state["candidates"]["top_passage"] == {"answer": "丁县", "confidence": pytest.approx(0.9),
                                                  "passages": ["kb#1"]}
    assert state["answer"] == "乙省"  # the judge arbiter still answers closed-book when nothing is kept
    assert state["arbitration"]["features"]["grounded_path"] == "top_passage"


def test_a2_rule_skips_the_top_passage_answer_when_it_cannot_win(
    passages: FakeKnowledge, scoring_model: Callable[..., tuple[str, ScoringLLM]]
) -> None:
    name, llm = scoring_model(lambda text: 0.1, confidence=0.95)
    _, state = run(build_graph("a2"), Context(model=name, max_requeries=0, a2_arbiter="rule",
                                              arbiter_stated_score=0.9, arbiter_closed_confidence=0.6))
    assert set(state["candidates"]) == {"closed_book"} and len(llm.scored) == 1
    assert state["arbitration"]["reason"] == "no passage to answer from"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("a2_arbiter", "vote", "unknown a2_arbiter 'vote'"),
        ("a2_candidates", "some", "unknown a2_candidates 'some'"),
        ("arbiter_closed_confidence", 1.5, "arbiter_closed_confidence must be between 0 and 1"),
    ],
)
def test_bad_arbiter_settings_are_refused(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Context(**{field: value})


def test_callers_of_served_graphs_may_choose_the_arbiter() -> None:
    context = served_context({"a2_arbiter": "rule", "arbiter_stated_score": 0.8, "a2_candidates": "all"})
    assert (context.a2_arbiter, context.arbiter_stated_score, context.a2_candidates) == ("rule", 0.8, "all")


def test_the_fit_learns_when_the_closed_book_answer_wins_and_scores_every_policy_on_the_same_rows() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        import a2_arbiter
    finally:
        sys.path.pop(0)

    def row(run: str, closed: float, closed_right: bool) -> dict[str, Any]:
        grades = {"passages": "INCORRECT" if closed_right else "CORRECT",
                  "closed_book": "CORRECT" if closed_right else "INCORRECT"}
        return {"id": f"{run}-{closed}", "run": run, "grades": grades,
                "features": features(closed_confidence=closed, grounded_confidence=0.5, kept=1)}

    # The closed-book answer is right exactly when its confidence is 0.7 or more.
    rows = [row("dev", c / 10, c >= 7) for c in range(10)] + [row("rc", c / 20, False) for c in range(10)]
    params, in_sample = a2_arbiter.fit(rows)
    assert params["arbiter_closed_confidence"] == 0.7 and in_sample == 100.0
    table = a2_arbiter.policy_table(rows, Context(**params))
    assert table["rule"]["F"] == table["oracle"]["F"] == 100.0
    assert table["judge"]["F"] == table["grounded"]["F"] == 85.0 and table["closed_book"]["F"] == 15.0
    assert table["judge"]["rule_minus_this"]["only_rule_correct"] == 3
