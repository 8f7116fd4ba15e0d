"""The A0/A1/A2 graphs with fake models and a fake knowledge client (no real model, no Qdrant)."""

from __future__ import annotations

import ast
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeLLM

import zhrag
from zhrag.errors import ConfigError, InputError
from zhrag.graph import builder
from zhrag.graph.builder import build_graph
from zhrag.graph.context import Context
from zhrag.kb.lexical import tokenize
from zhrag.kb.passage import Passage
from zhrag.models import LocalLLM
from zhrag.nodes import common, retrieve
from zhrag.nodes.requery import next_query
from zhrag.prompts import normalize_text
from zhrag.prompts.judge import CHAT_JUDGE_SYSTEM
from zhrag.prompts.requery import CHAT_REQUERY_SYSTEM

QUESTION = "甲城位于哪个省？"
P_CITY = Passage(id="kb#1", title="甲城", text="甲城位于乙省北部，是乙省第二大城市。", score=0.9)
P_RIVER = Passage(id="kb#2", title="丙河", text="丙河全长三百公里，流经丁县。", score=0.5)
P_LAKE = Passage(id="kb#3", title="白湖", text="白湖是一座人工湖。", score=0.4)




class FakeKnowledge:
    """Knowledge client returning ``results(query)``; records calls and the server config it was made for."""

    def __init__(self, results: Callable[[str], list[Passage]], delay_s: float = 0.0) -> None:
        self.results = results
        self.delay_s = delay_s
        self.calls: list[tuple[str, int]] = []
        self.configs: list[Any] = []

    def openai_tool(self, name: str) -> dict[str, Any]:
        """The spec the knowledge server publishes for ``name`` (as langchain's converter writes it)."""
        properties = {"query": {"type": "string"}, "top_k": {"type": "integer", "default": 5}}
        return {"type": "function", "function": {"name": name, "description": "Search the knowledge base.",
                                                 "parameters": {"type": "object", "properties": properties,
                                                                "required": ["query"]}}}

    def find(self, query: str, top_k: int) -> list[Passage]:
        self.calls.append((query, top_k))
        time.sleep(self.delay_s)
        return self.results(query)[:top_k]


@pytest.fixture
def knowledge(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeKnowledge]:
    """Install a fake knowledge client in the retrieve node: ``knowledge(results, delay_s=0)``."""

    def install(results: Callable[[str], list[Passage]], delay_s: float = 0.0) -> FakeKnowledge:
        fake = FakeKnowledge(results, delay_s)

        def get_client(config: Any) -> FakeKnowledge:
            fake.configs.append(config)
            return fake

        monkeypatch.setattr(retrieve, "get_knowledge_client", get_client)
        return fake

    return install


def judge_reply(verdict: Callable[[str], str], rewrite: str = "甲城 省份") -> Callable[[str], str]:
    """Judge-model script: ``rewrite`` for requery prompts, ``verdict(prompt)`` for judge prompts."""

    def reply(text: str) -> str:
        if CHAT_REQUERY_SYSTEM in text:
            return rewrite
        assert CHAT_JUDGE_SYSTEM in text
        return verdict(text)

    return reply


def run(graph: Any, context: Context, question: str = QUESTION) -> tuple[list[str], dict[str, Any]]:
    """Run a graph; return the order in which nodes ran and the final state."""
    order: list[str] = []
    final: dict[str, Any] = {}
    for mode, chunk in graph.stream({"question": question}, context=context, stream_mode=["updates", "values"]):
        if mode == "updates":
            order.extend(chunk)
        else:
            final = chunk
    return order, final


def edges(graph: Any) -> set[tuple[str, str, bool]]:
    return {(e.source, e.target, e.conditional) for e in graph.get_graph().edges}


