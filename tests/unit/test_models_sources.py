"""Model and adapter argument resolution, and the load errors that need no model."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest

from zhrag import settings
from zhrag.errors import ModelLoadError
from zhrag.models import ModelSource, load_llm, resolve_adapter, resolve_model_source


def test_packaged_alias() -> None:
    assert resolve_model_source(settings.SMALL_LLM) == ModelSource("packaged", settings.SMALL_LLM)


def test_gguf_file_resolves_to_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tiny.Q4_K_M.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_source("tiny.Q4_K_M.gguf") == ModelSource("gguf", str(tmp_path / "tiny.Q4_K_M.gguf"))


def test_model_directory_needs_a_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="has no config.json"):
        resolve_model_source(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_source(str(tmp_path)) == ModelSource("dir", str(tmp_path))


@pytest.mark.parametrize("hub_id", ["gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "google/gemma-3-270m"])
def test_hub_ids(hub_id: str) -> None:
    assert resolve_model_source(hub_id) == ModelSource("hub", hub_id)


@pytest.mark.parametrize("name", ["missing.gguf", "./missing-model", "/no/such/model", "models/a/b"])
def test_missing_paths_name_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="model path not found: .*" + Path(name).name):
        resolve_model_source(name)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.gguf", "https://huggingface.co/Qwen/x/resolve/main/m.gguf"])
def test_urls_are_refused_with_what_to_do_instead(url: str) -> None:
    with pytest.raises(ModelLoadError, match="is a URL: download the file and pass its path"):
        resolve_model_source(url)


def test_other_files_are_rejected(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        resolve_model_source(str(weights))


def test_adapter_directory_resolution(tmp_path: Path) -> None:
    assert resolve_adapter(None) is None
    with pytest.raises(ModelLoadError, match=f"adapter directory not found: {tmp_path / 'nope'}"):
        resolve_adapter(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        resolve_adapter(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    assert resolve_adapter(str(tmp_path)) == str(tmp_path)


def test_load_llm_reports_missing_model_and_adapter_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=f"model path not found: {tmp_path / 'm.gguf'}"):
        load_llm(str(tmp_path / "m.gguf"))
    with pytest.raises(ModelLoadError, match="adapter directory not found"):
        load_llm(settings.SMALL_LLM, adapter=str(tmp_path / "adapter"))


def test_hub_id_offline_is_a_clear_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="not a local path and could not be loaded from the Hugging Face Hub"):
        load_llm("zhrag-tests/no-such-model", device="cpu")
