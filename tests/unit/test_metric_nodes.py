"""Metric nodes wired into the graph, with fake answer / judge models and a fake knowledge client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import FakeLLM

from zhrag.errors import ConfigError
from zhrag.evaluation.eval_settings import EvalSettings
from zhrag.evaluation.official_grader import JudgeError
from zhrag.evaluation.scorers import metric_terminal_nodes
from zhrag.graph.builder import build_graph
from zhrag.graph.context import Context
from zhrag.kb.passage import Passage
from zhrag.nodes import retrieve
from zhrag.prompts.grader import GRADER_SYSTEM_PROMPT
from zhrag.prompts.judge import CHAT_JUDGE_SYSTEM

QUESTION = "甲城位于哪个省？"
GOLD = "乙省"
P_CITY = Passage(id="kb#1", title="甲城", text="甲城位于乙省北部，是乙省第二大城市。", score=0.9)
P_RIVER = Passage(id="kb#2", title="丙河", text="丙河全长三百公里，流经丁县。", score=0.5)

# Markers of the ragas 0.4.3 prompts (instructions of its statement / NLI / correctness prompts).
STATEMENTS_PROMPT = "Break down each sentence"
NLI_PROMPT = "judge the faithfulness of a series of statements"
CORRECTNESS_PROMPT = "classify them in one of the following categories"




@pytest.fixture
def knowledge(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[Passage]], None]:
    """``knowledge(passages)``: the retrieve node's knowledge client returns ``passages`` for any query."""

    class FakeKnowledge:
        def __init__(self, passages: list[Passage]) -> None:
            self.passages = passages

        def find(self, query: str, top_k: int) -> list[Passage]:
            return self.passages[:top_k]

    def install(passages: list[Passage]) -> None:
        monkeypatch.setattr(retrieve, "get_knowledge_client", lambda config: FakeKnowledge(passages))

    return install


def run(
    variant: str, metrics: list[str], context: Context, gold: str | None = GOLD, evaluation: EvalSettings | None = None
) -> dict[str, Any]:
    graph = build_graph(variant, terminal_nodes=metric_terminal_nodes(metrics, evaluation))
    payload = {"question": QUESTION} if gold is None else {"question": QUESTION, "gold_answer": gold}
    return graph.invoke(payload, context=context)


# --- wiring -----------------------------------------------------------------------------------


def test_metrics_run_in_order_after_answer_and_are_timed(knowledge: Callable, fake_llm: FakeLLM) -> None:
    knowledge([P_CITY])
    answer_model, _ = fake_llm(lambda text: GOLD)
    graph = build_graph("a1", terminal_nodes=metric_terminal_nodes(["retrieval", "grade"]))
    edges = {(e.source, e.target) for e in graph.get_graph().edges}
    assert {("answer", "retrieval"), ("retrieval", "grade"), ("grade", "__end__")} <= edges
    order = [node for update in graph.stream({"question": QUESTION, "gold_answer": GOLD},
                                             context=Context(model=answer_model), stream_mode="updates")
             for node in update]
    assert order == ["retrieve", "answer", "retrieval", "grade"]
    state = run("a1", ["retrieval", "grade"], Context(model=answer_model))
    assert set(state["timings_ms"]) == {"retrieve", "answer", "retrieval", "grade"}


def test_unknown_metric_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"'bleu'.*grade, faithfulness, answer_correctness, strings, retrieval"):
        build_graph("a0", terminal_nodes=metric_terminal_nodes(["grade", "bleu"]))
    with pytest.raises(ConfigError, match="twice"):
        build_graph("a0", terminal_nodes=metric_terminal_nodes(["grade", "grade"]))


def test_metric_without_gold_answer_is_a_config_error(fake_llm: FakeLLM) -> None:
    answer_model, _ = fake_llm(lambda text: GOLD)
    with pytest.raises(ConfigError, match="'grade' needs a non-empty gold_answer"):
        run("a0", ["grade"], Context(model=answer_model), gold=None)


# --- grade ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "grade"), [("乙省", "CORRECT"), ("答案：丙省。", "INCORRECT"), ("不知道", "NOT_ATTEMPTED")]
)
def test_rule_grade(fake_llm: FakeLLM, reply: str, grade: str) -> None:
    answer_model, _ = fake_llm(lambda text: reply)
    state = run("a0", ["grade"], Context(model=answer_model))
    assert state["scores"] == {"grade": grade, "grader": "rules"}


def test_official_grade_asks_the_eval_model_with_the_official_prompt(fake_llm: FakeLLM) -> None:
    answer_model, answer_chat = fake_llm(lambda text: "乙省")
    eval_model, eval_chat = fake_llm(lambda text: "B")  # the judge disagrees with the rule grader
    evaluation = EvalSettings(grader="official", eval_model=eval_model)
    state = run("a0", ["grade"], Context(model=answer_model), evaluation=evaluation)
    assert state["scores"] == {"grade": "INCORRECT", "grader": "official", "grade_raw": "B"}
    [prompt] = eval_chat.prompts
    assert GRADER_SYSTEM_PROMPT in prompt and f"正确答案: {GOLD}" in prompt and "预测答案: 乙省" in prompt
    assert len(answer_chat.prompts) == 1  # the answer model only answered