EXPECTED_EDGES = {
    "a0": {("__start__", "answer", False), ("answer", "__end__", False)},
    "a1": {("__start__", "retrieve", False), ("retrieve", "answer", False), ("answer", "__end__", False)},
    "a2": {
        ("__start__", "retrieve", False),
        ("retrieve", "judge", False),
        ("judge", "answer", True),
        ("judge", "requery", True),
        ("requery", "retrieve", False),
        ("answer", "arbitrate", False),
        ("arbitrate", "__end__", False),
    },
    "a3": {
        ("__start__", "agent", False),
        ("agent", "answer", True),
        ("agent", "tools", True),
        ("tools", "agent", False),
        ("answer", "__end__", False),
    },
}


@pytest.mark.parametrize("variant", ["a0", "a1", "a2", "a3"])
def test_variants_are_wired_as_documented(variant: str) -> None:
    assert edges(build_graph(variant)) == EXPECTED_EDGES[variant]
    assert edges(build_graph(f" {variant.upper()} ")) == EXPECTED_EDGES[variant]
    assert edges(getattr(builder, variant)) == EXPECTED_EDGES[variant]


def test_unknown_variant_names_it_and_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'a5'.*a0, a1, a2, a3, a4"):
        build_graph("a5")


def test_a0_answers_closed_book_without_retrieval(knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM) -> None:
    kb = knowledge(lambda q: [P_CITY])
    answer_model, chat = fake_llm(lambda text: "答案：乙省。")
    order, state = run(build_graph("a0"), Context(model=answer_model))
    assert order == ["answer"]
    assert state["answer"] == "乙省"
    assert kb.calls == []
    [prompt] = chat.prompts
    assert QUESTION in prompt and "资料" not in prompt


def test_a1_answers_from_all_retrieved_passages(knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM) -> None:
    kb = knowledge(lambda q: [P_CITY, P_RIVER, P_LAKE])
    answer_model, chat = fake_llm(lambda text: "乙省")
    context = Context(model=answer_model, top_k=2, collection="kb_test", qdrant_path="/tmp/q", qdrant_url=None)
    order, state = run(build_graph("a1"), context)
    assert order == ["retrieve", "answer"]
    assert kb.calls == [(QUESTION, 2)]
    [config] = kb.configs
    assert (config.collection, config.qdrant_path, config.qdrant_url, config.embedder) == (
        "kb_test",
        "/tmp/q",
        None,
        context.embedder,
    )
    assert state["queries"] == [QUESTION]
    assert state["retrieved"] == state["contexts"] == [P_CITY, P_RIVER]
    [prompt] = chat.prompts
    assert "[1] 甲城位于乙省北部" in prompt and "[2] 丙河全长三百公里" in prompt
    assert "白湖" not in prompt
    assert state["answer"] == "乙省"


@pytest.mark.parametrize("max_requeries", [0, 1, 2])
def test_a2_requery_loop_is_bounded_and_never_repeats_a_query(
    knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM, max_requeries: int
) -> None:
    kb = knowledge(lambda q: [P_RIVER, P_LAKE])
    answer_model, answer_chat = fake_llm(lambda text: "不知道")
    judge_model, _ = fake_llm(judge_reply(lambda text: "不相关", rewrite="甲城 省份"))
    context = Context(a2_arbiter="judge", model=answer_model, judge_model=judge_model, max_requeries=max_requeries)
    order, state = run(build_graph("a2"), context)
    assert len(kb.calls) == max_requeries + 1
    assert order == ["retrieve", "judge"] + ["requery", "retrieve", "judge"] * max_requeries + ["answer", "arbitrate"]
    queries = [query for query, _ in kb.calls]
    assert queries[0] == QUESTION
    assert state["queries"] == queries
    assert len({normalize_text(q) for q in queries}) == len(queries)
    assert state.get("requeries", 0) == max_requeries
    assert state["relevant"] == state["contexts"] == []
    [prompt] = answer_chat.prompts
    assert "资料" not in prompt  # nothing relevant: closed-book


