"""Mixed precision: the networks' convolutions and matrix products in bfloat16 or float16, the rest in
float32 (``torch.autocast`` chooses op by op: losses, softmax and reductions stay float32).

``fp32`` (the default) changes nothing. ``bf16`` has float32's range, so it needs no loss scaling; it is
fast on CPUs with AVX-512 BF16 or AMX and on GPUs from Ampere on. ``fp16`` is for CUDA: its small range
needs the loss scaled during training (``grad_scaler``), which torch does on GPUs only.
"""

from __future__ import annotations

import torch

from stages.core.errors import UserError
from stages.networks.options import check_precision

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""Each of ``PRECISIONS`` as torch's type."""


def check_supported(name: str, device: torch.device) -> None:
    """A UserError when ``device`` cannot compute in ``name`` (at speed)."""
    check_precision(name)
    if name == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA device; on CPUs use bf16")
    if name == "bf16" and not bf16_supported(device):
        raise UserError(f"--precision bf16: this {device.type.upper()} has no bfloat16 arithmetic; use fp32")


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: GPUs from Ampere on (not emulated), CPUs with
    AVX-512 BF16 or AMX, as oneDNN reports."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(name: str, device: torch.device) -> torch.autocast:
    """Run the enclosed forward passes in ``name`` on ``device`` (nothing changes for fp32); the caller
    has checked the pair once (``check_supported``), not at every batch."""
    return torch.autocast(device.type, dtype=DTYPES[name], enabled=name != "fp32")


def grad_scaler(name: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of a training step: active for fp16 (CUDA only: ``check_supported``), a
    pass-through otherwise."""
    return torch.amp.GradScaler(device.type, enabled=name == "fp16")


def pooling_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type RoI pooling runs in for features of ``dtype``: float32 for the half types (torchvision's
    CPU kernels have no bfloat16, and RoI coordinates in bfloat16 would be off by whole pixels); float32
    and float64 (gradcheck) stay as they are."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def pooling_input(features: torch.Tensor) -> torch.Tensor:
    """``features`` in ``pooling_dtype``."""
    return features.to(pooling_dtype(features.dtype))