# --- retrieval recall -------------------------------------------------------------------------


def test_retrieval_recall_per_variant(knowledge: Callable, fake_llm: FakeLLM) -> None:
    knowledge([P_RIVER, P_CITY])
    answer_model, _ = fake_llm(lambda text: "乙省")
    judge_model, _ = fake_llm(lambda text: "否" if CHAT_JUDGE_SYSTEM in text else "甲城")
    context = Context(model=answer_model, judge_model=judge_model, max_requeries=0)
    a0, a1, a2 = (run(variant, ["retrieval"], context)["scores"] for variant in ("a0", "a1", "a2"))
    assert a0 == {"recall_retrieved": None, "recall_kept": None}
    assert a1 == {"recall_retrieved": True, "recall_kept": True}
    assert a2 == {"recall_retrieved": True, "recall_kept": False}  # the judge threw the gold passage away
    knowledge([P_RIVER])
    assert run("a1", ["retrieval"], context)["scores"] == {"recall_retrieved": False, "recall_kept": False}


# --- RAGAS ------------------------------------------------------------------------------------


def ragas_judge(statements: list[str], verdicts: list[int]) -> Callable[[str], str]:
    """A judge that answers ragas's statement and NLI prompts with valid JSON."""

    def reply(text: str) -> str:
        if STATEMENTS_PROMPT in text:
            return json.dumps({"statements": statements}, ensure_ascii=False)
        if NLI_PROMPT in text:
            rows = [{"statement": s, "reason": "见资料", "verdict": v} for s, v in zip(statements, verdicts, strict=True)]
            return "```json\n" + json.dumps({"statements": rows}, ensure_ascii=False) + "\n```"
        raise AssertionError(f"unexpected prompt: {text[:200]}")

    return reply


@pytest.fixture
def ragas() -> None:
    pytest.importorskip("ragas", reason="the RAGAS metrics need ragas==0.4.3")


@pytest.mark.usefixtures("ragas")
def test_faithfulness_from_valid_judge_output(knowledge: Callable, fake_llm: FakeLLM) -> None:
    knowledge([P_CITY])
    answer_model, _ = fake_llm(lambda text: "乙省")
    eval_model, eval_chat = fake_llm(ragas_judge(["甲城位于乙省。", "甲城是乙省省会。"], [1, 0]))
    evaluation = EvalSettings(eval_model=eval_model)
    state = run("a1", ["grade", "faithfulness"], Context(model=answer_model), evaluation=evaluation)
    assert state["scores"]["faithfulness"] == pytest.approx(0.5)
    assert state["scores"]["faithfulness_reason"] is None
    nli_prompt = next(p for p in eval_chat.prompts if NLI_PROMPT in p)
    assert P_CITY["text"] in nli_prompt  # the passages given to the answer node are the context judged


@pytest.mark.usefixtures("ragas")
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (lambda text: "这不是JSON", "RagasOutputParserException"),
        (ragas_judge([], []), "undefined"),  # no statements: ragas returns NaN
    ],
)
def test_faithfulness_failure_is_recorded_and_the_run_goes_on(
    knowledge: Callable, fake_llm: FakeLLM, reply: Callable[[str], str], reason: str
) -> None:
    knowledge([P_CITY])
    answer_model, _ = fake_llm(lambda text: "乙省")
    eval_model, _ = fake_llm(reply)
    evaluation = EvalSettings(eval_model=eval_model)
    state = run("a1", ["faithfulness", "grade", "retrieval"], Context(model=answer_model), evaluation=evaluation)
    assert state["scores"]["faithfulness"] is None
    assert reason in state["scores"]["faithfulness_reason"]
    assert state["scores"]["grade"] == "CORRECT" and state["scores"]["recall_kept"] is True


@pytest.mark.usefixtures("ragas")
def test_judge_exception_is_recorded(knowledge: Callable, fake_llm: FakeLLM) -> None:
    knowledge([P_CITY])
    answer_model, _ = fake_llm(lambda text: "乙省")

    def broken(text: str) -> str:
        raise RuntimeError("judge crashed")

    eval_model, _ = fake_llm(broken)
    evaluation = EvalSettings(eval_model=eval_model)
    state = run("a1", ["faithfulness"], Context(model=answer_model), evaluation=evaluation)
    assert state["scores"] == {"faithfulness": None, "faithfulness_reason": "RuntimeError: judge crashed"}


