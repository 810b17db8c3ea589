"""The feature cache of the methods that classify cached region features (R-CNN, SPP-net): per-region
features of a split in one HDF5 file, written incrementally, resumable.

``RUN/<method>/features/<split>.h5`` holds, for every image of the split in split order, its non-difficult
ground-truth boxes followed by its proposals (schema in the README):

- ``image_ids`` (I,) str, ``offsets`` (I + 1,) int64: image i owns rows offsets[i]:offsets[i + 1];
- ``boxes`` (N, 4) float32, ``gt_labels`` (N,) int16 (class of a ground-truth row, 0 for a proposal),
  ``class_iou`` (N, C) float32, ``target_boxes`` (N, 4) float32 (see ``stages.regions``);
- one (N, D) dataset a feature point, float16 by default (R-CNN: ``fc7`` and ``pool5``).

Attributes record the format, the method, the classes, the options and the model it was made with. Until
the last image is written the file is ``.<split>.h5.partial`` beside its final name, with an
``images_done`` attribute; a rerun with the same stamp continues from there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from stages.core.atomic import atomic_path, ensure_folder, writing
from stages.core.errors import UserError
from stages.core.loading import loaded
from stages.core.progress import Progress
from stages.datasets.records import Dataset
from stages.networks.inputs import read_image
from stages.runs.layout import MethodLayout, RunLayout, parts_of, write_manifest
from stages.runs.processes import SINGLE, Processes, shared_task, spread
from stages.training.matching import LabelledRegions, label_regions

log = logging.getLogger("rcnn")

FORMAT = "rcnn-toolkit/features"
SCHEMA_VERSION = 1
CHUNK_BYTES = 1 << 20  # about 1 MiB a chunk, within HDF5's default chunk cache
_REGION_COLUMNS = ("boxes", "gt_labels", "class_iou", "target_boxes")


class CacheWriter:
    """Appends images to the partial cache file; ``finish`` renames it to its final name.

    ``stamp`` (JSON-able) identifies what the features were made with: a partial file with another stamp is
    discarded, one with the same stamp is continued after its last complete image.
    """

    def __init__(
        self,
        target: Path,
        stamp: Mapping,
        classes: Sequence[str],
        feature_dims: Mapping[str, int],
        dtype: str = "float16",
        image_ids: Sequence[str] = (),
        compression: str = "lzf",
    ):
        self.target = Path(target)
        self.compression = compression
        self.partial = ensure_folder(self.target.parent) / f".{self.target.name}.partial"
        self.stamp = json.dumps(dict(stamp), sort_keys=True, default=str)
        self.image_ids = list(image_ids)
        partial = self._open_partial()
        with writing(self.target):
            self.h5 = partial if partial is not None else self._create(classes, feature_dims, dtype)

    @property
    def images_done(self) -> int:
        return int(self.h5.attrs["images_done"])

    def _open_partial(self) -> h5py.File | None:
        if not self.partial.exists():
            return None
        try:
            h5 = h5py.File(self.partial, "a")
        except OSError as exc:
            log.warning("%s: unreadable partial cache (%s); starting over", self.partial, exc)
            self.partial.unlink()
            return None
        done = int(h5.attrs.get("images_done", 0))
        written_ids = h5["image_ids"].asstr()[:done].tolist() if "image_ids" in h5 else None
        if h5.attrs.get("stamp") != self.stamp or written_ids != self.image_ids[:done]:
            log.info("%s: made with other settings; starting over", self.partial)
            h5.close()
            self.partial.unlink()
            return None
        rows = int(h5["offsets"][done])
        for name in h5:  # drop what an interrupted image left past the last complete one
            h5[name].resize(done + 1 if name == "offsets" else done if name == "image_ids" else rows, axis=0)
        return h5

    def _create(self, classes: Sequence[str], feature_dims: Mapping[str, int], dtype: str) -> h5py.File:
        h5 = h5py.File(self.partial, "w")
        h5.attrs.update(
            {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "box_convention": "xyxy, 0-based, continuous (x2 - x1 = width)",
                "classes": json.dumps(list(classes)),
                "feature_points": json.dumps(list(feature_dims)),
                "stamp": self.stamp,
                "images_done": 0,
            }
        )
        h5.create_dataset(
            "image_ids", (0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"), chunks=(256,)
        )
        h5.create_dataset("offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(256,))
        columns = {
            "boxes": ((4,), np.float32),
            "gt_labels": ((), np.int16),
            "class_iou": ((len(classes),), np.float32),
            "target_boxes": ((4,), np.float32),
            **{name: ((dim,), np.dtype(dtype)) for name, dim in feature_dims.items()},
        }
        for name, (shape, column_dtype) in columns.items():
            _create_column(h5, name, 0, shape, column_dtype, self.compression)
        return h5

    def append(self, image_id: str, regions: LabelledRegions, features: Mapping[str, np.ndarray]) -> None:
        """Write one image's rows, then mark it done (a crash mid-image loses only that image)."""
        with writing(self.target):
            self._append(image_id, regions, features)

    def _append(self, image_id: str, regions: LabelledRegions, features: Mapping[str, np.ndarray]) -> None:
        h5, done = self.h5, self.images_done
        start = int(h5["offsets"][done])
        stop = start + len(regions.boxes)
        columns = {name: getattr(regions, name) for name in _REGION_COLUMNS} | dict(features)
        for name, values in columns.items():
            h5[name].resize(stop, axis=0)
            h5[name][start:stop] = values
        h5["image_ids"].resize(done + 1, axis=0)
        h5["image_ids"][done] = image_id
        h5["offsets"].resize(done + 2, axis=0)
        h5["offsets"][done + 1] = stop
        h5.attrs["images_done"] = done + 1
        h5.flush()

    def finish(self, attrs: Mapping) -> Path:
        """Record ``attrs``, close and move the file to its final name (atomically)."""
        with writing(self.target):
            self.h5.attrs.update({"complete": True, **attrs})
            self.h5.close()
        os.replace(self.partial, self.target)
        return self.target

    def close(self) -> None:
        self.h5.close()


