"""The networks' choices that options and the command line name without loading torch: the precisions a
network computes in (``stages.networks.precision`` turns a name into torch's types), and the ranks of
Fast R-CNN's truncated fc layers (``stages.networks.fast_rcnn.compress``)."""

from __future__ import annotations

from dataclasses import dataclass

from stages.core.errors import UserError
from stages.core.options import option

PRECISIONS = ("fp32", "bf16", "fp16")
"""float32; bfloat16 (CPUs with AVX-512 BF16 or AMX, GPUs from Ampere on); float16 (CUDA)."""


def check_precision(name: str) -> None:
    """A UserError unless ``name`` is one of ``PRECISIONS``."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name}: choose {', '.join(PRECISIONS)}")


@dataclass(frozen=True)
class CompressOptions:
    """Singular values kept of fc6 and fc7; None: the paper's VGG16 ratios of the width (1024 and 256 of
    4096, ``default_ranks``)."""

    fc6_rank: int | None = option(None, help="Singular values kept of fc6 (default: its width / 4).")
    fc7_rank: int | None = option(None, help="Singular values kept of fc7 (default: its width / 16).")

    def __post_init__(self) -> None:
        if min(r for r in (self.fc6_rank, self.fc7_rank, 1) if r is not None) < 1:
            raise UserError("ranks: give positive numbers of singular values")

    def ranks(self, width: int) -> tuple[int, int]:
        """The ranks kept of fc6 and fc7 of a network ``width`` outputs wide: those given, otherwise the
        paper's VGG16 ratios (1024 and 256 of 4096: a quarter and a sixteenth)."""
        return self.fc6_rank or max(1, width // 4), self.fc7_rank or max(1, width // 16)
