"""Official Chinese-SimpleQA grader (prompt, letter parsing, HTTP judge) and the offline rule grader."""

from __future__ import annotations

import json
import socket
import string
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from zhrag.errors import ZhragError
from zhrag.evaluation.metrics import Grade
from zhrag.evaluation.official_grader import JudgeError, OfficialGrader, openai_compatible_judge
from zhrag.evaluation.rule_grader import grade_by_rules, normalize_answer
from zhrag.prompts.grader import GRADER_SYSTEM_PROMPT, GRADER_TEMPLATE, build_grader_prompt, parse_grade_letter

# ------------------------------------------------------------------------------------------- official prompt


def test_template_is_the_official_one() -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(GRADER_TEMPLATE) if name}
    assert fields == {"question", "target", "predicted_answer"}
    assert GRADER_TEMPLATE.startswith("请根据给定问题、标准答案和模型预测的答案来评估模型的回答是否正确。")
    assert GRADER_TEMPLATE.endswith('只返回字母"A"、"B"或"C"，无须添加其他文本。')
    assert "A:【正确】\nB:【错误】\nC:【未尝试】" in GRADER_TEMPLATE


def test_build_grader_prompt_fills_the_slots() -> None:
    prompt = build_grader_prompt("伏兔穴所属的经脉是什么？", "足阳明胃经", "胃经")
    assert "问题: 伏兔穴所属的经脉是什么？\n正确答案: 足阳明胃经\n预测答案: 胃经\n" in prompt
    assert "{" not in prompt


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("A", "A"),
        ("B", "B"),
        ("C", "C"),
        ("  B\n", "B"),
        ("答案：B", "B"),
        ("评定结果为【A】正确", "A"),
        ("Answer: B", "B"),
        ("The grade is C.", "C"),
        ("B:【错误】", "B"),
        ("我认为是A，因为包含了标准答案", "A"),
        ("无法判断", "C"),
        ("", "C"),
        ("CORRECT", "C"),
        ("b", "C"),
    ],
)
def test_parse_grade_letter(reply: str, letter: str) -> None:
    assert parse_grade_letter(reply) == letter


def test_official_grader_maps_letters_and_passes_the_prompt() -> None:
    prompts: list[str] = []
    replies = iter(["A", "答案：B", "C", "不知道"])

    def judge(prompt: str) -> str:
        prompts.append(prompt)
        return next(replies)

    grader = OfficialGrader(judge)
    assert grader("问题一", "金", "金") is Grade.CORRECT
    assert grader.grade_with_output("问题二", "银", "铜") == (Grade.INCORRECT, "答案：B")
    assert grader("问题三", "铁", "我不知道") is Grade.NOT_ATTEMPTED
    assert grader("问题四", "锡", "铅") is Grade.NOT_ATTEMPTED  # no letter in the reply
    assert prompts[1] == build_grader_prompt("问题二", "银", "铜")


def test_official_grader_does_not_ask_about_empty_answers() -> None:
    def judge(prompt: str) -> str:
        raise AssertionError("judge called for an empty answer")

    assert OfficialGrader(judge).grade_with_output("问题", "金", "  ") == (Grade.NOT_ATTEMPTED, "")


# ------------------------------------------------------------------------------------------- HTTP judge


