"""Filling a feature cache (R-CNN, SPP-net): every image of a split decoded and labelled in DataLoader
workers, its regions through the method's extractor, written to ``stages.cache.files``'s HDF5 file; under
``torchrun`` a part a process, merged by rank 0 (``fill_cache``); the manifest and summary at the end
(``finish_cache``). What a method's cache holds and what made it is its ``CacheRecipe``."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from stages.cache.files import (
    CacheWriter,
    images_in,
    merge_caches,
)
from stages.cache.options import CacheOptions
from stages.core.loading import loaded
from stages.core.progress import Progress
from stages.datasets.records import Dataset
from stages.networks.inputs import read_image
from stages.runs.layout import describe_input, parts_of, write_manifest
from stages.runs.processes import SINGLE, Processes, shared_task, spread
from stages.training.matching import LabelledRegions, label_regions

log = logging.getLogger("rcnn")


@dataclass(frozen=True)
class ExtractSummary:
    """What an extraction wrote: images in the cache, images computed now, regions, file size, and the
    seconds of the extraction proper (``images_per_second`` is its rate)."""

    path: Path
    images: int
    computed: int
    rows: int
    bytes: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class CacheRecipe:
    """What a cache holds and what made it.

    stamp: identifies the settings and inputs the features depend on (a partial file with another stamp
    is started over); feature_dims: feature point -> width; dtype: stored precision; attrs: recorded in
    the file and in the manifest's results; options, inputs: the manifest's; compression: of the columns
    (it does not change what is read back, so it is not in the stamp).
    """

    stamp: Mapping[str, Any]
    feature_dims: Mapping[str, int]
    dtype: str
    attrs: Mapping[str, Any]
    options: Mapping[str, Any]
    inputs: Sequence[Path]
    compression: str = "lzf"

    @classmethod
    def of(
        cls,
        method: str,
        options: CacheOptions,
        dataset: Dataset,
        proposals: Path,
        network: Path | None,
        feature_dims: Mapping[str, int],
        attrs: Mapping[str, Any],
        **settings: Any,
    ) -> CacheRecipe:
        """The recipe of ``method``'s cache of ``dataset``'s split, from its extraction ``options``: the
        stamp holds the method's ``settings`` that shape its features, the stored and computed
        precisions, the ``network`` and ``proposals`` files read (their size and time) and the dataset."""
        network_input = describe_input(network) if network else None
        return cls(
            stamp={
                "method": method,
                **settings,
                "dtype": options.dtype,
                "precision": options.precision,
                "model": network_input,
                "proposals": describe_input(proposals),
                "root": str(dataset.root),
            },
            feature_dims=feature_dims,
            dtype=options.dtype,
            attrs=attrs,
            options={"method": method, **asdict(options)},
            inputs=[*([network] if network else []), proposals],
            compression=options.compression,
        )


class _LabelledImages(TorchDataset):
    """Image i of the split, decoded and labelled against its proposals (in a DataLoader worker)."""

    def __init__(self, dataset: Dataset, proposals: Mapping[str, np.ndarray], first: int):
        self.records, self.proposals, self.first = dataset.images, proposals, first
        self.num_classes = len(dataset.classes)

    def __len__(self) -> int:
        return len(self.records) - self.first

    def __getitem__(self, index: int) -> tuple[int, np.ndarray, LabelledRegions]:
        record = self.records[self.first + index]
        regions = label_regions(record, self.proposals[record.image_id], self.num_classes)
        return self.first + index, read_image(record.path), regions


RegionFeatures = Callable[[np.ndarray, np.ndarray], Mapping[str, torch.Tensor]]
"""``(image (H, W, 3) uint8, boxes (N, 4)) -> {feature point: (N, D)}``: a method's region features."""


