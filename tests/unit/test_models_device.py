"""Device and dtype resolution (availability faked through torch's own probes)."""

from __future__ import annotations

import pytest
import torch

from zhrag.errors import ConfigError
from zhrag.models import resolve_device, resolve_dtype


@pytest.fixture
def hardware(monkeypatch: pytest.MonkeyPatch):
    """Set which accelerators torch reports: ``hardware(cuda=..., mps=..., bf16=..., cuda_count=...)``."""

    def set_hardware(*, cuda: bool = False, mps: bool = False, bf16: bool = True, cuda_count: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count if cuda else 0)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_hardware


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, False, "cuda"), (True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(hardware, cuda: bool, mps: bool, expected: str) -> None:
    hardware(cuda=cuda, mps=mps)
    assert resolve_device(None) == expected


@pytest.mark.parametrize(
    ("device", "bf16", "expected"),
    [("cuda", True, "bfloat16"), ("cuda:0", True, "bfloat16"), ("cuda", False, "float16"),
     ("mps", True, "float16"), ("cpu", True, "float32")],
)
def test_auto_dtype_per_device(hardware, device: str, bf16: bool, expected: str) -> None:
    hardware(cuda=True, mps=True, bf16=bf16)
    assert resolve_dtype(None, device) == expected


def test_explicit_choices_override_the_defaults(hardware) -> None:
    hardware(cuda=True, mps=True, cuda_count=2)
    assert resolve_device("CPU") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("mps") == "mps"
    assert resolve_dtype("float32", "cuda") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_device_is_a_config_error(hardware, device: str) -> None:
    hardware(cuda=True)
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device(device)


def test_unavailable_devices_are_config_errors(hardware) -> None:
    hardware(cuda=False, mps=False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="MPS is not available"):
        resolve_device("mps")
    hardware(cuda=True, cuda_count=1)
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("dtype", ["fp16", "int8", "float64"])
def test_unknown_dtype_is_a_config_error(dtype: str) -> None:
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype(dtype, "cpu")
