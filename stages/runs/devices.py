"""Where the work runs: device choice, and the barrier that GPU timings need (the process group under
``torchrun`` is ``stages.runs.processes``'s)."""

from __future__ import annotations

import torch

from stages.core.errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: not a device name (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it times that work (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
