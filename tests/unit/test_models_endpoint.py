"""Answer and judge models served by an OpenAI-compatible endpoint, against a stub HTTP server in the test."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from zhrag.cli import main
from zhrag.errors import ConfigError, ModelEndpointError, ModelLoadError
from zhrag.evaluation.datasets import Question
from zhrag.evaluation.eval_settings import EvalSettings
from zhrag.evaluation.judges import eval_endpoint
from zhrag.evaluation.report import RESULTS_FILE, read_results
from zhrag.evaluation.runner import run_evaluation
from zhrag.graph.builder import build_graph
from zhrag.graph.context import Context
from zhrag.models import EndpointLLM, load_endpoint_llm
from zhrag.nodes import common
from zhrag.prompts.answer import CHAT_CLOSED_BOOK_SYSTEM

QUESTION = "甲城位于哪个省？"
#: The longest a held stub reply waits for company (a guard against a hang, not a speed requirement).
HOLD_GUARD_S = 60.0


class StubServer:
    """A tiny OpenAI-compatible server: ``/v1/models`` lists ``models``, chat replies come from ``reply(body)``.

    Each chat reply waits ``delay_s``; ``max_in_flight`` records the most chat requests served at once. With
    ``hold_until`` N, chat replies wait until N requests have been in flight at once (so a client that keeps
    several in flight shows it however busy the machine is); a client that never does releases them after
    ``HOLD_GUARD_S``, once.
    """

    def __init__(
        self, models: list[str], reply: Callable[[dict[str, Any]], str], status: int = 200, delay_s: float = 0.0,
        hold_until: int = 0,
    ) -> None:
        self.models = models
        self.reply = reply
        self.status = status
        self.delay_s = delay_s
        self.hold_until = hold_until
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._count = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stub.requests.append(("GET", self.path, None))
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(("POST", self.path, body))
                with stub._count:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    stub._count.notify_all()
                    held = stub._count.wait_for(lambda: stub.max_in_flight >= stub.hold_until, HOLD_GUARD_S)
                    if not held:
                        stub.hold_until = 0  # the client never had that many in flight: stop holding
                time.sleep(stub.delay_s)
                with stub._count:
                    stub.in_flight -= 1
                if stub.status != 200:
                    self._send(stub.status, {"error": {"message": "model crashed", "type": "server_error"}})
                    return
                self._send(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": stub.reply(body)}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def chat_bodies(self) -> list[dict[str, Any]]:
        """Bodies of the chat completion requests received so far."""
        return [body for method, path, body in self.requests if method == "POST" and path == "/v1/chat/completions"]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def stub() -> Iterator[Callable[..., StubServer]]:
    """``stub(models, reply, status=200, delay_s=0)`` starts a stub endpoint, stopped after the test."""
    servers: list[StubServer] = []

    def start(models: list[str], reply: Callable[[dict[str, Any]], str], **options: Any) -> StubServer:
        servers.append(StubServer(models, reply, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def last_user_text(body: dict[str, Any]) -> str:
    return body["messages"][-1]["content"]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_endpoint_model_sends_chat_messages_greedily_with_the_budget(stub: Callable[..., StubServer]) -> None:
    server = stub(["served-a"], lambda body: f"回答：{last_user_text(body)}\n第二行")
    llm = load_endpoint_llm(server.url + "/", "served-a")
    assert isinstance(llm, EndpointLLM) and llm.is_chat
    assert llm.load_info["kind"] == "endpoint" and llm.load_info["source"] == server.url
    conversation = [SystemMessage("只回答答案。"), HumanMessage("问题一")]
    assert llm.generate([conversation, "问题二"], max_new_tokens=7) == ["回答：问题一", "回答：问题二"]
    bodies = sorted(server.chat_bodies(), key=last_user_text)
    assert [b["messages"] for b in bodies] == [
        [{"role": "system", "content": "只回答答案。"}, {"role": "user", "content": "问题一"}],
        [{"role": "user", "content": "问题二"}],
    ]
    for body in bodies:
        assert body["model"] == "served-a"
        assert body["max_tokens"] == 7
        assert body["temperature"] == 0
        assert body["stop"] == ["\n"]
    assert load_endpoint_llm(server.url, "served-a") is llm  # one client per endpoint and model


def test_endpoint_tool_turns_are_hermes_text_parsed_back(stub: Callable[..., StubServer]) -> None:
    call = '<tool_call>\n{"name": "qdrant-find", "arguments": {"query": "甲城"}}\n</tool_call>'
    server = stub(["served-tools"], lambda body: call)
    llm = load_endpoint_llm(server.url, "served-tools")
    tool = {"type": "function", "function": {"name": "qdrant-find", "parameters": {}}}
    reply = llm.call_tools([{"role": "system", "content": "S"}, {"role": "user", "content": QUESTION}], [tool])
    [found] = reply.calls
    assert (found.name, found.arguments, found.well_formed) == ("qdrant-find", {"query": "甲城"}, True)
    [body] = server.chat_bodies()
    system, user = body["messages"]
    assert system["role"] == "system" and "<tools>" in system["content"] and user["content"] == QUESTION
    assert "tools" not in body  # the tools travel in the messages, in the Hermes format


def test_unreachable_endpoint_is_one_error_naming_the_url() -> None:
    url = closed_port_url()
    with pytest.raises(ModelEndpointError, match=rf"model endpoint {url} unreachable") as caught:
        load_endpoint_llm(url, "any-model")
    assert isinstance(caught.value, ModelLoadError)
    assert "\n" not in str(caught.value)


def test_endpoint_that_does_not_serve_the_model_lists_what_it_serves(stub: Callable[..., StubServer]) -> None:
    server = stub(["served-a", "served-b"], lambda body: "x")
    with pytest.raises(ModelEndpointError, match=r"does not serve model 'other'.*served-a"):
        load_endpoint_llm(server.url, "other")


def test_server_errors_during_generation_become_one_line_errors(stub: Callable[..., StubServer]) -> None:
    server = stub(["broken"], lambda body: "x", status=500)
    llm = load_endpoint_llm(server.url, "broken")
    with pytest.raises(ModelEndpointError, match=rf"model endpoint {server.url} answered HTTP 500"):
        llm.generate(["问题"])


@pytest.mark.parametrize(("url", "model", "message"), [("localhost:8000/v1", "m", "must start with http"),
                                                        ("http://localhost:8000/v1", " ", "no model name")])
def test_bad_endpoint_arguments_are_config_errors(url: str, model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_endpoint_llm(url, model)


def test_adapters_do_not_apply_to_served_models() -> None:
    with pytest.raises(ConfigError, match="answer_adapter cannot be applied"):
        Context(model="m", model_base_url="http://h/v1", answer_adapter="adapters/a")
    with pytest.raises(ConfigError, match="judge_adapter cannot be applied"):
        Context(model="m", model_base_url="http://h/v1", judge_adapter="adapters/j")
    with pytest.raises(ConfigError, match="judge_adapter cannot be applied"):
        Context(judge_model="j", judge_base_url="http://j/v1", judge_adapter="adapters/j")
    Context(model="m", model_base_url="http://h/v1", judge_model="local-judge", judge_adapter="adapters/j")


@pytest.mark.parametrize(
    ("fields", "endpoint"),
    [
        ({}, None),
        ({"model_base_url": "http://a/v1"}, "http://a/v1"),
        ({"model_base_url": "http://a/v1", "judge_model": "local"}, None),
        ({"model_base_url": "http://a/v1", "judge_base_url": "http://j/v1"}, "http://j/v1"),
        ({"judge_model": "served-j", "judge_base_url": "http://j/v1"}, "http://j/v1"),
    ],
)
def test_the_judge_uses_its_own_endpoint_or_inherits_the_answer_one(fields: dict[str, str], endpoint: str | None) -> None:
    assert Context(**fields).judge_endpoint == endpoint


@pytest.mark.parametrize(
    ("fields", "evaluation", "endpoint"),
    [
        ({}, {}, None),
        ({"model": "served-a", "model_base_url": "http://a/v1"}, {}, ("http://a/v1", "served-a")),
        ({"model": "served-a", "model_base_url": "http://a/v1"}, {"eval_model": "local"}, None),
        ({"model_base_url": "http://a/v1"}, {"eval_base_url": "http://e/v1", "eval_api_model": "e"}, ("http://e/v1", "e")),
    ],
)
def test_the_evaluation_judge_defaults_to_the_answer_endpoint(
    fields: dict[str, str], evaluation: dict[str, str], endpoint: Any
) -> None:
    assert eval_endpoint(Context(**fields), EvalSettings(**evaluation)) == endpoint


def test_answer_and_judge_nodes_use_the_endpoints(stub: Callable[..., StubServer]) -> None:
    answers = stub(["served-a"], lambda body: "乙省")
    judges = stub(["served-j"], lambda body: "相关")
    context = Context(model="served-a", model_base_url=answers.url, judge_model="served-j", judge_base_url=judges.url)
    assert common.answer_llm(context) is load_endpoint_llm(answers.url, "served-a")
    assert common.judge_llm(context) is load_endpoint_llm(judges.url, "served-j")


def test_a0_graph_answers_through_the_endpoint_with_chat_messages(stub: Callable[..., StubServer]) -> None:
    server = stub(["served-a"], lambda body: "答案：乙省。")
    state = build_graph("a0").invoke({"question": QUESTION}, context=Context(model="served-a", model_base_url=server.url))
    assert state["answer"] == "乙省"
    [body] = server.chat_bodies()
    assert body["messages"][0] == {"role": "system", "content": CHAT_CLOSED_BOOK_SYSTEM}
    assert body["messages"][-1] == {"role": "user", "content": QUESTION}
    assert [m["role"] for m in body["messages"][1:-1]] == ["user", "assistant"] * 3  # the example turns
    assert body["logprobs"] is True  # the answer's confidence is asked for


def test_evaluation_sends_questions_to_the_endpoint_concurrently(stub: Callable[..., StubServer], tmp_path: Path) -> None:
    questions = [Question(id=f"q{n}", question=f"第{n}号城位于哪个省？", answer=f"{n}号省") for n in range(1, 9)]
    server = stub(["served-a"], lambda body: last_user_text(body).replace("第", "").replace("城位于哪个省？", "省"),
                  hold_until=2)
    context = Context(model="served-a", model_base_url=server.url)
    run_evaluation(["a0"], questions, tmp_path / "run", context=context, metrics=["grade"], progress=False,
                   kb_sources=[])
    records = read_results(tmp_path / "run" / RESULTS_FILE)
    assert sorted(r["id"] for r in records) == [q.id for q in questions]
    assert all(r["grade"] == "CORRECT" for r in records)
    assert len(server.chat_bodies()) == len(questions)
    assert server.max_in_flight > 1  # the runner keeps several requests in flight; the server batches them


def test_cli_ask_through_an_endpoint(stub: Callable[..., StubServer], capsys: pytest.CaptureFixture[str]) -> None:
    server = stub(["served-a"], lambda body: "乙省")
    argv = ["ask", "--variant", "a0", "--json", "--model-base-url", server.url, "--model", "served-a", QUESTION]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["answer"] == "乙省"
    assert {"model": "served-a", "kind": "endpoint", "source": server.url} in [
        {key: info[key] for key in ("model", "kind", "source")} for info in record["models"]
    ]
    assert len(server.chat_bodies()) == 1


def test_cli_reports_an_unreachable_endpoint_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = closed_port_url()
    assert main(["ask", "--variant", "a0", "--model-base-url", url, "--model", "m", QUESTION]) == 2
    err = capsys.readouterr().err
    assert f"model endpoint {url} unreachable" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
