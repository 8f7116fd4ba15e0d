"""Packaged models: aliases, assembly of part packages into one hash-checked GGUF, and the engine rules."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zhrag.errors import ConfigError, ModelLoadError
from zhrag.models import packaged
from zhrag.models.loader import resolve_engine
from zhrag.models.packaged import PACKAGED_MODELS, PackagedModel, packaged_gguf
from zhrag.models.sources import ModelSource, resolve_model_source

PART_BYTES = (b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5)


@pytest.fixture
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PackagedModel]:
    """Three importable part packages (fakepart1..3) and a packaged model made of them; the cache in tmp_path."""
    site = tmp_path / "site"
    for number, content in enumerate(PART_BYTES, start=1):
        package = site / f"zhrag_fakepart{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("", encoding="utf-8")
        (package / "data" / f"part{number:02d}.bin").write_bytes(content)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("ZHRAG_CACHE", str(tmp_path / "cache"))
    whole = b"".join(PART_BYTES)
    model = PackagedModel(
        alias="fake-model",
        file_name="fake.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        parts=packaged._parts("zhrag-fakepart", "zhrag_fakepart", 3, "data/part{i:02d}.bin"),
        extra="fake",
        origin="tests",
    )
    monkeypatch.setitem(PACKAGED_MODELS, model.alias, model)
    yield model
    for number in range(1, 4):
        sys.modules.pop(f"zhrag_fakepart{number}", None)


def test_parts_are_assembled_once_into_the_checked_file(fake_parts: PackagedModel, tmp_path: Path) -> None:
    path, hit = packaged_gguf("fake-model")
    assert not hit and path == tmp_path / "cache" / "gguf" / "fake.gguf"
    assert path.read_bytes() == b"".join(PART_BYTES)
    again, hit = packaged_gguf("fake-model")
    assert hit and again == path
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.gguf", "fake.gguf.verified"]


def test_a_wrong_hash_is_refused_and_leaves_nothing_usable(
    fake_parts: PackagedModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = PackagedModel(**{**fake_parts.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(PACKAGED_MODELS, "fake-model", wrong)
    with pytest.raises(ModelLoadError, match=r"assembled file has SHA-256 [0-9a-f]{64}, expected 0{64}; refusing it"):
        packaged_gguf("fake-model")
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


def test_a_changed_file_is_checked_again(fake_parts: PackagedModel) -> None:
    path, _ = packaged_gguf("fake-model")
    path.write_bytes(b"x" * fake_parts.size)  # same size, other content, newer mtime: the stamp no longer fits
    again, hit = packaged_gguf("fake-model")
    assert not hit and again.read_bytes() == b"".join(PART_BYTES)


def test_a_missing_part_is_named_with_the_install_command(fake_parts: PackagedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = (*fake_parts.parts[:2], ("zhrag-fakepart9", "zhrag_fakepart9", "data/part09.bin"))
    monkeypatch.setitem(PACKAGED_MODELS, "fake-model", PackagedModel(**{**fake_parts.__dict__, "parts": parts}))
    with pytest.raises(ModelLoadError, match=r"missing its part package zhrag-fakepart9: pip install 'zhrag\[fake\]'"):
        packaged_gguf("fake-model")


def test_parts_of_the_wrong_size_are_refused(fake_parts: PackagedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PACKAGED_MODELS, "fake-model", PackagedModel(**{**fake_parts.__dict__, "size": 10}))
    with pytest.raises(ModelLoadError, match="parts add up to 1,786 bytes, expected 10"):
        packaged_gguf("fake-model")


def test_unknown_alias() -> None:
    with pytest.raises(ModelLoadError, match="unknown packaged model 'qwen9'"):
        packaged_gguf("qwen9")


@pytest.mark.parametrize("alias", ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma3-270m"])
def test_every_alias_is_a_packaged_source_with_a_recorded_hash(alias: str) -> None:
    assert resolve_model_source(alias) == ModelSource("packaged", alias)
    model = PACKAGED_MODELS[alias]
    assert len(model.sha256) == 64 and model.size > 100_000_000 and model.origin


def test_engine_rules() -> None:
    gguf, directory = ModelSource("packaged", "gemma3-270m"), ModelSource("dir", "/models/x")
    assert resolve_engine("auto", gguf, None) == "llama.cpp"
    assert resolve_engine("auto", gguf, "/adapters/a") == "llama.cpp"  # converted to a GGUF LoRA
    assert resolve_engine("auto", directory, None) == "transformers"
    assert resolve_engine("transformers", gguf, None) == "transformers"
    with pytest.raises(ConfigError, match="the llama.cpp engine runs GGUF models"):
        resolve_engine("llama.cpp", directory, None)
    assert resolve_engine("llama.cpp", gguf, "/adapters/a") == "llama.cpp"
    assert resolve_engine("transformers", gguf, "/adapters/a") == "transformers"
    with pytest.raises(ConfigError, match="unknown engine 'vllm'"):
        resolve_engine("vllm", gguf, None)
