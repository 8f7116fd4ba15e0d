"""LangGraph Studio's server: ``langgraph dev`` serves the graphs offline and they answer over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
QUESTION = "《九命奇冤》是由哪位作者所著？"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TOKEN = "studio-t0ken"


def _wait_until_up(process: subprocess.Popen, url: str, log: Path, what: str) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(1)
    pytest.fail(f"{what} did not come up: " + log.read_text()[-2000:])


@pytest.fixture(scope="module")
def knowledge_url(kb_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """One ``zhrag serve-mcp`` over streamable HTTP (bearer token) owning an embedded store of the KB subset."""
    from zhrag.kb.indexing import index_sources
    from zhrag.kb.store import KnowledgeStore

    qdrant = tmp_path_factory.mktemp("studio-qdrant")
    with KnowledgeStore(path=qdrant) as store:  # the default embedder's collection, which serve-mcp serves
        index_sources(store, [kb_subset], progress=False)
    port = _free_port()
    log = tmp_path_factory.mktemp("knowledge-log") / "server.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [os.sys.executable, "-m", "zhrag.cli", "serve-mcp", "--transport", "streamable-http", "--port", str(port),
             "--qdrant-path", str(qdrant)],
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "ZHRAG_MCP_TOKEN": TOKEN},
        )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        _wait_until_up(server, url, log, "zhrag serve-mcp")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def studio_url(knowledge_url: str, tmp_path_factory: pytest.TempPathFactory):
    """A running ``langgraph dev`` server whose graphs search through the one knowledge server."""
    langgraph = shutil.which("langgraph", path=os.path.dirname(os.sys.executable))
    assert langgraph, "langgraph-cli is not installed in this environment"
    port = _free_port()
    log = tmp_path_factory.mktemp("studio-log") / "server.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [langgraph, "dev", "--no-browser", "--no-reload", "--port", str(port), "--config", "langgraph.json"],
            cwd=PROJECT_ROOT, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "ZHRAG_MCP_URL": knowledge_url, "ZHRAG_MCP_TOKEN": TOKEN, "LANGSMITH_TRACING": "false"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(server, f"{url}/ok", log, "langgraph dev")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_studio_serves_the_variants(studio_url: str):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=studio_url)
    assistants = {a["graph_id"] for a in client.assistants.search(limit=20)}
    assert {"a0", "a1", "a2", "a3"} <= assistants
    results = {}
    for variant in ("a0", "a1", "a2"):
        state = client.runs.wait(None, variant, input={"question": QUESTION}, context={"top_k": 3})
        assert isinstance(state, dict) and state.get("answer", "").strip(), state
        results[variant] = state
    assert not results["a0"].get("contexts")
    assert any("吴沃尧" in p["text"] for p in results["a1"]["contexts"])
    assert results["a2"]["queries"][0] == QUESTION


def test_studio_serves_a4_with_its_roles_as_subgraphs(studio_url: str):
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=studio_url)
    [assistant] = [a for a in client.assistants.search(limit=20) if a["graph_id"] == "a4"]
    drawn = client.assistants.get_graph(assistant["assistant_id"], xray=True)
    nodes = {node["id"] for node in drawn["nodes"]}
    assert {"planner:propose", "researcher:read", "answerer:answer", "evaluator:decide"} <= nodes
    state = client.runs.wait(None, "a4", input={"question": QUESTION}, context={"top_k": 2, "max_review_rounds": 0})
    assert isinstance(state, dict) and state.get("answer", "").strip(), state
    assert [step["from"] for step in state["handoffs"]][:4] == ["planner", "researcher", "answerer", "evaluator"]
    assert state["verdicts"][-1]["decision"] in ("accept", "abstain")


def test_served_graphs_refuse_operator_fields_from_callers(studio_url: str, tmp_path: Path):
    """The probes of the safety issue: an endpoint plus an environment variable name, and a storage path."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from langgraph_sdk import get_sync_client

    seen: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def _record(self) -> None:
            seen.append(f"{self.command} {self.path} {self.headers.get('Authorization')}")
            self.send_response(404)
            self.end_headers()

        do_GET = do_POST = _record  # noqa: N815 - http.server API

        def log_message(self, *args) -> None:
            pass

    recorder = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    client = get_sync_client(url=studio_url)
    probes = {
        "a0": ({"model_base_url": f"http://127.0.0.1:{recorder.server_address[1]}/v1", "model": "x",
                "api_key_env": "PATH"}, "api_key_env"),
        "a1": ({"qdrant_path": str(tmp_path / "planted"), "qdrant_engine": "local"}, "qdrant_engine"),
    }
    try:
        for variant, (context, field) in probes.items():
            try:
                outcome = str(client.runs.wait(None, variant, input={"question": QUESTION}, context=context))
            except Exception as error:  # noqa: BLE001 - the SDK raises for a failed run on some versions
                outcome = str(error)
            assert f"context field '{field}' is set by the server's operator" in outcome, outcome
    finally:
        recorder.shutdown()
        recorder.server_close()
    assert seen == [] and not (tmp_path / "planted").exists()
    state = client.runs.wait(None, "a0", input={"question": QUESTION}, context={"max_new_tokens": 8, "top_k": 2})
    assert state.get("answer", "").strip(), state  # the caller's knobs still work


def test_studio_eval_and_an_mcp_client_work_at_once_against_one_knowledge_server(
    studio_url: str, knowledge_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The issue's done-when: a Studio run, `zhrag eval --mcp-url` and an MCP client, concurrently, one server."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from langgraph_sdk import get_sync_client

    from zhrag.mcp.client import KnowledgeClient, ServerConfig

    def studio() -> dict:
        return get_sync_client(url=studio_url).runs.wait(
            None, "a1", input={"question": QUESTION}, context={"top_k": 3, "max_new_tokens": 16}
        )

    def evaluation() -> subprocess.CompletedProcess:
        return subprocess.run(
            [os.sys.executable, "-m", "zhrag.cli", "eval", "--variants", "a1", "--limit", "1", "--model", "gemma3-270m",
             "--max-new-tokens", "8", "--mcp-url", knowledge_url, "--out", str(tmp_path / "eval")],
            capture_output=True, text=True, timeout=600, env={**os.environ, "ZHRAG_MCP_TOKEN": TOKEN},
        )

    def client() -> list[list[dict]]:
        with KnowledgeClient(ServerConfig(url=knowledge_url)) as knowledge:
            return [knowledge.find(QUESTION, 2) for _ in range(20)]

    monkeypatch.setenv("ZHRAG_MCP_TOKEN", TOKEN)
    with ThreadPoolExecutor(max_workers=3) as pool:
        studio_run, eval_run, finds = pool.submit(studio), pool.submit(evaluation), pool.submit(client)
        state, evaluated, found = studio_run.result(), eval_run.result(), finds.result()
    assert any("吴沃尧" in passage["text"] for passage in state["contexts"]), state
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (record,) = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text("utf-8").splitlines()]
    assert record["variant"] == "a1" and record["contexts"]
    assert all(passages and passages[0]["title"] == "九命奇冤" for passages in found)