def fill_cache(
    dataset: Dataset,
    proposals: Mapping[str, np.ndarray],
    target: Path,
    recipe: CacheRecipe,
    extractor: RegionFeatures,
    *,
    workers: int,
    description: str,
    progress: Progress,
    procs: Processes = SINGLE,
) -> tuple[int, float]:
    """Write every image's regions through ``extractor`` to the cache ``target``, images decoded and
    labelled by ``workers`` DataLoader processes, one image at a time, resuming after the last complete
    one. Returns (images computed now, their seconds), summed over the processes.

    Under ``torchrun`` each process fills its own part (``<folder>/.<split>.parts/<rank>-of-<n>.h5``, a
    cache of its shard of the images, resumable the same way) and rank 0 then merges the parts into
    ``target``: the arrays one process writes, in the same order.
    """
    if procs.world_size == 1:
        return _fill(dataset, proposals, target, recipe, extractor, workers, description, progress)
    folder = parts_of(target)
    mine = folder / f"{procs.rank}-of-{procs.world_size}.h5"
    if procs.writer and folder.exists():  # parts of a run with another number of processes
        for stale in folder.iterdir():
            if stale.is_file() and f"-of-{procs.world_size}." not in stale.name:
                stale.unlink()
    procs.wait()
    shard = replace(dataset, images=tuple(spread(dataset.images, procs)))
    done = sum(procs.gather(images_in(mine)))  # every process's images cached before an interruption
    if mine.exists():  # this process's part was finished before the interruption
        computed, seconds = 0, 0.0
        with shared_task(progress, procs, folder / "progress", description, len(dataset), "img", done):
            pass
    else:
        computed, seconds = _fill(
            shard,
            proposals,
            mine,
            recipe,
            extractor,
            workers,
            description,
            progress,
            procs,
            (len(dataset), done),
        )
    outcomes = procs.gather((computed, seconds))
    if procs.writer:
        parts = [folder / f"{rank}-of-{procs.world_size}.h5" for rank in range(procs.world_size)]
        merge_caches(parts, target)
        shutil.rmtree(folder)
    procs.wait()
    return sum(c for c, _ in outcomes), max(s for _, s in outcomes)


def _fill(
    dataset: Dataset,
    proposals: Mapping[str, np.ndarray],
    target: Path,
    recipe: CacheRecipe,
    extractor: RegionFeatures,
    workers: int,
    description: str,
    progress: Progress,
    procs: Processes = SINGLE,
    shown: tuple[int, int] | None = None,
) -> tuple[int, float]:
    """``fill_cache`` of one process: ``dataset``'s images into ``target``; ``shown``: (images, images
    done) of every process, for the progress display, when ``dataset`` is this process's shard."""
    writer = CacheWriter(
        target,
        recipe.stamp,
        dataset.classes,
        recipe.feature_dims,
        recipe.dtype,
        [r.image_id for r in dataset.images],
        recipe.compression,
    )
    first = writer.images_done
    if first:
        log.info("resuming: %d of %d images already cached", first, len(dataset))
    total, done = shown or (len(dataset), first)
    loader = loaded(_LabelledImages(dataset, proposals, first), workers)
    started = time.perf_counter()
    try:
        with shared_task(
            progress, procs, target.parent / "progress", description, total, "img", done
        ) as advance:
            for index, image, regions in loader:
                features = extractor(image, regions.boxes)
                writer.append(
                    dataset.images[index].image_id,
                    regions,
                    {name: values.numpy().astype(recipe.dtype) for name, values in features.items()},
                )
                advance(1, boxes=len(regions.boxes))
    except BaseException:
        writer.close()
        raise
    writer.finish(recipe.attrs)
    return len(dataset) - first, time.perf_counter() - started


def finish_cache(
    target: Path,
    dataset: Dataset,
    recipe: CacheRecipe,
    *,
    computed: int,
    extract_seconds: float,
    seconds: float,
) -> ExtractSummary:
    """Write a finished cache's manifest (``seconds``: the whole artifact's time) and summarise it."""
    with h5py.File(target, "r") as h5:
        rows = int(h5["offsets"][-1])
    summary = ExtractSummary(target, len(dataset), computed, rows, target.stat().st_size, extract_seconds)
    write_manifest(
        target,
        stage="extract-features",
        options=recipe.options,
        inputs=list(recipe.inputs),
        seconds=seconds,
        results={
            "images": len(dataset),
            "images_computed": computed,
            "rows": rows,
            "bytes": summary.bytes,
            **dict(recipe.attrs),
        },
    )
    return summary