def test_a2_judge_keeps_only_relevant_passages(knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM) -> None:
    knowledge(lambda q: [P_CITY, P_RIVER, P_LAKE])
    verdicts = {"乙省北部": "是的", "丙河": "不是", "白湖": "嗯……"}

    def verdict(text: str) -> str:
        return next(v for marker, v in verdicts.items() if marker in text)

    answer_model, answer_chat = fake_llm(lambda text: "乙省")
    judge_model, judge_chat = fake_llm(judge_reply(verdict))
    order, state = run(build_graph("a2"), Context(a2_arbiter="judge", model=answer_model, judge_model=judge_model))
    assert order == ["retrieve", "judge", "answer", "arbitrate"]
    assert len(judge_chat.prompts) == 3
    assert state["relevant"] == state["contexts"] == [P_CITY]
    assert state["judgements"] == [
        {"id": "kb#1", "score": 1.0, "relevant": True, "raw": "是的"},
        {"id": "kb#2", "score": 0.0, "relevant": False, "raw": "不是"},
        {"id": "kb#3", "score": 0.0, "relevant": False, "raw": "嗯……"},
    ]
    assert state["best_rejected"] == P_RIVER  # the first of the equally scored rejected passages
    [prompt] = answer_chat.prompts
    assert "[1] 甲城位于乙省北部" in prompt and "丙河" not in prompt


def test_a2_requeries_until_something_relevant_and_judges_each_passage_once(
    knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM
) -> None:
    kb = knowledge(lambda q: [P_RIVER] if q == QUESTION else [P_RIVER, P_CITY])
    answer_model, _ = fake_llm(lambda text: "乙省")
    judge_model, judge_chat = fake_llm(judge_reply(lambda text: "是" if "乙省北部" in text else "否"))
    context = Context(model=answer_model, judge_model=judge_model, max_requeries=2)
    order, state = run(build_graph("a2"), context)
    assert order == ["retrieve", "judge", "requery", "retrieve", "judge", "answer", "arbitrate"]
    # the second round asks for one more passage than top_k and skips the one already judged
    assert kb.calls == [(QUESTION, 3), ("甲城 省份", 4)]
    assert [j["id"] for j in state["judgements"]] == ["kb#2", "kb#1"]
    assert sum(CHAT_JUDGE_SYSTEM in p for p in judge_chat.prompts) == 2
    assert state["relevant"] == state["contexts"] == [P_CITY]
    assert state["requeries"] == 1


def test_requery_falls_back_to_fresh_deterministic_queries() -> None:
    tried = [QUESTION]
    keyword_form = " ".join(dict.fromkeys(tokenize(QUESTION)))
    assert next_query(QUESTION, "", tried) == keyword_form
    assert next_query(QUESTION, " 甲城位于哪个省 ", tried) == keyword_form
    for _ in range(8):
        tried.append(next_query(QUESTION, "甲城位于哪个省", tried))
    assert len({normalize_text(q) for q in tried}) == len(tried) == 9


@pytest.mark.parametrize("variant", ["a0", "a1", "a2"])
@pytest.mark.parametrize("question", ["", "  \n "])
def test_empty_question_fails_before_any_model_or_retrieval(
    monkeypatch: pytest.MonkeyPatch, knowledge: Callable[..., FakeKnowledge], variant: str, question: str
) -> None:
    kb = knowledge(lambda q: [P_CITY])

    def no_model(*args: Any, **kwargs: Any) -> LocalLLM:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(common, "load_llm", no_model)
    with pytest.raises(ConfigError) as raised:
        build_graph(variant).invoke({"question": question}, context=Context())
    assert str(raised.value) == "question is empty"
    assert kb.calls == []


