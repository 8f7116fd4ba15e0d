"""Dequantize GGUF models once and keep them as safetensors model directories.

Loading a GGUF file with transformers dequantizes every tensor (about a minute for Gemma-3-270M on
two CPU cores). The result is saved under ``settings.cache_dir()/models/<name>-<sha256 prefix>/``
and every later load, in any process, reads that directory instead (a few seconds). The directory
is written to a temporary sibling first and renamed into place, so an interrupted first run never
leaves a half-written cache behind.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

from zhrag import settings
from zhrag.errors import ModelLoadError
from zhrag.models.failures import first_line
from zhrag.models.packaged import PACKAGED_MODELS, packaged_gguf, packaged_model

logger = logging.getLogger(__name__)

_SHA_PREFIX = 12


def models_cache_dir() -> Path:
    """Parent folder of the dequantized model directories."""
    return settings.cache_dir() / "models"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_model_dir(name: str, sha256: str) -> Path:
    """The cache directory of the GGUF model ``name`` (file stem) with content hash ``sha256``."""
    return models_cache_dir() / f"{name}-{sha256[:_SHA_PREFIX]}"


def packaged_model_dir(alias: str) -> tuple[Path, bool]:
    """The dequantized directory of the packaged model ``alias``, creating it on first use; and whether it existed.

    The GGUF file is assembled and checked once (``zhrag.models.packaged``); its recorded SHA-256 names the
    cache directory, so a cache hit needs no hashing.
    """
    model = packaged_model(alias)
    if model is None:
        raise ModelLoadError(f"unknown packaged model {alias!r}: use one of {', '.join(PACKAGED_MODELS)}")
    target = cached_model_dir(Path(model.file_name).stem, model.sha256)
    if target.is_dir():
        return target, True
    gguf_path, _ = packaged_gguf(alias)
    dequantize_to(gguf_path, target)
    return target, False


def gguf_model_dir(gguf_path: Path) -> tuple[Path, bool]:
    """The dequantized directory of a GGUF file, creating it on first use; and whether it existed."""
    target = cached_model_dir(gguf_path.stem, file_sha256(gguf_path))
    if target.is_dir():
        return target, True
    dequantize_to(gguf_path, target)
    return target, False


def dequantize_to(gguf_path: Path, target: Path) -> None:
    """Load ``gguf_path`` with transformers and save it, dequantized (float32), as a model directory ``target``.

    ``save_pretrained`` refuses a GGUF-loaded model, so a fresh model is built from the same config
    without its ``quantization_config`` and given the dequantized state dict.

    Raises:
        ModelLoadError: transformers cannot read the file (unsupported architecture or corrupt file).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s once into %s (about a minute)", gguf_path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".partial", dir=target.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        except Exception as error:  # any failure to parse a user-supplied file (struct, value, key errors)
            raise ModelLoadError(f"cannot load GGUF model {gguf_path}: {first_line(error)}") from error
        config = copy.deepcopy(gguf_model.config)
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        del gguf_model
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as any other
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another process finishing first is fine; anything else is not
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
