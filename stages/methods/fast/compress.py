"""``rcnn compress``: Fast R-CNN's fc6 and fc7 by truncated SVD (Girshick, ICCV 2015, section 3.1)."""

from __future__ import annotations

from stages.methods.fast.network import NAME, FastRcnn, load_trained, save_fast
from stages.networks.fast_rcnn import CompressSummary, compress_file
from stages.networks.options import CompressOptions
from stages.runs.layout import RunLayout


def compress_run(run: RunLayout, options: CompressOptions = CompressOptions()) -> CompressSummary:
    """Replace fc6 and fc7 of the run's Fast R-CNN by truncated SVDs and write the compressed model."""
    trained = load_trained(run)
    extra = {k: trained.meta[k] for k in ("scales", "max_size", "test_scale")}

    def save(path, model: FastRcnn) -> None:
        save_fast(path, model, trained.classes, **extra)

    return compress_file(trained, run.method(NAME).compressed, options, save)
