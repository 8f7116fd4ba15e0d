"""Device and dtype selection for local models.

Auto rules: CUDA → bfloat16 (float16 where the GPU lacks bf16), Apple MPS → float16, CPU → float32.
Both can be overridden by name; unknown or unavailable choices raise :class:`ConfigError`.
"""

from __future__ import annotations

import re

from zhrag.errors import ConfigError

DTYPES = ("bfloat16", "float16", "float32")
_DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def resolve_device(device: str | None = None) -> str:
    """The torch device name to load on: ``device`` checked for availability, or the best one present.

    Raises:
        ConfigError: ``device`` is not ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, or is not available here.
    """
    import torch

    if device is None:
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    name = device.strip().lower()
    if not _DEVICE_PATTERN.match(name):
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available")
    return name


def resolve_dtype(dtype: str | None, device: str) -> str:
    """The dtype name for ``device``: ``dtype`` validated, or the per-device default (see module doc).

    Raises:
        ConfigError: ``dtype`` is not one of :data:`DTYPES`.
    """
    if dtype is not None:
        name = dtype.strip().lower()
        if name not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}")
        return name
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"
