"""What GPUs this machine has: cheaply, from the NVIDIA driver (never loading torch), or as torch sees them.

The only module that imports torch.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The NVIDIA kernel driver's view: one folder per GPU (named by its PCI bus id), each with an
#: ``information`` file holding a ``Model:`` line. Present wherever the driver is loaded, and in
#: containers given GPUs by the NVIDIA container toolkit.
PROC_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class GpuSighting:
    """The NVIDIA GPUs seen on this machine, and how they were seen."""

    names: tuple[str, ...] = ()
    #: Where they were seen ("/proc/driver/nvidia/gpus", "nvidia-smi"), or where they were looked for.
    source: str = ""

    @property
    def count(self) -> int:
        return len(self.names)

    def describe(self) -> str:
        """In words: ``1 NVIDIA GPU seen (NVIDIA H200, by nvidia-smi)``, or ``no NVIDIA GPU seen (...)``."""
        if not self.names:
            return f"no NVIDIA GPU seen ({self.source})"
        kinds = ", ".join(sorted(set(self.names)))
        return f"{self.count} NVIDIA GPU{'s' if self.count > 1 else ''} seen ({kinds}, by {self.source})"


def seen_gpus(
    proc_gpus: Path = PROC_GPUS, nvidia_smi: str | None = "nvidia-smi", timeout_s: float = 5.0
) -> GpuSighting:
    """The NVIDIA GPUs of this machine, from the driver's /proc files, else from ``nvidia-smi -L``.

    Cheap (a directory listing, at worst one short process) and never imports torch, so that
    ``mlctl new`` and ``mlctl doctor`` can ask it freely.
    """
    try:
        folders = sorted(p for p in proc_gpus.iterdir() if p.is_dir())
    except OSError:
        folders = []
    if folders:
        return GpuSighting(tuple(_proc_model(folder) for folder in folders), str(proc_gpus))
    binary = shutil.which(nvidia_smi) if nvidia_smi else None
    if binary is None:
        return GpuSighting((), f"no {proc_gpus}, no nvidia-smi")
    try:
        done = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return GpuSighting((), "nvidia-smi did not answer")
    names = parse_nvidia_smi_list(done.stdout) if done.returncode == 0 else ()
    return GpuSighting(names, "nvidia-smi" if names else "nvidia-smi lists none")


def _proc_model(folder: Path) -> str:
    try:
        text = (folder / "information").read_text(errors="replace")
    except OSError:
        return "NVIDIA GPU"
    found = re.search(r"^Model:\s*(.+?)\s*$", text, re.MULTILINE)
    return found.group(1) if found else "NVIDIA GPU"


def parse_nvidia_smi_list(text: str) -> tuple[str, ...]:
    """The GPU names in ``nvidia-smi -L`` output: lines like ``GPU 0: NVIDIA H200 (UUID: GPU-...)``."""
    return tuple(m.group(1).strip() for m in re.finditer(r"^GPU \d+: (.+?)(?: \(UUID: [^)]*\))?\s*$", text, re.M))


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
