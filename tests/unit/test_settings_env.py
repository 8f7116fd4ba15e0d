"""Integer settings read from the environment: defaults, bounds and one-line errors naming the variable."""

from __future__ import annotations

import pytest

from zhrag.errors import ConfigError
from zhrag.models.llamacpp import LlamaCppSettings
from zhrag.settings import env_int


@pytest.mark.parametrize(
    ("value", "minimum", "expected"),
    [(None, 1, 7), ("", 1, 7), (" 3 ", 1, 3), ("0", 0, 0), ("-1", -1, -1)],
)
def test_env_int_reads_integers_at_or_above_the_minimum(value, minimum, expected) -> None:
    env = {} if value is None else {"X_INT": value}
    assert env_int("X_INT", 7, minimum=minimum, env=env) == expected


@pytest.mark.parametrize(
    ("value", "minimum", "message"),
    [("two", 1, "X_INT must be a positive integer, got 'two'"), ("0", 1, "X_INT must be a positive integer"),
     ("100", 256, "X_INT must be an integer >= 256, got '100'"), ("1.5", 0, "X_INT must be an integer >= 0")],
)
def test_env_int_refuses_anything_else_by_name(value, minimum, message) -> None:
    with pytest.raises(ConfigError, match=message):
        env_int("X_INT", 7, minimum=minimum, env={"X_INT": value})


def test_llama_cpp_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHRAG_LLAMA_CTX", "1024")
    monkeypatch.setenv("ZHRAG_LLAMA_GPU_LAYERS", "-1")
    settings = LlamaCppSettings.from_env()
    assert settings.n_ctx == 1024 and settings.n_gpu_layers == -1
    monkeypatch.setenv("ZHRAG_LLAMA_CTX", "100")
    with pytest.raises(ConfigError, match="ZHRAG_LLAMA_CTX must be an integer >= 256, got '100'"):
        LlamaCppSettings.from_env()
