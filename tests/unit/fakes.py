"""Fakes shared by the unit tests: a scripted chat model (imported as ``fakes`` from the tests)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from zhrag.models import LocalLLM, ScoredText


class ScriptedChatModel(BaseChatModel):
    """Chat model whose reply is ``reply(prompt text)``; keeps every prompt it saw."""

    reply: Callable[[str], str]
    prompts: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any) -> ChatResult:
        text = "\n".join(str(m.content) for m in messages)
        self.prompts.append(text)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.reply(text)))])


FakeLLM = Callable[[Callable[[str], str]], tuple[str, ScriptedChatModel]]


class ScoringLLM(LocalLLM):
    """A chat ``LocalLLM`` that gives probabilities: ``yes(prompt text)`` is P(是), ``answer(prompt text)`` the
    answer with confidence ``confidence`` (a number, or a function of the prompt text). For graph wiring only; it stands for no real model."""

    def __init__(self, yes: Callable[[str], float], answer: Callable[[str], str] = lambda text: "乙省",
                 confidence: float | Callable[[str], float] = 0.9) -> None:
        super().__init__(ScriptedChatModel(reply=answer), is_chat=True, load_info={"model": "scoring-fake"})
        self.yes, self.answer, self.confidence_value = yes, answer, confidence
        self.scored: list[str] = []

    @property
    def supports_logprobs(self) -> bool:
        return True

    @staticmethod
    def _text(prompt: Any) -> str:
        return prompt if isinstance(prompt, str) else "\n".join(str(m.content) for m in prompt)

    def generate_scored(self, prompts: Any, max_new_tokens: int = 32, stop: Any = ("\n",)) -> list[ScoredText]:
        texts = [self._text(p) for p in prompts]
        self.scored.extend(texts)
        def confidence(text: str) -> float:
            value = self.confidence_value
            return value(text) if callable(value) else value

        return [ScoredText(text=self.answer(t), tokens=(self.answer(t),), logprobs=(math.log(confidence(t)),))
                for t in texts]

    def next_token_probabilities(self, prompts: Any, candidates: Any) -> list[dict[str, float]]:
        return [{"是": self.yes(self._text(p)), "否": 1.0 - self.yes(self._text(p))} for p in prompts]
