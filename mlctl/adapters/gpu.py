"""The only module that imports torch."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class TorchInfo:
    """What torch on this machine can use."""

    version: str
    cuda_available: bool
    cuda_version: str | None
    devices: tuple[str, ...]


def torch_info() -> TorchInfo | None:
    """What torch sees on this machine, or None when torch is not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

    available = bool(torch.cuda.is_available())
    devices = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if available else ()
    return TorchInfo(str(torch.__version__), available, torch.version.cuda, devices)
