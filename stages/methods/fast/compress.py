"""``rcnn compress``: Fast R-CNN's fc6 and fc7 by truncated SVD (Girshick, ICCV 2015, section 3.1)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stages.methods.fast.network import NAME, FastRcnn, compress, load_trained, save_fast
from stages.methods.fast.options import CompressOptions
from stages.runs.layout import RunLayout, write_manifest


@dataclass(frozen=True)
class CompressSummary:
    path: Path
    ranks: tuple[int, int]
    parameters_before: int
    parameters_after: int
    seconds: float


def compress_run(run: RunLayout, options: CompressOptions = CompressOptions()) -> CompressSummary:
    """Replace fc6 and fc7 of the run's Fast R-CNN by truncated SVDs and write the compressed model."""
    started = time.perf_counter()
    files = run.method(NAME)
    trained = load_trained(run)
    chosen = options.ranks(trained.module.spec.fc_dim)
    smaller = compress(trained.module, chosen)
    extra = {k: trained.meta[k] for k in ("scales", "max_size", "test_scale")}
    save_fast(files.compressed, smaller, trained.classes, **extra)
    before, after = _fc_parameters(trained.module), _fc_parameters(smaller)
    summary = CompressSummary(files.compressed, chosen, before, after, time.perf_counter() - started)
    write_manifest(
        files.compressed,
        stage="compress",
        options={**asdict(options), "ranks": list(chosen)},
        inputs=[trained.path],
        seconds=summary.seconds,
        results={"fc_parameters_before": before, "fc_parameters_after": after},
    )
    return summary


def _fc_parameters(model: FastRcnn) -> int:
    return sum(p.numel() for block in (model.fc6, model.fc7) for p in block.parameters())
