"""The feature cache's HDF5 file: written image by image and resumable (``CacheWriter``), read image by
image (``FeatureCache``), grown by a feature point computed from another (``add_feature_point``), and
merged from the parts of several processes (``merge_caches``).

``RUN/<method>/features/<split>.h5`` holds, for every image of the split in split order, its non-difficult
ground-truth boxes followed by its proposals (schema in docs/run-folder.md):

- ``image_ids`` (I,) str, ``offsets`` (I + 1,) int64: image i owns rows offsets[i]:offsets[i + 1];
- ``boxes`` (N, 4) float32, ``gt_labels`` (N,) int16 (class of a ground-truth row, 0 for a proposal),
  ``class_iou`` (N, C) float32, ``target_boxes`` (N, 4) float32 (``stages.training.matching``);
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages.core.atomic import atomic_path, ensure_folder, writing
from stages.core.errors import UserError
from stages.core.progress import Progress
from stages.runs.layout import MethodLayout, RunLayout
from stages.training.matching import LabelledRegions

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


def images_in(path: Path) -> int:
    """Images in the cache ``path``, finished or partial (0 when there is none)."""
    for candidate in (path, path.with_name(f".{path.name}.partial")):
        if candidate.exists():
            try:
                with h5py.File(candidate, "r") as h5:
                    return int(h5.attrs.get("images_done", 0))
            except OSError:
                return 0
    return 0
