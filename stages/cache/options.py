"""The options of the cached-feature stages, torch- and HDF5-free so that the command line shows them at
once: the cache's (``CacheOptions``, which each method's extraction options extend), the SVMs' and the
box regressors'."""

from __future__ import annotations

from dataclasses import dataclass

from stages.core.errors import UserError
from stages.core.options import device_option, option, precision_option, workers_option
from stages.networks.options import check_precision

COMPRESSIONS = ("lzf", "gzip", "none")
"""How a cache's columns are compressed. lzf (the default) writes and reads SPP-net's 6,400-d pyramids
about twice as fast as gzip for a quarter more disk; gzip suits caches of tens of GB (VOC's)."""


@dataclass(frozen=True)
class CacheOptions:
    """What every feature extraction's options share: the stored precision (float16 by default: half the
    disk, and the SVMs and regressors do not notice), the compression (``COMPRESSIONS``), DataLoader
    workers, the device and the precision the network computes in (``stages.networks.precision``)."""

    dtype: str = option("float16", help="Stored precision of the features: float16 or float32.")
    compression: str = option("lzf", help="The cache's compression: lzf, gzip (smaller, slower) or none.")
    workers: int = workers_option()
    device: str = device_option()
    precision: str = precision_option()

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.dtype not in ("float16", "float32"):
            raise UserError(f"--dtype {self.dtype}: choose float16 or float32")
        if self.compression not in COMPRESSIONS:
            raise UserError(f"--compression {self.compression}: choose {', '.join(COMPRESSIONS)}")


@dataclass(frozen=True)
class SvmOptions:
    """The R-CNN release's settings (rcnn_train.m)."""

    C: float = option(0.001, help="SVM regularisation constant C.")
    bias_multiplier: float = 10.0
    positive_weight: float = option(2.0, help="Loss weight of positives.")
    negative_iou: float = option(0.3, help="Negatives: IoU below this with every object.")
    hard_threshold: float = -1.0
    easy_threshold: float = -1.2
    retrain_every: int = 2000
    target_norm: float = 20.0
    norm_sample_images: int = 200
    norm_sample_boxes: int = 200
    feature: str = "fc7"
    block_rows: int = 65536
    seed: int = 0


@dataclass(frozen=True)
class BboxOptions:
    """The R-CNN release's settings (rcnn_train_bbox_regressor.m)."""

    alpha: float = option(1000.0, help="Ridge regularisation (lambda).")
    min_iou: float = option(0.6, help="Train on regions whose best IoU exceeds this.")
    target_norm: float = 20.0
    norm_sample_images: int = 200
    norm_sample_boxes: int = 200
    block_rows: int = 65536
    seed: int = 0
