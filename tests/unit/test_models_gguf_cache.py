"""The on-disk cache of dequantized GGUF models (no real model: broken files and pre-made cache entries)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from zhrag.errors import ModelLoadError
from zhrag.models import gguf_cache


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZHRAG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


@pytest.mark.parametrize("content", [b"GGUF\x03\x00\x00\x00truncated", b"not a gguf file at all"])
def test_unreadable_gguf_is_a_load_error_and_leaves_no_cache(cache: Path, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"cannot load GGUF model {path}"):
        gguf_cache.gguf_model_dir(path)
    assert list(cache.iterdir()) == []


def test_existing_cache_entry_is_used_without_dequantizing(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model-q4.gguf"
    path.write_bytes(b"some gguf bytes")
    digest = hashlib.sha256(b"some gguf bytes").hexdigest()
    entry = cache / f"model-q4-{digest[:12]}"
    entry.mkdir(parents=True)

    def no_dequantize(*args: object) -> None:
        raise AssertionError("dequantized although the cache exists")

    monkeypatch.setattr(gguf_cache, "dequantize_to", no_dequantize)
    assert gguf_cache.gguf_model_dir(path) == (entry, True)
