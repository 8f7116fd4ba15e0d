"""Unit-test fixtures: the scripted chat model registered as a zhrag LLM."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fakes import FakeLLM, ScoringLLM, ScriptedChatModel

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


@pytest.fixture
def scoring_model() -> Iterator[Callable[..., tuple[str, ScoringLLM]]]:
    """``scoring_model(yes, answer=..., confidence=...)`` registers a :class:`fakes.ScoringLLM` under a fresh name."""
    names: list[str] = []

    def register(yes: Callable[[str], float], **kwargs: object) -> tuple[str, ScoringLLM]:
        llm = ScoringLLM(yes, **kwargs)  # type: ignore[arg-type]
        names.append(f"scoring-{uuid.uuid4().hex[:8]}")
        register_llm(names[-1], llm)
        return names[-1], llm

    yield register
    for name in names:
        unregister_llm(name)
