"""Where the work runs: device choice, GPU timing barriers, and the process group under ``torchrun``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import torch

from stages.core.errors import UserError

T = TypeVar("T")


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


@contextmanager
def distributed(
    device_name: str, timeout: timedelta | None = None
) -> Iterator[tuple[int, int, torch.device]]:
    """(rank, world size, device) of this process. Under ``torchrun`` (WORLD_SIZE > 1) it joins the
    process group: NCCL with one GPU a process (LOCAL_RANK) when CUDA is used, gloo on CPUs; a group an
    enclosing caller joined (``rcnn run``) is used as it is. ``timeout``: of its collectives."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world_size == 1:
        yield 0, 1, device
        return
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if dist.is_initialized():
        yield dist.get_rank(), world_size, device
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    try:
        yield dist.get_rank(), world_size, device
        dist.barrier()  # no process tears the group down while another is still in a collective with it
    finally:
        dist.destroy_process_group()


def all_gather(value: T, world_size: int) -> list[T]:
    """Every process's ``value``, in rank order (just ``[value]`` on one process)."""
    if world_size == 1:
        return [value]
    import torch.distributed as dist

    found: list[T] = [value] * world_size
    dist.all_gather_object(found, value)
    return found