class _FakeOpenAI(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    reply_status = 200

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # http.server API
        self._send(200, {"object": "list", "data": [{"id": "judge-model"}]})

    def do_POST(self) -> None:  # http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if type(self).reply_status != 200:
            self._send(type(self).reply_status, {"error": "overloaded"})
        else:
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": "B"}}]})


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Talk to the local fake server directly even where a proxy is configured."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_server() -> Iterator[str]:
    _FakeOpenAI.requests = []
    _FakeOpenAI.reply_status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_compatible_judge_posts_the_official_messages(fake_server: str) -> None:
    judge = openai_compatible_judge(fake_server, "judge-model", api_key="secret", timeout=5)
    judge.check()
    grade = OfficialGrader(judge)("问题", "金", "银")
    judge.close()
    assert grade is Grade.INCORRECT
    [request] = _FakeOpenAI.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer secret"
    assert request["body"]["model"] == "judge-model"
    assert request["body"]["messages"] == [
        {"role": "system", "content": GRADER_SYSTEM_PROMPT},
        {"role": "user", "content": build_grader_prompt("问题", "金", "银")},
    ]


def test_check_rejects_a_model_the_server_does_not_serve(fake_server: str) -> None:
    with pytest.raises(JudgeError, match="does not serve model 'other'"):
        openai_compatible_judge(fake_server, "other", timeout=5).check()


def test_http_errors_become_judge_errors(fake_server: str) -> None:
    _FakeOpenAI.reply_status = 503
    with pytest.raises(JudgeError, match="HTTP 503"):
        openai_compatible_judge(fake_server, "judge-model", timeout=5)("prompt")


def test_unreachable_endpoint_fails_early() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = openai_compatible_judge(f"http://127.0.0.1:{port}/v1", "judge-model", timeout=2)
    with pytest.raises(ZhragError, match="unreachable") as caught:
        judge.check()
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------- rule grader


@pytest.mark.parametrize(
    ("gold", "answer", "grade"),
    [
        # exact and containment
        ("足阳明胃经", "足阳明胃经", "CORRECT"),
        ("足阳明胃经", "伏兔穴属于足阳明胃经。", "CORRECT"),
        ("足阳明胃经", "足太阳膀胱经", "INCORRECT"),
        # punctuation, width, case, spaces
        ("《脾胃论》", "脾胃论", "CORRECT"),
        ("玛丽亚·奥巴马", "玛丽亚 奥巴马", "CORRECT"),
        ("MgCO3", "ｍｇｃｏ３", "CORRECT"),
        ("Mark Twain", "mark twain", "CORRECT"),
        # bracketed alternatives
        ("碳酸镁（MgCO3）", "碳酸镁", "CORRECT"),
        ("马克·吐温（Mark Twain）", "Mark Twain", "CORRECT"),
        # numerals both ways
        ("1928年", "一九二八年", "CORRECT"),
        ("一九二八年", "1928年", "CORRECT"),
        ("12", "十二", "CORRECT"),
        ("十二", "12个", "CORRECT"),
        ("300", "三百", "CORRECT"),
        ("2003", "二〇〇三年", "CORRECT"),
        ("3518.17", "三千五百一十八点一七米", "CORRECT"),
        ("1,000", "1000", "CORRECT"),
        # whole numbers only
        ("100", "100", "CORRECT"),
        ("100", "约100米", "CORRECT"),
        ("100", "1000000", "INCORRECT"),
        ("100", "1100", "INCORRECT"),
        ("100", "2100", "INCORRECT"),
        ("100", "100.5", "INCORRECT"),
        ("3.5", "13.5", "INCORRECT"),
        ("1928年", "1929年", "INCORRECT"),
        ("十二", "一百一十二", "INCORRECT"),
        # refusals and empty answers
        ("足阳明胃经", "不知道", "NOT_ATTEMPTED"),
        ("足阳明胃经", "无法回答这个问题", "NOT_ATTEMPTED"),
        ("足阳明胃经", "我不清楚。", "NOT_ATTEMPTED"),
        ("1928", "无法确定", "NOT_ATTEMPTED"),
        ("1928", "资料中没有相关信息", "NOT_ATTEMPTED"),
        ("1928", "抱歉，我无法提供答案", "NOT_ATTEMPTED"),
        ("1928", "I don't know.", "NOT_ATTEMPTED"),
        ("1928", "", "NOT_ATTEMPTED"),
        ("1928", " 。 ", "NOT_ATTEMPTED"),
        # a hedged answer that contains the gold answer is correct, as in the official prompt
        ("1928年", "我不确定，可能是1928年", "CORRECT"),
    ],
)
def test_rule_grader(gold: str, answer: str, grade: str) -> None:
    assert grade_by_rules("问题？", gold, answer) == Grade(grade)


def test_normalize_answer() -> None:
    assert normalize_answer("  Ｈｅｌｌｏ， 世界！ ") == "hello世界"
    assert normalize_answer("公元一九二八年") == "公元1928年"
    assert normalize_answer("3，5") == "3 5"  # punctuation between numbers stays a boundary
    assert normalize_answer("3.5米。") == "3.5米"