@pytest.mark.usefixtures("ragas")
def test_faithfulness_without_context_is_not_applicable(fake_llm: FakeLLM) -> None:
    answer_model, _ = fake_llm(lambda text: "乙省")
    eval_model, eval_chat = fake_llm(lambda text: "{}")
    evaluation = EvalSettings(eval_model=eval_model)
    state = run("a0", ["faithfulness"], Context(model=answer_model), evaluation=evaluation)
    assert state["scores"] == {"faithfulness": None, "faithfulness_reason": "no context"}
    assert eval_chat.prompts == []


@pytest.mark.usefixtures("ragas")
def test_answer_correctness_combines_statement_f1_and_similarity(
    monkeypatch: pytest.MonkeyPatch, fake_llm: FakeLLM
) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from zhrag.evaluation import ragas_metrics, scorers

    embedder = ragas_metrics.ragas_embeddings(DeterministicFakeEmbedding(size=16))
    monkeypatch.setattr(scorers, "ragas_embedder", lambda context, evaluation: embedder)

    def reply(text: str) -> str:
        if STATEMENTS_PROMPT in text:
            return json.dumps({"statements": ["甲城位于乙省。"]}, ensure_ascii=False)
        assert CORRECTNESS_PROMPT in text
        tp = [{"statement": "甲城位于乙省。", "reason": "一致"}]
        fp = [{"statement": "甲城是省会。", "reason": "标准答案未提及"}]
        return json.dumps({"TP": tp, "FP": fp, "FN": []}, ensure_ascii=False)

    answer_model, _ = fake_llm(lambda text: GOLD)  # same text as the gold answer: similarity 1
    eval_model, _ = fake_llm(reply)
    evaluation = EvalSettings(eval_model=eval_model)
    state = run("a0", ["answer_correctness"], Context(model=answer_model), evaluation=evaluation)
    # F1 with TP=1, FP=1, FN=0 is 2/3; score = 0.75 * 2/3 + 0.25 * 1
    assert state["scores"]["answer_correctness"] == pytest.approx(0.75)
    assert state["scores"]["answer_correctness_reason"] is None


# --- OpenAI-compatible endpoint judge ---------------------------------------------------------


@pytest.fixture
def judge_endpoint() -> Iterator[tuple[str, list[str]]]:
    """A local OpenAI-compatible stub serving model "stub": (base URL, prompts it received)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    prompts: list[str] = []
    faithful = ragas_judge(["甲城位于乙省。"], [1])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self.reply({"object": "list", "data": [{"id": "stub", "object": "model"}]})

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = "\n".join(str(m["content"]) for m in request["messages"])
            prompts.append(text)
            content = "A" if GRADER_SYSTEM_PROMPT in text else faithful(text)
            message = {"role": "assistant", "content": content}
            self.reply({
                "id": "c", "object": "chat.completion", "created": 0, "model": request["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", prompts
    server.shutdown()
    server.server_close()


@pytest.mark.usefixtures("ragas")
def test_endpoint_judge_grades_and_scores_several_answers(
    knowledge: Callable, fake_llm: FakeLLM, judge_endpoint: tuple[str, list[str]]
) -> None:
    from zhrag.evaluation.judges import check_evaluation_setup

    base_url, prompts = judge_endpoint
    knowledge([P_CITY])
    answer_model, _ = fake_llm(lambda text: "丙省")  # wrong by the rules; the judge says A
    context = Context(model=answer_model)
    evaluation = EvalSettings(grader="official", eval_base_url=base_url, eval_api_model="stub")
    check_evaluation_setup(context, evaluation, ["grade", "faithfulness"])
    for _ in range(2):  # a second answer reuses the judge's clients
        scores = run("a1", ["grade", "faithfulness"], context, evaluation=evaluation)["scores"]
        assert scores == {
            "grade": "CORRECT", "grader": "official", "grade_raw": "A",
            "faithfulness": 1.0, "faithfulness_reason": None,
        }
    assert sum(GRADER_SYSTEM_PROMPT in prompt for prompt in prompts) == 2
    assert sum(NLI_PROMPT in prompt for prompt in prompts) == 2
    wrong_model = EvalSettings(grader="official", eval_base_url=base_url, eval_api_model="other")
    with pytest.raises(JudgeError, match="does not serve model 'other'"):
        check_evaluation_setup(context, wrong_model, ["grade"])


@pytest.mark.parametrize(
    ("reply", "presence", "similarity"),
    [("乙省", 1.0, 1.0), ("位于乙省北部", 1.0, 1 - 4 / 6), ("丙省", 0.0, 0.5)],
)
def test_string_metrics_need_no_judge(fake_llm: FakeLLM, reply: str, presence: float, similarity: float) -> None:
    answer_model, _ = fake_llm(lambda text: reply)
    state = run("a0", ["strings"], Context(model=answer_model))
    assert state["scores"]["string_presence"] == presence
    assert state["scores"]["string_similarity"] == pytest.approx(similarity)
