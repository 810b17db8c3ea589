"""R-CNN's feature-extraction options, torch-free so that the command line shows them at once."""

from __future__ import annotations

from dataclasses import dataclass

from stages.cache.options import CacheOptions


@dataclass(frozen=True)
class ExtractOptions(CacheOptions):
    """R-CNN's feature caching: ``batch_size`` warped regions a forward pass."""

    batch_size: int = 256
