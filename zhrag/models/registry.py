"""Pre-built models (any :class:`~zhrag.models.base.LLM`) that ``load_llm`` resolves by name (fake models in tests,
custom models)."""

from __future__ import annotations

import threading

from zhrag.models.base import LLM

_registered: dict[str, LLM] = {}
_lock = threading.Lock()


def register_llm(name: str, llm: LLM) -> None:
    """Make ``load_llm(name)`` return ``llm``; a registered name takes precedence over paths and aliases."""
    with _lock:
        _registered[name] = llm


def unregister_llm(name: str) -> None:
    """Forget the model registered as ``name`` (no error when there is none)."""
    with _lock:
        _registered.pop(name, None)


def registered_llm(name: str) -> LLM | None:
    """The model registered as ``name``, or ``None``."""
    with _lock:
        return _registered.get(name)
