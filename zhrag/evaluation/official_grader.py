"""The official Chinese-SimpleQA grader: an LLM judge given the benchmark's own grading prompt.

``OfficialGrader(judge)`` works with any judge callable ``prompt -> text``: a local model, or an
OpenAI-compatible chat endpoint through ``openai_compatible_judge`` (vLLM, llama.cpp server, Ollama, ...).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx

from zhrag.errors import ZhragError
from zhrag.evaluation.metrics import Grade
from zhrag.prompts.grader import (
    GRADER_SYSTEM_PROMPT,
    build_grader_prompt,
    parse_grade_letter,
)

#: A judge turns the grading prompt into the judge model's reply text.
Judge = Callable[[str], str]

_LETTER_TO_GRADE = {"A": Grade.CORRECT, "B": Grade.INCORRECT, "C": Grade.NOT_ATTEMPTED}


class JudgeError(ZhragError):
    """The judge endpoint is unreachable, rejected the request, or returned an unusable reply."""


class OfficialGrader:
    """Grades answers with the official Chinese-SimpleQA prompt and a judge model.

    Args:
        judge: Callable that sends one prompt to the judge model and returns its reply text.
    """

    def __init__(self, judge: Judge) -> None:
        self.judge = judge

    def grade_with_output(self, question: str, gold: str, answer: str) -> tuple[Grade, str]:
        """The grade and the judge's raw reply ("" when the answer is empty and the judge was not asked).

        Like the official scoring code, the first stand-alone A/B/C in the reply decides the grade and a
        reply without one counts as not attempted.
        """
        if not answer.strip():
            return Grade.NOT_ATTEMPTED, ""
        reply = self.judge(build_grader_prompt(question, gold, answer))
        return _LETTER_TO_GRADE[parse_grade_letter(reply)], reply

    def __call__(self, question: str, gold: str, answer: str) -> Grade:
        """The grade of ``answer`` for ``question`` against ``gold``."""
        return self.grade_with_output(question, gold, answer)[0]


class OpenAICompatibleJudge:
    """A judge that POSTs the grading prompt to ``{base_url}/chat/completions`` (greedy, temperature 0).

    The official system message goes first, the grading prompt is the user message. Create it with
    ``openai_compatible_judge``.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise JudgeError(f"judge endpoint {url} unreachable: {type(exc).__name__}: {exc}") from None
        if response.is_error:
            raise JudgeError(f"judge endpoint {url} answered HTTP {response.status_code}: {response.text[:200]!r}")
        try:
            return response.json()
        except ValueError:
            raise JudgeError(f"judge endpoint {url} did not answer JSON: {response.text[:200]!r}") from None

    def check(self) -> None:
        """Fail early with ``JudgeError`` when the endpoint is unreachable or does not serve ``model``.

        Reads ``{base_url}/models``; a server that lists models but not this one is an error.
        """
        listing = self._request("GET", "/models")
        served = [entry.get("id") for entry in listing.get("data", []) if isinstance(entry, dict)]
        if served and self.model not in served:
            raise JudgeError(f"judge endpoint {self.base_url} does not serve model {self.model!r}; it serves {served}")

    def __call__(self, prompt: str) -> str:
        """The judge model's reply to the grading prompt."""
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": GRADER_SYSTEM_PROMPT},
                {"role": "user", "content": prompt},
            ],
            "temperature": 0,
        }
        reply = self._request("POST", "/chat/completions", json=body)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            shown = str(reply)[:200]
            raise JudgeError(f"judge endpoint {self.base_url} returned no message content: {shown!r}") from None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


def openai_compatible_judge(
    base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0
) -> OpenAICompatibleJudge:
    """A judge callable for an OpenAI-compatible chat endpoint such as ``http://localhost:8000/v1``.

    Args:
        base_url: Endpoint root, the part before ``/chat/completions``.
        model: Model name the server serves.
        api_key: Bearer token; ``None`` reads ``OPENAI_API_KEY`` (no header when that is unset too).
        timeout: Seconds to wait for one reply.
    """
    return OpenAICompatibleJudge(base_url, model, api_key or os.environ.get("OPENAI_API_KEY"), timeout)
