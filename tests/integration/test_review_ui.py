"""``zhrag review`` end to end: the real server in a subprocess, driven by gradio's own client and by headless Chromium.

Both tests load the page, accept one item, edit another, then restart the server and find the decisions kept.
The browser test needs Debian's ``chromium`` package and the ``playwright`` Python package (no Playwright browser
download: it drives the system Chromium); without them it skips and the client test still covers the endpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration]

# Invented items, in the layout zhrag generate-data writes.
ITEMS = [
    {"id": "p1#0/1", "passage_id": "p1", "chunk_id": "p1#0", "question": "甲城位于哪个省？", "answer": "乙省",
     "passage": "【甲城】甲城位于乙省北部，始建于明朝。", "status": "accepted", "reason": None, "passage_records": 1},
    {"id": "p2#0/1", "passage_id": "p2", "chunk_id": "p2#0", "question": "丙河全长多少公里？", "answer": "三百里",
     "passage": "【丙河】丙河全长三百公里，流经丁县。", "status": "rejected", "reason": "answer_not_in_passage",
     "passage_records": 1},
    {"id": "p3#0/1", "passage_id": "p3", "chunk_id": "p3#0", "question": "丁县的县城叫什么？", "answer": "石门镇",
     "passage": "【丁县】丁县的县城叫石门镇。", "status": "accepted", "reason": None, "passage_records": 1},
]
EDITED_ANSWER = "三百公里"
START_TIMEOUT_S = 300  # a guard against a hang, not a speed requirement


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "generated.jsonl"
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ITEMS), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def review_server(path: Path, port: int) -> Iterator[str]:
    """``zhrag review PATH --port PORT`` in a subprocess; yields its URL once the page answers."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen(
        [sys.executable, "-m", "zhrag.cli", "review", str(path), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"zhrag review exited with {process.returncode}: {process.stdout.read()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"zhrag review did not answer on {url} within {START_TIMEOUT_S} s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def decisions_on_disk(path: Path) -> dict[str, dict]:
    lines = path.with_name("generated.decisions.jsonl").read_text(encoding="utf-8").splitlines()
    return {record["id"]: record for record in map(json.loads, lines)}


def test_gradio_client_accepts_edits_and_resumes_after_a_restart(pairs_file: Path) -> None:
    from gradio_client import Client

    port = free_port()
    with review_server(pairs_file, port) as url:
        client = Client(url, verbose=False)
        index, position, counts, _, question, answer, context = client.predict(api_name="/load")
        assert (index, question, answer, context) == (0, ITEMS[0]["question"], "乙省", ITEMS[0]["passage"])
        assert "undecided: 3" in counts and "Item 1 / 3" in position
        view = client.predict(index, question, answer, api_name="/accept")
        assert view[0] == 1 and view[4] == ITEMS[1]["question"]
        assert "rejected (answer_not_in_passage)" in view[3]
        view = client.predict(view[0], view[4], EDITED_ANSWER, api_name="/save")
        assert view[0] == 2 and "accepted: 1" in view[2] and "edited: 1" in view[2]
        assert client.predict(2, api_name="/prev")[5] == EDITED_ANSWER

    assert {k: v["decision"] for k, v in decisions_on_disk(pairs_file).items()} == {
        "p1#0/1": "accepted", "p2#0/1": "edited"
    }
    with review_server(pairs_file, port) as url:
        client = Client(url, verbose=False)
        index, _, counts, _status, question, *_ = client.predict(api_name="/load")
        assert (index, question) == (2, ITEMS[2]["question"])  # the first undecided item
        assert "accepted: 1 · rejected: 0 · edited: 1 · undecided: 1" in counts
        shown = client.predict(1, api_name="/show")
        assert shown[5] == EDITED_ANSWER and "review: **edited**" in shown[3]
        rejected = client.predict(2, api_name="/reject")
        assert "rejected: 1" in rejected[2] and "undecided: 0" in rejected[2]


def _chromium() -> str | None:
    """The Debian Chromium binary (the real one behind the /usr/bin/chromium wrapper when present)."""
    real = Path("/usr/lib/chromium/chromium")
    return str(real) if real.is_file() else shutil.which("chromium") or shutil.which("chromium-browser")


def test_headless_browser_accepts_edits_and_sees_decisions_after_reload_and_restart(pairs_file: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium); the gradio_client test covers the API")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

    def value(page, elem_id: str) -> str:
        return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()

    def wait_for_question(page, text: str) -> None:
        page.wait_for_function(
            "text => document.querySelector('#question textarea')?.value === text", arg=text, timeout=30_000
        )

    port = free_port()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            with review_server(pairs_file, port) as url:
                page.goto(url)
                wait_for_question(page, ITEMS[0]["question"])
                assert "undecided: 3" in page.locator("#counts").inner_text()
                assert "甲城位于乙省北部" in value(page, "context")

                page.locator("#accept").click()
                wait_for_question(page, ITEMS[1]["question"])
                page.locator("#answer textarea, #answer input").first.fill(EDITED_ANSWER)
                page.locator("#save").click()
                wait_for_question(page, ITEMS[2]["question"])
                assert "accepted: 1 · rejected: 0 · edited: 1 · undecided: 1" in page.locator("#counts").inner_text()

                page.reload()
                wait_for_question(page, ITEMS[2]["question"])
                assert "edited: 1" in page.locator("#counts").inner_text()

            with review_server(pairs_file, port):
                page.reload()
                wait_for_question(page, ITEMS[2]["question"])
                assert "accepted: 1 · rejected: 0 · edited: 1 · undecided: 1" in page.locator("#counts").inner_text()
                page.locator("#prev").click()
                wait_for_question(page, ITEMS[1]["question"])
                assert value(page, "answer") == EDITED_ANSWER
                assert "review: edited" in page.locator("#status").inner_text()
        finally:
            browser.close()
    assert decisions_on_disk(pairs_file)["p2#0/1"]["answer"] == EDITED_ANSWER
