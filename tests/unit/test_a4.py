"""A4's roles (planner, researcher, answerer, evaluator) with scripted models and a fake knowledge client: the
wiring, the hand-offs, the evaluator's decisions and bounds, role models, and the checks the evaluator runs.

The scripted models stand for no real model: the real default model runs A4 in tests/integration/test_cli.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fakes import ScoringLLM

from zhrag.errors import ConfigError, RunContextError
from zhrag.graph import builder
from zhrag.graph.builder import build_graph
from zhrag.graph.context import Context
from zhrag.graph.served import served_context
from zhrag.kb.passage import Passage
from zhrag.nodes import retrieve
from zhrag.prompts.judge import CHAT_JUDGE_SYSTEM
from zhrag.prompts.roles import (
    CHAT_EVALUATOR_SYSTEM,
    CHAT_PLANNER_SYSTEM,
    answer_fits,
    build_evaluator_prompt,
    build_planner_prompt,
    question_constraints,
    stated_in,
)

from test_graph import FakeKnowledge, run

QUESTION = "蓝湖镇位于哪个省？"
P_TOWN = Passage(id="kb#1", title="蓝湖镇", text="蓝湖镇位于乙省北部，以湖景闻名。", score=0.9)
P_RIVER = Passage(id="kb#2", title="丙河", text="丙河全长三百公里，流经丁县。", score=0.5)
P_LAKE = Passage(id="kb#3", title="白湖", text="白湖是一座人工湖。", score=0.4)
P_HILL = Passage(id="kb#4", title="青山", text="青山位于戊省，海拔一千米。", score=0.3)


@pytest.fixture
def knowledge(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[str], list[Passage]]], FakeKnowledge]:
    def install(results: Callable[[str], list[Passage]]) -> FakeKnowledge:
        fake = FakeKnowledge(results)
        monkeypatch.setattr(retrieve, "get_knowledge_client", lambda config: fake)
        return fake

    return install


@pytest.fixture
def models(scoring_model: Callable[..., tuple[str, ScoringLLM]]) -> Callable[..., tuple[str, ScoringLLM]]:
    """``models(judge=..., evaluator=..., answer=..., plan=...)`` registers one scripted model that plays every role
    by the prompt it gets: P(是) of judge prompts from ``judge(text)``, of evaluator prompts from ``evaluator(text)``;
    the planner's query ``plan``; the answer ``answer(text)``. ``llm.asked`` keeps the prompts scored for P(是) (each
    twice: the fake reads P(是) for 是 and for 否)."""

    def register(*, judge: Callable[[str], float] = lambda text: 0.9, evaluator: Callable[[str], float] = lambda t: 0.1,
                 answer: Callable[[str], str] = lambda text: "乙省", plan: str = "蓝湖镇 省份") -> tuple[str, ScoringLLM]:
        asked: list[str] = []

        def yes(text: str) -> float:
            asked.append(text)
            if CHAT_EVALUATOR_SYSTEM in text:
                return evaluator(text)
            assert CHAT_JUDGE_SYSTEM in text
            return judge(text)

        def reply(text: str) -> str:
            return plan if CHAT_PLANNER_SYSTEM in text else answer(text)

        name, llm = scoring_model(yes, answer=reply)
        llm.asked = asked  # type: ignore[attr-defined]
        return name, llm

    return register


def roles(state: dict[str, Any]) -> list[tuple[str, str]]:
    return [(record["from"], record["to"]) for record in state["handoffs"]]


def test_a4_is_wired_role_by_role_and_each_role_is_a_visible_subgraph() -> None:
    graph = build_graph("a4")
    top = {(e.source, e.target, e.conditional) for e in graph.get_graph().edges}
    assert top == {
        ("__start__", "planner", False), ("planner", "researcher", False), ("researcher", "answerer", False),
        ("answerer", "evaluator", False), ("evaluator", "researcher", True), ("evaluator", "__end__", True),
    }
    inner = {node for node in graph.get_graph(xray=1).nodes if ":" in node}
    assert inner == {"planner:propose", "planner:plan", "researcher:search", "researcher:read", "answerer:quote",
                     "answerer:answer", "answerer:hand_over", "evaluator:check", "evaluator:verify",
                     "evaluator:decide"}
    assert {e.source for e in builder.a4.get_graph().edges} >= {"planner", "evaluator"}


def test_an_answer_a_well_supported_quote_states_is_accepted_without_asking_the_evaluator_model(
    knowledge: Callable[..., FakeKnowledge], models: Callable[..., tuple[str, ScoringLLM]]
) -> None:
    kb = knowledge(lambda q: [P_TOWN, P_RIVER] if q == QUESTION else [P_LAKE, P_TOWN])
    scores = {"乙省北部": 0.97, "丙河": 0.2, "白湖": 0.6}
    name, llm = models(judge=lambda text: next(v for k, v in scores.items() if k in text))
    order, state = run(build_graph("a4"), Context(model=name, top_k=3, stated_threshold=0.0), QUESTION)
    assert order == ["planner", "researcher", "answerer", "evaluator"]
    assert state["plan"]["searches"] == [QUESTION, "蓝湖镇 省份"]
    assert [query for query, _ in kb.calls] == [QUESTION, "蓝湖镇 省份"]
    # Passages are taken in turn from each query's results, each once, and read once.
    assert [(item["id"], item["score"], item["query"]) for item in state["evidence"]] == [
        ("kb#1", 0.97, QUESTION), ("kb#3", 0.6, "蓝湖镇 省份"), ("kb#2", 0.2, QUESTION)
    ]
    assert [p["id"] for p in state["contexts"]] == ["kb#1", "kb#3"]  # the quotes reaching quote_threshold 0.5
    assert state["answer"] == "乙省"
    [verdict] = state["verdicts"]
    assert (verdict["stated"], verdict["fits"], verdict["score"], verdict["decision"]) == (True, True, None, "accept")
    assert not any(CHAT_EVALUATOR_SYSTEM in text for text in llm.asked)
    assert roles(state) == [("planner", "researcher"), ("researcher", "answerer"), ("answerer", "evaluator"),
                            ("evaluator", "end")]
    assert state["knowledge"]["source"] == "passages" and "researcher read 3" in state["knowledge"]["reason"]
    assert {"planner:propose", "researcher:read", "answer", "evaluator:decide"} <= set(state["timings_ms"])


def test_a_doubted_answer_is_sent_back_once_with_a_new_query_then_abstained(
    knowledge: Callable[..., FakeKnowledge], models: Callable[..., tuple[str, ScoringLLM]]
) -> None:
    kb = knowledge(lambda q: [P_RIVER, P_LAKE, P_HILL, P_TOWN])
    name, llm = models(judge=lambda text: 0.8, evaluator=lambda text: 0.2, answer=lambda text: "甲省")
    order, state = run(build_graph("a4"), Context(model=name, top_k=2, max_review_rounds=1), QUESTION)
    assert order == ["planner", "researcher", "answerer", "evaluator"] * 1 + ["researcher", "answerer", "evaluator"]
    first, second = state["verdicts"]
    assert (first["decision"], second["decision"]) == ("research", "abstain")
    assert first["score"] == second["score"] == 0.2 and not first["stated"]
    queries = [query for query, _ in kb.calls]
    assert len(queries) == len(set(queries)) == 3 and queries[:2] == state["plan"]["searches"]
    assert state["feedback"]["query"] == queries[2] and state["review_rounds"] == 1
    assert [item["id"] for item in state["evidence"]] == ["kb#2", "kb#3", "kb#4", "kb#1"]  # each read once
    assert len({text for text in llm.asked if CHAT_JUDGE_SYSTEM in text}) == 4
    assert (state["answer"], state["abstained"]) == ("不知道", True)
    assert roles(state) == [("planner", "researcher"), ("researcher", "answerer"), ("answerer", "evaluator"),
                            ("evaluator", "researcher"), ("researcher", "answerer"), ("answerer", "evaluator"),
                            ("evaluator", "end")]


@pytest.mark.parametrize(("support", "decision"), [(0.9, "accept"), (0.6, "research")])
def test_a_stated_answer_is_judged_by_the_score_of_the_quote_stating_it(
    knowledge: Callable[..., FakeKnowledge], models: Callable[..., tuple[str, ScoringLLM]], support: float,
    decision: str,
) -> None:
    knowledge(lambda q: [P_TOWN, P_RIVER])
    scores = {"乙省北部": support, "丙河": 0.95}
    name, llm = models(judge=lambda text: next(v for k, v in scores.items() if k in text), evaluator=lambda t: 0.99)
    _, state = run(build_graph("a4"), Context(model=name, stated_threshold=0.8), QUESTION)
    first = state["verdicts"][0]
    assert (first["stated"], first["support"], first["score"], first["decision"]) == (True, support, None, decision)
    assert not any(CHAT_EVALUATOR_SYSTEM in text for text in llm.asked)  # no model call for a stated answer


def test_the_evaluator_model_can_accept_a_closed_book_answer(
    knowledge: Callable[..., FakeKnowledge], models: Callable[..., tuple[str, ScoringLLM]]
) -> None:
    knowledge(lambda q: [P_RIVER])
    name, llm = models(judge=lambda text: 0.1, evaluator=lambda text: 0.8, answer=lambda text: "乙省")
    _, state = run(build_graph("a4"), Context(model=name, evaluator_threshold=0.7), QUESTION)
    assert state["contexts"] == [] and state["knowledge"]["source"] == "closed_book"
    [verdict] = state["verdicts"]
    assert (verdict["stated"], verdict["score"], verdict["decision"]) == (False, 0.8, "accept")
    [evaluated] = {text for text in llm.asked if CHAT_EVALUATOR_SYSTEM in text}
    assert "资料" not in evaluated.replace(CHAT_EVALUATOR_SYSTEM, "") and "答案：乙省" in evaluated


@pytest.mark.parametrize(("question", "answer", "verified"), [("蓝湖镇建于哪一年？", "明朝", False),
                                                              ("蓝湖镇建于哪一年？", "1958年", True)])
def test_an_answer_of_the_wrong_form_is_rejected_without_a_model_call(
    knowledge: Callable[..., FakeKnowledge], models: Callable[..., tuple[str, ScoringLLM]], question: str,
    answer: str, verified: bool,
) -> None:
    knowledge(lambda q: [P_TOWN])
    name, llm = models(judge=lambda text: 0.9, evaluator=lambda text: 0.1, answer=lambda text: answer)
    _, state = run(build_graph("a4"), Context(model=name, max_review_rounds=0), question)
    [verdict] = state["verdicts"]
    assert state["plan"]["constraints"]["kind"] == "year"
    assert (verdict["fits"], verdict["decision"], state["answer"]) == (verified, "abstain", "不知道")
    assert any(CHAT_EVALUATOR_SYSTEM in text for text in llm.asked) is verified


def test_each_role_runs_on_the_model_its_context_names(
    knowledge: Callable[..., FakeKnowledge], models: Callable[..., tuple[str, ScoringLLM]]
) -> None:
    knowledge(lambda q: [P_RIVER])
    main, main_llm = models(judge=lambda text: 0.1, answer=lambda text: "丁县")
    planner, planner_llm = models(plan="蓝湖镇 位置")
    evaluator, evaluator_llm = models(evaluator=lambda text: 0.95)
    context = Context(model=main, planner_model=planner, evaluator_model=evaluator)
    _, state = run(build_graph("a4"), context, QUESTION)
    assert state["plan"]["searches"][1] == "蓝湖镇 位置"
    assert state["verdicts"][0]["decision"] == "accept"  # no quote states 丁县 (丙河 scored 0.1); the evaluator agrees
    assert {CHAT_EVALUATOR_SYSTEM in text for text in evaluator_llm.asked} == {True}
    assert planner_llm.asked == [] and planner_llm.scored == []
    assert {CHAT_JUDGE_SYSTEM in text for text in main_llm.asked} == {True}


def test_terminal_nodes_run_once_after_the_evaluator_is_done(
    knowledge: Callable[..., FakeKnowledge], models: Callable[..., tuple[str, ScoringLLM]]
) -> None:
    knowledge(lambda q: [P_RIVER, P_LAKE, P_HILL])
    name, _ = models(judge=lambda text: 0.8, evaluator=lambda text: 0.1, answer=lambda text: "甲省")
    seen: list[str] = []

    def grade(state: dict[str, Any]) -> dict[str, Any]:
        seen.append(state["answer"])
        return {"scores": {"grade": "NA"}}

    order, state = run(build_graph("a4", terminal_nodes=[("grade", grade)]), Context(model=name), QUESTION)
    assert order[-2:] == ["evaluator", "grade"] and order.count("evaluator") == 2
    assert seen == ["不知道"] and state["scores"] == {"grade": "NA"}
    with pytest.raises(ConfigError, match="'evaluator'.*role of a4"):
        build_graph("a4", terminal_nodes=[("evaluator", grade)])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_review_rounds": 4}, "max_review_rounds must be between 0 and 3"),
        ({"quote_threshold": 1.2}, "quote_threshold must be between 0 and 1"),
        ({"evaluator_threshold": -1.0}, "evaluator_threshold must be between 0 and 1"),
        ({"evaluator_base_url": "http://h/v1", "evaluator_adapter": "/a"}, "evaluator_adapter cannot be applied"),
        ({"model_base_url": "http://h/v1", "planner_adapter": "/a"}, "planner_adapter cannot be applied"),
    ],
)
def test_a4_context_fields_are_validated(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Context(**values)


def test_served_callers_choose_role_models_only_from_the_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHRAG_SERVED_CONTEXT", raising=False)
    monkeypatch.setenv("ZHRAG_SERVED_MODELS", "")
    context = served_context({"evaluator_model": "qwen2.5-coder-0.5b", "max_review_rounds": 2})
    assert (context.evaluator_model, context.max_review_rounds) == ("qwen2.5-coder-0.5b", 2)
    with pytest.raises(RunContextError, match="'evaluator_base_url' is set by the server's operator"):
        served_context({"evaluator_base_url": "http://attacker/v1"})
    with pytest.raises(RunContextError, match="planner_model '/etc/passwd' is not served here"):
        served_context({"planner_model": "/etc/passwd"})


@pytest.mark.parametrize(
    ("proposal", "query"),
    [("蓝湖镇 省份", "蓝湖镇 省份"), ("李宗仁 蓝湖镇", "蓝湖镇"), ("蓝湖镇 1958 年", "蓝湖镇"), ("张三", "")],
)
def test_the_planner_drops_terms_it_made_up(
    knowledge: Callable[..., FakeKnowledge], models: Callable[..., tuple[str, ScoringLLM]], proposal: str, query: str
) -> None:
    knowledge(lambda q: [P_TOWN])
    name, _ = models(plan=proposal)
    _, state = run(build_graph("a4"), Context(model=name, max_review_rounds=0), QUESTION)
    assert state["plan"]["searches"] == [QUESTION, *([query] if query else [])]
    assert state["plan"]["proposal"] == proposal


@pytest.mark.parametrize(
    ("question", "kind", "years", "titles"),
    [
        ("《远山谣》是在哪一年首演的？", "year", [], ["远山谣"]),
        ("1958年蓝湖镇有多少人口？", "number", ["1958"], []),
        ("蓝湖镇有几座桥？", "number", [], []),
        ("他带领几个同伙建立了哪个国家？", "any", [], []),
        ("《九命奇冤》是由哪位作者所著？", "any", [], ["九命奇冤"]),
    ],
)
def test_question_constraints(question: str, kind: str, years: list[str], titles: list[str]) -> None:
    assert question_constraints(question) == {"kind": kind, "years": years, "titles": titles}


def test_answer_checks() -> None:
    assert answer_fits("year", "1987年") and answer_fits("number", "三百公里") and not answer_fits("year", "明朝")
    assert answer_fits("any", "吴沃尧")
    assert stated_in("乙 省", ["蓝湖镇位于乙省北部。"]) and not stated_in("甲省", ["蓝湖镇位于乙省北部。"])
    assert not stated_in("。", ["蓝湖镇。"])  # nothing left after normalising


def test_role_prompts_in_both_forms() -> None:
    chat = build_planner_prompt(QUESTION, chat=True)
    assert isinstance(chat, list) and chat[-1].content == QUESTION and chat[0].content == CHAT_PLANNER_SYSTEM
    text = build_planner_prompt(QUESTION, chat=False)
    assert isinstance(text, str) and text.endswith(f"问题：{QUESTION}\n检索词：")
    with_quotes = build_evaluator_prompt(QUESTION, "乙省", ["蓝湖镇位于乙省北部。"], chat=False)
    assert isinstance(with_quotes, str)
    assert with_quotes.endswith(f"资料：\n[1] 蓝湖镇位于乙省北部。\n\n问题：{QUESTION}\n答案：乙省\n这个答案正确吗？")
    closed = build_evaluator_prompt(QUESTION, "乙省", [], chat=True)
    assert isinstance(closed, list) and str(closed[-1].content).startswith(f"问题：{QUESTION}")


@pytest.mark.parametrize(
    ("module", "node", "state", "uses_runtime"),
    [
        ("planner", "propose", "PlannerState", True), ("planner", "plan", "PlannerState", True),
        ("researcher", "search", "ResearcherState", True), ("researcher", "read", "ResearcherState", True),
        ("answerer", "quote", "AnswererState", True), ("answerer", "hand_over", "AnswererState", False),
        ("evaluator", "check", "EvaluatorState", False), ("evaluator", "verify", "EvaluatorState", True),
        ("evaluator", "decide", "EvaluatorState", True),
    ],
)
def test_role_nodes_are_typed_with_their_roles_state(module: str, node: str, state: str, uses_runtime: bool) -> None:
    import importlib
    import typing

    from langgraph.runtime import Runtime

    from zhrag.graph import state as states

    hints = typing.get_type_hints(getattr(importlib.import_module(f"zhrag.nodes.{module}"), node))
    expected = {"state": getattr(states, state), "return": dict[str, Any]}
    assert hints == ({**expected, "runtime": Runtime[Context]} if uses_runtime else expected)
