"""Fakes shared by the unit tests: a scripted chat model (imported as ``fakes`` from the tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field



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