def _create_column(
    h5: h5py.File, name: str, rows: int, shape: tuple[int, ...], dtype, compression: str
) -> h5py.Dataset:
    """A growable (rows, *shape) column, chunked to about ``CHUNK_BYTES``, compressed by ``compression``
    (one of ``COMPRESSIONS``) after the shuffle filter."""
    row_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    filters: dict[str, Any] = {
        "lzf": {"compression": "lzf", "shuffle": True},
        "gzip": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
        "none": {},
    }[compression]
    return h5.create_dataset(
        name,
        (rows, *shape),
        maxshape=(None, *shape),
        dtype=dtype,
        chunks=(int(np.clip(CHUNK_BYTES // row_bytes, 16, 1024)), *shape),
        **filters,
    )


def add_feature_point(
    target: Path,
    name: str,
    dim: int,
    compute: Callable[[np.ndarray], np.ndarray],
    reads: str,
    attrs: Mapping,
    progress: Progress,
    description: str,
    block_rows: int = 8192,
) -> Path:
    """Add feature point ``name`` (N, ``dim``) to the finished cache ``target``, computed block by block
    from its stored feature ``reads`` by ``compute`` ((n, D) -> (n, dim)); ``attrs`` update the file's
    attributes. Built in an atomic copy of ``target``, so a crash leaves the old cache as it was."""
    with atomic_path(target) as partial:
        shutil.copyfile(target, partial)
        with h5py.File(partial, "a") as h5:
            stored = h5[reads]
            compression = stored.compression or "none"
            column = _create_column(h5, name, len(stored), (dim,), stored.dtype, compression)
            with progress.task(description, len(stored), "rows") as advance:
                for start in range(0, len(stored), block_rows):
                    stop = min(start + block_rows, len(stored))
                    column[start:stop] = compute(stored[start:stop])
                    advance(stop - start)
            h5.attrs.update(
                {
                    "feature_points": json.dumps([*json.loads(h5.attrs["feature_points"]), name]),
                    **attrs,
                }
            )
    return Path(target)


@dataclass(frozen=True)
class ImageRows:
    """The rows of one image read from a cache: region columns and features (numpy arrays)."""

    image_id: str
    index: int
    columns: dict[str, np.ndarray]

    @property
    def proposals(self) -> np.ndarray:
        """(N,) bool: proposal rows (not ground truth)."""
        return self.columns["gt_labels"] == 0


class FeatureCache:
    """Read access to a finished cache, in blocks of whole images that bound memory."""

    def __init__(self, path: Path, command: str):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path}: not found; make it with `{command}`")
        try:
            self.h5 = h5py.File(self.path, "r")
            if self.h5.attrs.get("format") != FORMAT or not self.h5.attrs.get("complete"):
                raise UserError(f"{self.path}: not a complete feature cache; remake it with `{command}`")
            self.image_ids = self.h5["image_ids"].asstr()[:].tolist()
            self.offsets = self.h5["offsets"][:]
            self.classes = tuple(json.loads(self.h5.attrs["classes"]))
            self.feature_points = tuple(json.loads(self.h5.attrs["feature_points"]))
        except (OSError, KeyError) as exc:
            raise UserError(
                f"{self.path}: unreadable feature cache ({exc}); remake it with `{command}`"
            ) from None

    @classmethod
    def of(cls, method: MethodLayout, split: str, data: Path | None = None) -> FeatureCache:
        """The method's cache of ``split``; a missing file names the command that makes it (from the
        dataset at ``data``, when known)."""
        path = method.features(split)
        return cls(path, RunLayout(method.run).command_for(path, data))

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.h5.close()

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    def dim(self, name: str) -> int:
        return int(self.h5[name].shape[1])

    def blocks(self, columns: Sequence[str], max_rows: int = 65536) -> Iterator[tuple[np.ndarray, dict]]:
        """(image indices, {column: rows of those images}) for runs of whole images of at most ``max_rows``
        rows (an image with more rows comes alone): one contiguous read a column a block."""
        first = 0
        while first < len(self.image_ids):
            last = first + 1
            while last < len(self.image_ids) and self.offsets[last + 1] - self.offsets[first] <= max_rows:
                last += 1
            start, stop = int(self.offsets[first]), int(self.offsets[last])
            yield np.arange(first, last), {name: self.h5[name][start:stop] for name in columns}
            first = last

    def images(self, columns: Sequence[str], max_rows: int = 65536) -> Iterator[ImageRows]:
        """Each image's rows in split order, read block by block."""
        for indices, block in self.blocks(columns, max_rows):
            base = self.offsets[indices[0]]
            for index in indices:
                rows = slice(int(self.offsets[index] - base), int(self.offsets[index + 1] - base))
                yield ImageRows(self.image_ids[index], int(index), {k: v[rows] for k, v in block.items()})


def norm_sample(cache: FeatureCache, images: int, boxes: int, seed: int) -> dict[int, np.ndarray]:
    """The rows whose mean norm sets the feature scale: {image index: sorted row numbers within the image},
    up to ``boxes`` rows of each of up to ``images`` images chosen at random (rcnn_feature_stats.m)."""
    rng = np.random.default_rng(seed)
    sample = {}
    for index in np.sort(rng.permutation(len(cache.image_ids))[:images]):
        count = int(cache.offsets[index + 1] - cache.offsets[index])
        sample[int(index)] = np.sort(rng.permutation(count)[:boxes])
    return sample


def scale_from_norms(
    cache: FeatureCache, feature: str, norms: Sequence[np.ndarray], target_norm: float
) -> float:
    """``target_norm`` / the mean of the sampled rows' L2 norms."""
    mean_norm = float(np.concatenate(norms).mean()) if norms else 0.0
    if not mean_norm > 0:
        raise UserError(f"{cache.path}: the {feature} features are all zero; is the network trained?")
    return target_norm / mean_norm


def require_feature(cache: FeatureCache, feature: str) -> None:
    if feature not in cache.feature_points:
        raise UserError(f"{cache.path}: has no {feature} features (has {', '.join(cache.feature_points)})")


def feature_scale(
    cache: FeatureCache, feature: str, target_norm: float, images: int, boxes: int, seed: int
) -> float:
    """``target_norm`` / the mean L2 norm of ``feature`` over the rows of ``norm_sample``.

    The R-CNN release's feature scaling (rcnn_feature_stats.m), so one SVM C suits any network. A stage
    that reads the whole cache anyway takes the norms of the same rows in its own pass instead.
    """
    require_feature(cache, feature)
    norms = [
        np.linalg.norm(cache.h5[feature][rows + int(cache.offsets[index])].astype(np.float32), axis=1)
        for index, rows in norm_sample(cache, images, boxes, seed).items()
        if len(rows)
    ]
    return scale_from_norms(cache, feature, norms, target_norm)


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
    done = sum(procs.gather(_images_in(mine)))  # every process's images cached before an interruption
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


MERGE_BLOCK_BYTES = 64 << 20
"""How much of a column ``merge_caches`` holds in memory at a time."""


def merge_caches(parts: Sequence[Path], target: Path) -> Path:
    """Write the finished caches ``parts`` one after the other into the cache ``target`` (atomically):
    each column the parts' rows in order, offsets shifted, with the first part's attributes and column
    layout; copied in blocks of about ``MERGE_BLOCK_BYTES``."""
    handles = [h5py.File(part, "r") for part in parts]
    try:
        first = handles[0]
        with atomic_path(target) as tmp, writing(target), h5py.File(tmp, "w") as h5:
            h5.attrs.update(dict(first.attrs))
            h5.attrs["images_done"] = sum(int(part.attrs["images_done"]) for part in handles)
            for name, layout in first.items():
                sources = [part[name][1:] if name == "offsets" else part[name] for part in handles]
                leading = 1 if name == "offsets" else 0  # offsets start with one 0 for all the parts
                merged = h5.create_dataset(
                    name,
                    (leading + sum(len(source) for source in sources), *layout.shape[1:]),
                    maxshape=(None, *layout.shape[1:]),
                    dtype=layout.dtype,
                    chunks=layout.chunks,
                    compression=layout.compression,
                    compression_opts=layout.compression_opts,
                    shuffle=layout.shuffle,
                )
                merged[:leading] = 0
                row_bytes = layout.dtype.itemsize * int(np.prod(layout.shape[1:], dtype=np.int64))
                block = max(1, MERGE_BLOCK_BYTES // row_bytes)
                row, shift = leading, 0
                for part, source in zip(handles, sources, strict=True):
                    for start in range(0, len(source), block):
                        rows = source[start : start + block]
                        merged[row : row + len(rows)] = rows + shift if name == "offsets" else rows
                        row += len(rows)
                    shift += int(part["offsets"][-1])
    finally:
        for handle in handles:
            handle.close()
    return target


def _images_in(path: Path) -> int:
    """Images in the cache ``path``, finished or partial (0 when there is none)."""
    for candidate in (path, path.with_name(f".{path.name}.partial")):
        if candidate.exists():
            try:
                with h5py.File(candidate, "r") as h5:
                    return int(h5.attrs.get("images_done", 0))
            except OSError:
                return 0
    return 0


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
