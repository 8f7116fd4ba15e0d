"""LangGraph Studio's server: ``langgraph dev`` serves the a0/a1/a2 graphs offline and they answer over HTTP."""

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


@pytest.fixture(scope="module")
def studio_url(kb_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A running ``langgraph dev`` server whose graphs use an embedded Qdrant holding the KB subset."""
    import httpx

    from zhrag.tools.indexing import index_sources
    from zhrag.tools.store import KnowledgeStore

    qdrant = tmp_path_factory.mktemp("studio-qdrant")
    with KnowledgeStore("zhrag_kb", path=qdrant) as store:
        index_sources(store, [kb_subset], progress=False)
    langgraph = shutil.which("langgraph", path=os.path.dirname(os.sys.executable))
    assert langgraph, "langgraph-cli is not installed in this environment"
    port = _free_port()
    log = (tmp_path_factory.mktemp("studio-log") / "server.log").open("w")
    server = subprocess.Popen(
        [langgraph, "dev", "--no-browser", "--no-reload", "--port", str(port), "--config", "langgraph.json"],
        cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "ZHRAG_QDRANT_PATH": str(qdrant), "LANGSMITH_TRACING": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert server.poll() is None, Path(log.name).read_text()
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("langgraph dev did not come up: " + Path(log.name).read_text()[-2000:])
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_studio_serves_the_three_variants(studio_url: str):
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

        do_GET = do_POST = _record

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
            except Exception as error:  # the SDK raises for a failed run on some versions
                outcome = str(error)
            assert f"context field '{field}' is set by the server's operator" in outcome, outcome
    finally:
        recorder.shutdown()
        recorder.server_close()
    assert seen == [] and not (tmp_path / "planted").exists()
    state = client.runs.wait(None, "a0", input={"question": QUESTION}, context={"max_new_tokens": 8, "top_k": 2})
    assert state.get("answer", "").strip(), state  # the caller's knobs still work
