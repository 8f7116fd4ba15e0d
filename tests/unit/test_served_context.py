"""The trust boundary of served graphs (langgraph.json): what a remote caller's run context may set."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from zhrag.errors import ConfigError, RunContextError
from zhrag.graph import builder
from zhrag.graph.builder import build_graph
from zhrag.graph.context import Context
from zhrag.graph.served import (
    CALLER_FIELDS,
    SERVED_CONTEXT_ENV,
    SERVED_MODELS_ENV,
    ServedContext,
    operator_context,
    served_context,
)

from test_graph import P_CITY, QUESTION, FakeKnowledge, knowledge  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _fresh_operator(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (SERVED_CONTEXT_ENV, SERVED_MODELS_ENV, "ZHRAG_SERVED_COLLECTIONS"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def recording_endpoint() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A local HTTP server that records (path, Authorization header) of every request and answers 404."""
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(404)
            self.end_headers()

        do_GET = do_POST = _record  # noqa: N815 - http.server API

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_caller_cannot_make_the_server_send_an_environment_variable_anywhere(
    recording_endpoint: tuple[str, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = recording_endpoint
    monkeypatch.setenv("SECRET_X", "s3cr3t")
    probe = {"model_base_url": url, "model": "x", "api_key_env": "SECRET_X"}
    with pytest.raises(RunContextError, match="context field 'api_key_env' is set by the server's operator, not by") as error:
        builder.a0.invoke({"question": QUESTION}, context=probe)
    assert seen == []
    assert isinstance(error.value, ValueError)  # LangGraph servers pass a ValueError's message on to the caller


@pytest.mark.parametrize("variant", ["a1", "a2"])
def test_a_caller_cannot_point_the_server_at_a_storage_path(variant: str, tmp_path: Path) -> None:
    target = tmp_path / "anywhere"
    with pytest.raises(ConfigError, match="context field 'qdrant_engine' is set by the server's operator"):
        getattr(builder, variant).invoke({"question": QUESTION}, context={"qdrant_path": str(target), "qdrant_engine": "local"})
    assert not target.exists()


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ({"model": "/etc/passwd"}, "context model '/etc/passwd' is not served here: choose one of qwen2.5-coder-1.5b"),
        ({"judge_model": "some/hub-model"}, "context judge_model 'some/hub-model' is not served here"),
        ({"collection": "other"}, "context collection 'other' is not served here: choose one of zhrag_kb"),
        ({"reranker": "BAAI/bge-reranker-base"}, "context reranker 'BAAI/bge-reranker-base' is not served here"),
        ({"top_k": "3"}, "context top_k must be an integer, got '3'"),
        ({"judge_threshold": True}, "context judge_threshold must be a number, got True"),
        ({"top_k": 10_000}, "top_k must be between 1 and 50"),
        ({"max_new_tokens": 100_000}, "max_new_tokens must be between 1 and 512"),
        ({"answer_adapter": "/tmp/x"}, "context field 'answer_adapter' is set by the server's operator"),
        ({"api_key_env": "HOME"}, "context field 'api_key_env' is set by the server's operator"),
        ({"mcp_url": "http://attacker/mcp"}, "context field 'mcp_url' is set by the server's operator"),
    ],
)
def test_refused_caller_contexts_name_what_was_refused(requested: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        served_context(requested)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        served_context(ServedContext(**requested))


def test_callers_set_the_variant_knobs_over_the_operators_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operator_file = tmp_path / "served.json"
    operator_file.write_text(json.dumps({"qdrant_path": str(tmp_path / "q"), "top_k": 4}), encoding="utf-8")
    monkeypatch.setenv(SERVED_CONTEXT_ENV, str(operator_file))
    assert served_context(None) == operator_context() == Context(qdrant_path=str(tmp_path / "q"), top_k=4)
    knobs = {"top_k": 7, "max_requeries": 0, "judge_threshold": 0.5, "a2_fallback": "top_passage",
             "abstain_below": 0.2, "max_new_tokens": 16, "model": "gemma3-270m", "reranker": "none"}
    assert set(knobs) <= set(CALLER_FIELDS)
    context = served_context(knobs)
    assert context == Context(qdrant_path=str(tmp_path / "q"), **knobs)
    assert served_context({"top_k": None}) == operator_context()  # None is "the server's setting"


def test_an_operator_endpoint_limits_the_models_to_the_operators_allowlist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    operator_file = tmp_path / "served.json"
    operator_file.write_text(json.dumps({"model_base_url": "http://gpu:8000/v1", "model": "qwen-72b"}), encoding="utf-8")
    monkeypatch.setenv(SERVED_CONTEXT_ENV, str(operator_file))
    with pytest.raises(ConfigError, match="context model 'gemma3-270m' is not served here: choose one of qwen-72b$"):
        served_context({"model": "gemma3-270m"})
    monkeypatch.setenv(SERVED_MODELS_ENV, "qwen-7b, qwen-14b")
    assert served_context({"model": "qwen-14b"}).model_base_url == "http://gpu:8000/v1"


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json", "not a readable JSON file"), ("[1]", "expected a JSON object"), ('{"colour": 1}', "unknown context field 'colour'")],
)
def test_a_bad_operator_file_is_one_line(content: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operator_file = tmp_path / "served.json"
    operator_file.write_text(content, encoding="utf-8")
    monkeypatch.setenv(SERVED_CONTEXT_ENV, str(operator_file))
    with pytest.raises(ConfigError, match=message) as error:
        served_context({"top_k": 3})
    assert str(operator_file) in str(error.value) and "\n" not in str(error.value)


def test_served_graphs_run_the_callers_knobs(
    knowledge: Callable[..., FakeKnowledge],  # noqa: F811
    scoring_model: Callable[..., tuple[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kb = knowledge(lambda q: [P_CITY] * 5)
    name, _ = scoring_model(lambda text: 0.0)  # the judge keeps nothing
    monkeypatch.setenv(SERVED_MODELS_ENV, name)
    seen: list[Any] = []
    graph = build_graph("a2", served=True, terminal_nodes=[("probe", lambda s, runtime: seen.append(runtime.context) or {})])
    state = graph.invoke({"question": QUESTION}, context={"model": name, "top_k": 2, "max_requeries": 0})
    assert kb.calls == [(QUESTION, 2)]  # no requery: the routing reads the caller's max_requeries too
    assert state["answer"] and seen == [Context(model=name, top_k=2, max_requeries=0)]
    assert build_graph("a2", served=True).get_context_jsonschema()["properties"].keys() == set(Context.__dataclass_fields__)


def test_in_process_graphs_and_full_contexts_stay_trusted(tmp_path: Path) -> None:
    trusted = Context(qdrant_path=str(tmp_path), api_key_env="MY_KEY")
    assert served_context(trusted) is trusted  # only Python code can pass a Context object
    assert build_graph("a0").get_context_jsonschema()["properties"]["api_key_env"]["default"] == "OPENAI_API_KEY"