@pytest.mark.parametrize(
    ("question", "message"),
    [(None, "question is empty"), (7, "question must be text, got int"), (["问"], "question must be text, got list"),
     ("问" * 1001, "question is 1001 characters long; the limit is 1000")],
)
def test_unusable_questions_are_value_errors_that_servers_show(
    monkeypatch: pytest.MonkeyPatch, knowledge: Callable[..., FakeKnowledge], question: Any, message: str
) -> None:
    """LangGraph servers hide the message of other exceptions ("An internal error occurred")."""
    kb = knowledge(lambda q: [P_CITY])
    monkeypatch.setattr(common, "load_llm", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    with pytest.raises(InputError) as raised:
        build_graph("a1").invoke({"question": question}, context=Context())
    assert str(raised.value) == message and isinstance(raised.value, ValueError)
    assert kb.calls == []


def test_terminal_nodes_run_after_answer_in_order(knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM) -> None:
    knowledge(lambda q: [P_CITY])
    answer_model, _ = fake_llm(lambda text: "乙省")
    seen: list[tuple[str, str]] = []

    def grade(state: dict[str, Any]) -> dict[str, Any]:
        seen.append(("grade", state["answer"]))
        return {"scores": {"exact": state["answer"] == state.get("gold_answer")}}

    def count_chars(state: dict[str, Any]) -> dict[str, Any]:
        seen.append(("count_chars", state["answer"]))
        return {"scores": {"chars": len(state["answer"])}}

    graph = build_graph("a1", terminal_nodes=[("grade", grade), ("count_chars", count_chars)])
    assert ("answer", "grade", False) in edges(graph)
    assert ("count_chars", "__end__", False) in edges(graph)
    order: list[str] = []
    for update in graph.stream(
        {"question": QUESTION, "gold_answer": "乙省"}, context=Context(model=answer_model), stream_mode="updates"
    ):
        order.extend(update)
    assert order == ["retrieve", "answer", "grade", "count_chars"]
    assert seen == [("grade", "乙省"), ("count_chars", "乙省")]
    state = graph.invoke({"question": QUESTION, "gold_answer": "乙省"}, context=Context(model=answer_model))
    assert state["scores"] == {"exact": True, "chars": 2}
    assert set(state["timings_ms"]) == {"retrieve", "answer", "grade", "count_chars"}


@pytest.mark.parametrize("name", ["answer", "__end__"])
def test_terminal_node_name_clash_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        build_graph("a0", terminal_nodes=[(name, lambda state: {})])


def test_timings_are_recorded_per_node_and_summed_over_rounds(
    knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM
) -> None:
    knowledge(lambda q: [P_RIVER], delay_s=0.05)
    answer_model, _ = fake_llm(lambda text: "不知道")
    judge_model, _ = fake_llm(judge_reply(lambda text: "否"))
    context = Context(model=answer_model, judge_model=judge_model, max_requeries=1)
    _, state = run(build_graph("a2"), context)
    timings = state["timings_ms"]
    assert set(timings) == {"retrieve", "judge", "requery", "answer", "arbitrate"}
    assert all(ms > 0 for ms in timings.values())
    assert timings["retrieve"] >= 2 * 50  # two rounds of a 50 ms search, summed


# --- import direction -------------------------------------------------------------------------

PACKAGE_ROOT = Path(zhrag.__file__).parent
#: Layer (package or module; the longest match applies) → what its modules may not import.
FORBIDDEN = {
    "zhrag.models": (
        "zhrag.graph", "zhrag.nodes", "zhrag.evaluation", "zhrag.training", "zhrag.cli", "zhrag.prompts"
    ),
    "zhrag.kb": ("zhrag.graph", "zhrag.nodes", "zhrag.evaluation", "zhrag.training", "zhrag.cli"),
    "zhrag.mcp": ("zhrag.graph", "zhrag.nodes", "zhrag.evaluation", "zhrag.training", "zhrag.cli"),
    "zhrag.prompts": ("zhrag.graph", "zhrag.nodes", "zhrag.evaluation", "zhrag.training", "zhrag.cli"),
    "zhrag.nodes": ("zhrag.graph", "zhrag.evaluation", "zhrag.training", "zhrag.cli"),
    "zhrag.graph": ("zhrag.evaluation", "zhrag.training", "zhrag.cli"),
    # What nodes may import of the graph package imports no node and no builder: no cycle.
    "zhrag.graph.state": ("zhrag.nodes", "zhrag.graph.builder", "zhrag.graph.served", "zhrag.evaluation",
                          "zhrag.training", "zhrag.cli"),
    "zhrag.graph.context": ("zhrag.nodes", "zhrag.graph.builder", "zhrag.graph.served", "zhrag.evaluation",
                            "zhrag.training", "zhrag.cli"),
    "zhrag": ("zhrag.cli",),
}
#: Layer → modules it may import although FORBIDDEN bans their package (with what they define).
ALLOWED = {"zhrag.nodes": ("zhrag.graph.state", "zhrag.graph.context")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> Iterator[str]:
    """Absolute names of every module imported anywhere in ``source`` of a module in ``package``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def test_import_checker_resolves_relative_and_nested_imports() -> None:
    source = "def f():\n    from ..graph import builder\n    import zhrag.cli\nfrom . import common\n"
    names = set(imported_modules(source, "zhrag.nodes"))
    assert {"zhrag.graph.builder", "zhrag.cli", "zhrag.nodes.common"} <= names


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def import_violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """``"<module> imports <name>"`` for each import of ``source`` (the code of ``module``) its layer forbids.

    ``from zhrag.graph import state`` names the package ``zhrag.graph`` too: importing a package's
    ``__init__`` alone is no violation where a module of it is allowed.
    """
    package = module if is_package else module.rpartition(".")[0]
    layer = max((name for name in FORBIDDEN if _within(module, (name,))), key=len)
    allowed = ALLOWED.get(layer, ())
    parents = {name.rpartition(".")[0] for name in allowed}
    return [
        f"{module} imports {imported}"
        for imported in imported_modules(source, package)
        if _within(imported, FORBIDDEN[layer]) and not _within(imported, allowed) and imported not in parents
    ]


@pytest.mark.parametrize("node", ["answer", "retrieve", "judge", "requery", "agent", "tools"])
def test_nodes_are_typed_with_the_graph_state_and_context(node: str) -> None:
    import importlib
    import typing

    from langgraph.runtime import Runtime

    from zhrag.graph.state import GraphState

    module = importlib.import_module(f"zhrag.nodes.{'agent' if node == 'tools' else node}")
    hints = typing.get_type_hints(getattr(module, node))
    assert hints == {"state": GraphState, "runtime": Runtime[Context], "return": dict[str, Any]}


def test_import_rules_let_nodes_import_only_the_graphs_state_and_context() -> None:
    source = (
        "from zhrag.graph.state import GraphState\nfrom zhrag.graph.context import Context\n"
        "from zhrag.graph import context\nfrom zhrag.graph import builder\nimport zhrag.graph.served\n"
    )
    assert import_violations("zhrag.nodes.judge", source) == [
        "zhrag.nodes.judge imports zhrag.graph.builder", "zhrag.nodes.judge imports zhrag.graph.served"
    ]
    for module in ("zhrag.graph.context", "zhrag.graph.state"):
        assert import_violations(module, "from zhrag.nodes.common import timed\nimport zhrag.graph.builder\n") == [
            f"{module} imports zhrag.nodes.common", f"{module} imports zhrag.nodes.common.timed",
            f"{module} imports zhrag.graph.builder",
        ]
    assert import_violations("zhrag.graph.builder", "from zhrag.nodes.answer import answer\n") == []
    assert import_violations("zhrag.graph.builder", "from zhrag.evaluation import scorers\n") == [
        "zhrag.graph.builder imports zhrag.evaluation", "zhrag.graph.builder imports zhrag.evaluation.scorers"
    ]


def test_imports_flow_one_way() -> None:
    violations = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        module = module_name(path)
        if module == "zhrag.cli" or module.startswith("zhrag.cli."):
            continue
        source = path.read_text(encoding="utf-8")
        violations.extend(import_violations(module, source, is_package=path.name == "__init__.py"))
    assert violations == []




def test_a2_keeps_passages_above_the_threshold_ordered_by_judge_score(
    knowledge: Callable[..., FakeKnowledge], scoring_model: Callable[..., tuple[str, Any]]
) -> None:
    knowledge(lambda q: [P_CITY, P_RIVER, P_LAKE])
    scores = {"乙省北部": 0.7, "丙河": 0.95, "白湖": 0.2}
    name, llm = scoring_model(lambda text: next(v for marker, v in scores.items() if marker in text))
    order, state = run(build_graph("a2"), Context(a2_arbiter="judge", model=name, judge_threshold=0.6))
    assert order == ["retrieve", "judge", "answer", "arbitrate"]
    assert [p["id"] for p in state["contexts"]] == ["kb#2", "kb#1"]  # highest judge score first
    assert [(j["id"], j["score"], j["relevant"]) for j in state["judgements"]] == [
        ("kb#1", 0.7, True), ("kb#2", 0.95, True), ("kb#3", 0.2, False)
    ]
    assert state["best_rejected"] == P_LAKE
    assert state["answer"] == "乙省" and state["answer_confidence"] == pytest.approx(0.9)
    assert "[1] 丙河全长" in llm.scored[-1] and "[2] 甲城位于" in llm.scored[-1]


@pytest.mark.parametrize(("fallback", "expected"), [("closed_book", []), ("top_passage", ["kb#1"])])
def test_a2_fallback_when_nothing_is_kept(
    knowledge: Callable[..., FakeKnowledge], scoring_model: Callable[..., tuple[str, Any]], fallback: str,
    expected: list[str],
) -> None:
    rounds = iter([[P_RIVER, P_LAKE], [P_CITY]])
    knowledge(lambda q: next(rounds))
    scores = {"乙省北部": 0.4, "丙河": 0.3, "白湖": 0.1}
    name, llm = scoring_model(lambda text: next(v for marker, v in scores.items() if marker in text))
    order, state = run(build_graph("a2"), Context(a2_arbiter="judge", model=name, max_requeries=1, a2_fallback=fallback))
    assert order == ["retrieve", "judge", "requery", "retrieve", "judge", "answer", "arbitrate"]
    assert state["relevant"] == []
    assert [p["id"] for p in state["contexts"]] == expected
    assert state["best_rejected"] == P_CITY  # the best rejected passage over both rounds
    assert ("资料" in llm.scored[-1]) is bool(expected)


def test_the_answer_node_abstains_below_the_confidence_threshold(scoring_model: Callable[..., tuple[str, Any]]) -> None:
    name, _ = scoring_model(lambda text: 1.0, confidence=0.3)
    _, state = run(build_graph("a0"), Context(model=name, abstain_below=0.5))
    assert (state["answer"], state["abstained"], state["answer_confidence"]) == ("不知道", True, 0.3)
    _, state = run(build_graph("a0"), Context(model=name))
    assert (state["answer"], state["abstained"]) == ("乙省", False)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("judge_threshold", 1.5, "judge_threshold must be between 0 and 1"),
        ("abstain_below", -0.1, "abstain_below must be between 0 and 1"),
        ("a2_fallback", "guess", "unknown a2_fallback 'guess'"),
        ("engine", "vllm", "unknown engine 'vllm'"),
        ("max_new_tokens", 100_000, "max_new_tokens must be between 1 and 512"),
    ],
)
def test_new_context_fields_are_validated(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Context(**{field: value})


@pytest.mark.parametrize("variant", ["a0", "a1", "a2"])
def test_invoking_without_a_context_uses_the_defaults(
    variant: str, knowledge: Callable[..., FakeKnowledge], scoring_model: Callable[..., tuple[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zhrag import settings
    from zhrag.models import register_llm

    kb = knowledge(lambda q: [P_CITY])
    _, llm = scoring_model(lambda text: 0.99)
    register_llm(settings.DEFAULT_LLM, llm)  # a registered name takes precedence over the packaged alias
    try:
        seen: list[Any] = []
        graph = build_graph(variant, terminal_nodes=[("probe", lambda state, runtime: seen.append(runtime.context) or {})])
        state = graph.invoke({"question": QUESTION})
    finally:
        from zhrag.models import unregister_llm

        unregister_llm(settings.DEFAULT_LLM)
    assert state["answer"] == "乙省"
    assert seen == [Context()]
    if variant != "a0":
        assert kb.calls == [(QUESTION, Context().top_k)]
        assert kb.configs[0].collection == settings.default_collection(settings.DEFAULT_EMBEDDER)


def test_the_longest_a2_loop_fits_the_graphs_own_recursion_limit(
    knowledge: Callable[..., FakeKnowledge], scoring_model: Callable[..., tuple[str, Any]]
) -> None:
    from zhrag.graph.context import MAX_REQUERIES_LIMIT

    counter = iter(range(1000))
    knowledge(lambda q: [Passage(id=f"kb#{next(counter)}", title="", text="无关的资料。", score=0.1) for _ in range(3)])
    name, _ = scoring_model(lambda text: 0.0)
    graph = build_graph("a2", terminal_nodes=[("probe", lambda state: {})])
    order, state = run(graph, Context(model=name, max_requeries=MAX_REQUERIES_LIMIT))
    assert state["requeries"] == MAX_REQUERIES_LIMIT and order.count("judge") == MAX_REQUERIES_LIMIT + 1
    assert len(order) <= graph.config["recursion_limit"] < 100
    with pytest.raises(ConfigError, match="max_requeries must be between 0 and 10"):
        Context(max_requeries=MAX_REQUERIES_LIMIT + 1)


def agent_reply(turns: list[str], answer: str = "乙省") -> Callable[[str], str]:
    """Scripted model for A3: the agent's turns in order (prompts with the tool list), ``answer`` for the answer node."""
    script = iter(turns)

    def reply(text: str) -> str:
        if "<tools>" in text:
            return next(script)
        return answer

    return reply


FIND_CALL = '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "%s"}}\n</tool_call>'


def test_a3_agent_searches_reads_the_result_and_the_answer_node_answers(
    knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM
) -> None:
    kb = knowledge(lambda q: [P_CITY, P_RIVER] if "甲城" in q else [P_LAKE])
    model, chat = fake_llm(agent_reply([FIND_CALL % "甲城 省份", "乙省"]))
    order, state = run(build_graph("a3"), Context(model=model, top_k=2))
    assert order == ["agent", "tools", "agent", "answer"]
    assert kb.calls == [("甲城 省份", 2)]
    assert state["tool_calls"] == [{"round": 1, "name": "qdrant-find", "arguments": {"query": "甲城 省份"},
                                    "well_formed": True, "passages": ["kb#1", "kb#2"]}]
    assert state["tool_rounds"] == 1 and state["queries"] == ["甲城 省份"] and state["agent_reply"] == "乙省"
    # the evidence window is chosen for the question, not for the agent's query
    assert state["contexts"] == [{**P_CITY, "evidence": P_CITY["text"]}, {**P_RIVER, "evidence": P_RIVER["text"]}]
    assert state["answer"] == "乙省"
    assert state["knowledge"] == {"source": "passages", "passages": ["kb#1", "kb#2"],
                                  "reason": "the agent searched 1 time(s) and found 2 passage(s)"}
    first, second, answer_prompt = chat.prompts
    assert "<tools>" in first and '"name": "qdrant-find"' in first and "top_k" not in first  # only the query
    assert "<tool_response>\n[1] 甲城：甲城位于乙省北部" in second
    assert "[1] 甲城位于乙省北部" in answer_prompt and "<tools>" not in answer_prompt


@pytest.mark.parametrize("max_tool_rounds", [0, 1, 3])
def test_a3_tool_rounds_are_bounded(
    knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM, max_tool_rounds: int
) -> None:
    kb = knowledge(lambda q: [P_LAKE])
    model, chat = fake_llm(agent_reply([FIND_CALL % f"查询{n}" for n in range(10)]))
    order, state = run(build_graph("a3"), Context(model=model, max_tool_rounds=max_tool_rounds))
    assert len(kb.calls) == max_tool_rounds == state.get("tool_rounds", 0)
    assert order == ["agent", "tools"] * max_tool_rounds + ["agent", "answer"]
    assert len(chat.prompts) == max_tool_rounds + 1  # the last agent turn asks no model: the budget is spent


def test_a3_bad_calls_are_answered_with_an_error_and_recovered_calls_are_marked(
    knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM
) -> None:
    kb = knowledge(lambda q: [P_CITY])
    turns = [
        '<tool_call>\n{"name": "web-search", "arguments": {"query": "甲城"}}\n</tool_call>',
        '<tool_call>\n{"name": "qdrant-find", "arguments": {}}\n</tool_call>',
        '```json\n{"name": "qdrant-find", "arguments": {"query": "甲城"}}\n```',
        "乙省",
    ]
    model, chat = fake_llm(agent_reply(turns))
    _, state = run(build_graph("a3"), Context(model=model, max_tool_rounds=3))
    assert [call.get("error") for call in state["tool_calls"]] == ["unknown tool 'web-search'", "no query", None]
    assert [call["well_formed"] for call in state["tool_calls"]] == [True, True, False]
    assert kb.calls == [("甲城", 3)]
    assert "错误：没有工具 web-search" in chat.prompts[1] and "需要参数 query" in chat.prompts[2]


def test_a3_shows_each_passage_by_its_window_for_the_question(
    knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM
) -> None:
    long_text = "。".join([f"丙河第{n}段与本题无关的描述" for n in range(20)] + ["甲城位于乙省北部"]) + "。"
    passage = Passage(id="kb#9", title="甲城", text=long_text, score=1.0, evidence="丙河第0段与本题无关的描述。")
    knowledge(lambda q: [passage])
    model, chat = fake_llm(agent_reply([FIND_CALL % "甲城 作者", "乙省"]))
    _, state = run(build_graph("a3"), Context(model=model, max_tool_rounds=2))
    assert state["contexts"][0]["evidence"].endswith("甲城位于乙省北部。")
    _, agent_read, answer_read = chat.prompts
    assert "甲城位于乙省北部" in agent_read and "甲城位于乙省北部" in answer_read


# --- which knowledge the answer used ----------------------------------------------------------------------


def test_every_variant_records_which_knowledge_the_answer_used_and_why(
    knowledge: Callable[..., FakeKnowledge], fake_llm: FakeLLM
) -> None:
    knowledge(lambda q: [P_CITY, P_RIVER])
    answer_model, _ = fake_llm(lambda text: "乙省")
    _, a0 = run(build_graph("a0"), Context(model=answer_model))
    assert a0["knowledge"] == {"source": "closed_book", "passages": [],
                               "reason": "no retrieval in this variant: the model answers alone"}
    _, a1 = run(build_graph("a1"), Context(model=answer_model, top_k=2))
    assert a1["knowledge"]["source"] == "passages" and a1["knowledge"]["passages"] == ["kb#1", "kb#2"]
    assert "retrieval returned 2 passage(s)" in a1["knowledge"]["reason"]

    judge_model, _ = fake_llm(judge_reply(lambda text: "是的" if "乙省北部" in text else "不是"))
    _, kept = run(build_graph("a2"), Context(a2_arbiter="judge", model=answer_model, judge_model=judge_model, top_k=2))
    assert kept["knowledge"]["source"] == "passages" and kept["knowledge"]["passages"] == ["kb#1"]
    assert kept["knowledge"]["reason"].startswith("the judge kept 1 of 2 passages in 1 round(s)")

    rejecting, _ = fake_llm(judge_reply(lambda text: "不是"))
    for fallback, source, passages in [("closed_book", "closed_book", []), ("top_passage", "top_passage", ["kb#1"])]:
        context = Context(a2_arbiter="judge", model=answer_model, judge_model=rejecting, top_k=2, max_requeries=0, a2_fallback=fallback)
        _, state = run(build_graph("a2"), context)
        assert (state["knowledge"]["source"], state["knowledge"]["passages"]) == (source, passages)
        assert "kept none of 2 passages in 1 round(s)" in state["knowledge"]["reason"]
        assert state["knowledge"]["reason"].endswith(f"a2_fallback={fallback}")
