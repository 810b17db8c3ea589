"""The networks' choices that options and the command line name without loading torch: the precisions a
network computes in (``stages.networks.precision`` turns a name into torch's types)."""

from __future__ import annotations

from stages.core.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
"""float32; bfloat16 (CPUs with AVX-512 BF16 or AMX, GPUs from Ampere on); float16 (CUDA)."""


def check_precision(name: str) -> None:
    """A UserError unless ``name`` is one of ``PRECISIONS``."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name}: choose {', '.join(PRECISIONS)}")
