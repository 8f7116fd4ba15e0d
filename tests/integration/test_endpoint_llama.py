"""The endpoint path against a real OpenAI-compatible server: ``zhrag serve-model`` (llama.cpp) on a packaged model.

The server is the packaged Qwen2.5-Coder-0.5B-Instruct on llama.cpp's own HTTP server (xllamacpp), started as a
user would start it; ``zhrag ask --model-base-url`` then answers through it. Greedy decoding on the same weights
gives the same answer in process and over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTION = "《九命奇冤》是由哪位作者所著？"
SERVED = "qwen2.5-coder-0.5b"
START_TIMEOUT_S = 600  # a guard against a hang: loading the model on a busy machine takes a while
API_KEY = "test-key-123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def zhrag(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zhrag.cli", *args], capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``zhrag serve-model`` on a free port with an API key; yields its base URL."""
    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    log = folder / "server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "zhrag.cli", "serve-model", "--model", SERVED, "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "ZHRAG_MODEL_API_KEY": API_KEY},
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, f"serve-model exited: {log.read_text(errors='replace')[-2000:]}"
            try:
                if httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve-model did not start in time"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_server_requires_its_key_and_lists_the_alias(model_server: str) -> None:
    assert httpx.get(f"{model_server}/models", timeout=5).status_code == 401
    listing = httpx.get(f"{model_server}/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5).json()
    assert SERVED in [entry["id"] for entry in listing["data"]]


def test_ask_through_the_server_equals_the_in_process_answer(
    model_server: str, kb_subset: Path, tmp_path: Path
) -> None:
    qdrant = str(tmp_path / "qdrant")
    indexed = zhrag("index", str(kb_subset), "--qdrant-path", qdrant)
    assert indexed.returncode == 0, indexed.stderr
    served = zhrag(
        "ask", "--variant", "a1", "--json", "--qdrant-path", qdrant, "--model-base-url", model_server,
        "--model", SERVED, "--max-new-tokens", "16", QUESTION, env={"OPENAI_API_KEY": API_KEY},
    )
    assert served.returncode == 0, served.stderr
    local = zhrag("ask", "--variant", "a1", "--json", "--qdrant-path", qdrant, "--model", SERVED, "--max-new-tokens", "16", QUESTION)
    assert local.returncode == 0, local.stderr
    remote_record, local_record = json.loads(served.stdout), json.loads(local.stdout)
    assert remote_record["contexts"], "a1 retrieved no passages"
    [model] = remote_record["models"]
    assert (model["kind"], model["model"], model["source"]) == ("endpoint", SERVED, model_server)
    assert local_record["models"][0]["engine"] == "llama.cpp"
    assert remote_record["answer"] == local_record["answer"] and remote_record["answer"] != "不知道"


def test_a_model_the_server_does_not_serve_is_a_one_line_error(model_server: str) -> None:
    result = zhrag(
        "ask", "--variant", "a0", "--model-base-url", model_server, "--model", "nope", "问题",
        env={"OPENAI_API_KEY": API_KEY},
    )
    assert result.returncode == 2
    assert f"model endpoint {model_server} does not serve model 'nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serving_beyond_loopback_without_a_key_is_refused() -> None:
    result = zhrag("serve-model", "--host", "0.0.0.0", "--port", str(free_port()), env={"ZHRAG_MODEL_API_KEY": ""})
    assert result.returncode == 2
    assert result.stderr.strip() == "error: serving on 0.0.0.0 needs an API key: set ZHRAG_MODEL_API_KEY"
