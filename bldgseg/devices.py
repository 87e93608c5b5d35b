"""``--device`` names (auto, cpu, cuda, cuda:N): told apart without importing torch unless CUDA may be there.

A CPU run on the OpenVINO engine never needs torch, whose import costs about a second; torch is imported only to
name a CUDA device, or for ``auto`` on a machine with an NVIDIA driver.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bldgseg.errors import DeviceError

if TYPE_CHECKING:
    import torch

__all__ = ["check_device", "device_type", "resolve_device"]


def device_type(device: Any) -> str:
    """``cpu`` or ``cuda`` for a ``--device`` value (or a ``torch.device``). ``auto`` imports torch only where
    an NVIDIA driver is installed."""
    if not isinstance(device, str):
        return device.type
    name = device.lower()
    if name == "cpu" or name.startswith("cuda"):
        return "cuda" if name.startswith("cuda") else "cpu"
    if name != "auto":
        raise DeviceError(f"device {device!r} is not understood; use auto, cpu, cuda or cuda:N")
    if not _may_have_cuda():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str) -> None:
    """Raise :class:`DeviceError` (with the fix) for a device this machine cannot use; torch-free for cpu/auto."""
    if device_type(name) == "cuda":
        resolve_device(name)


def resolve_device(name: Any = "auto") -> torch.device:
    """The ``torch.device`` of a ``--device`` value: ``auto`` picks the first CUDA device when there is one."""
    import torch

    if not isinstance(name, str):
        return name
    name = name.lower()
    if name == "auto":
        return torch.device("cuda" if _may_have_cuda() and torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: CUDA is not available here; use --device cpu (or auto)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0..cuda:N-1"
            )
        return device
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"device {name!r} is not understood; use auto, cpu, cuda or cuda:N")


def _may_have_cuda() -> bool:
    """False only where CUDA surely is not: torch not loaded yet and no NVIDIA driver on the machine."""
    return "torch" in sys.modules or Path("/proc/driver/nvidia").exists() or bool(shutil.which("nvidia-smi"))
