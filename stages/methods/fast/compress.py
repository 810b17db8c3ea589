"""``rcnn compress``: Fast R-CNN's fc6 and fc7 by truncated SVD (Girshick, ICCV 2015, section 3.1)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from stages.methods.fast.network import NAME, FastRcnn, compress, default_ranks, load_trained, save_fast
from stages.runs import RunLayout, write_manifest


@dataclass(frozen=True)
class CompressSummary:
    path: Path
    ranks: tuple[int, int]
    parameters_before: int
    parameters_after: int
    seconds: float


def compress_run(run: RunLayout, ranks: tuple[int | None, int | None] = (None, None)) -> CompressSummary:
    """Replace fc6 and fc7 of the run's Fast R-CNN by truncated SVDs and write the compressed model; ranks
    default to the paper's VGG16 ratios of the fc width (``default_ranks``)."""
    started = time.perf_counter()
    files = run.method(NAME)
    trained = load_trained(run)
    defaults = default_ranks(trained.module)
    chosen = (ranks[0] or defaults[0], ranks[1] or defaults[1])
    smaller = compress(trained.module, chosen)
    extra = {k: trained.meta[k] for k in ("scales", "max_size", "test_scale")}
    save_fast(files.compressed, smaller, trained.classes, **extra)
    before, after = _fc_parameters(trained.module), _fc_parameters(smaller)
    summary = CompressSummary(files.compressed, chosen, before, after, time.perf_counter() - started)
    write_manifest(
        files.compressed,
        stage="compress",
        options={"fc6_rank": chosen[0], "fc7_rank": chosen[1]},
        inputs=[trained.path],
        seconds=summary.seconds,
        results={"fc_parameters_before": before, "fc_parameters_after": after},
    )
    return summary


def _fc_parameters(model: FastRcnn) -> int:
    return sum(p.numel() for block in (model.fc6, model.fc7) for p in block.parameters())
