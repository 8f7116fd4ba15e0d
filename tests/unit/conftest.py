"""Unit-test fixtures: the scripted chat model registered as a zhrag LLM."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fakes import FakeLLM, ScriptedChatModel

from zhrag.models import LocalLLM, register_llm, unregister_llm


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    """``fake_llm(reply)`` registers a scripted chat model under a fresh name and returns (name, model)."""
    names: list[str] = []

    def register(reply: Callable[[str], str]) -> tuple[str, ScriptedChatModel]:
        model = ScriptedChatModel(reply=reply)
        names.append(f"fake-{uuid.uuid4().hex[:8]}")
        register_llm(names[-1], LocalLLM.from_langchain(model, is_chat=True))
        return names[-1], model

    yield register
    for name in names:
        unregister_llm(name)
