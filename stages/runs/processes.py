"""Stages over several processes (``torchrun``, one machine or many): exact shards of a split's images,
the parts each process writes, a progress count of them all, and the merge rank 0 makes.

Every process takes a contiguous run of the images (``Processes.shard``): together exactly the split,
each image once, unlike ``torch.utils.data.DistributedSampler``, which pads the shards to equal length
with repeated images. Each process saves what it finishes in a parts folder of the run (``ImageParts``),
so a killed run continues where it stopped; when all are done rank 0 merges the parts, in split order,
into the artifact one process writes, and removes them. The processes of several machines share the run
folder: it must be on a file system every one of them sees.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from stages.core.atomic import atomic_path, ensure_folder
from stages.core.progress import Advance, Progress
from stages.runs.devices import pick_device

T = TypeVar("T")

log = logging.getLogger("rcnn")

COLLECTIVE_TIMEOUT = timedelta(days=1)
"""How long a process waits for the others at a collective: a process that finished its shard waits for
the slowest one, and rank 0 alone merges the parts while the others wait."""


@dataclass(frozen=True)
class Processes:
    """This process among the ``world_size`` of a run (one, without ``torchrun``): ``local_world_size``
    of them on this machine share its cores."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def writer(self) -> bool:
        """Whether this process writes the merged artifact and its manifest (rank 0)."""
        return self.rank == 0

    @property
    def cores(self) -> int:
        """This process's share of the machine's cores."""
        return max(1, (os.cpu_count() or 1) // self.local_world_size)

    def shard(self, count: int) -> range:
        """This process's positions among ``count`` items: a contiguous run; the first ``count % world_size``
        processes take one item more than the others."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def wait(self) -> None:
        """Wait until every process gets here."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, value: T) -> list[T]:
        """Every process's ``value``, in rank order."""
        return _all_gather(value, self.world_size)

    def from_writer(self, value: T | None) -> T:
        """Rank 0's ``value`` on every process (the others pass None): what the stage returns."""
        found = self.gather(value)[0]
        assert found is not None, "rank 0 passes its result"
        return found


SINGLE = Processes()


@contextlib.contextmanager
def processes(device: str = "cpu") -> Iterator[Processes]:
    """This process's place in the run: under ``torchrun`` it joins (or uses the enclosing ``rcnn run``'s)
    process group, whose collectives wait up to ``COLLECTIVE_TIMEOUT``; the one way any stage, training
    included, takes part in a run of several processes."""
    with _process_group(device) as (rank, world_size, chosen):
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        yield Processes(rank, world_size, local if world_size > 1 else 1, chosen)


@contextlib.contextmanager
def _process_group(device_name: str) -> Iterator[tuple[int, int, torch.device]]:
    """(rank, world size, device) of this process. Under ``torchrun`` (WORLD_SIZE > 1) it joins the
    process group: NCCL with one GPU a process (LOCAL_RANK) when CUDA is used, gloo on CPUs; a group an
    enclosing caller joined (``rcnn run``) is used as it is. Its collectives wait up to
    ``COLLECTIVE_TIMEOUT``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world_size == 1:
        yield 0, 1, device
        return
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if dist.is_initialized():
        yield dist.get_rank(), world_size, device
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        yield dist.get_rank(), world_size, device
        dist.barrier()  # no process tears the group down while another is still in a collective with it
    finally:
        dist.destroy_process_group()


def _all_gather(value: T, world_size: int) -> list[T]:
    """Every process's ``value``, in rank order (just ``[value]`` on one process)."""
    if world_size == 1:
        return [value]
    import torch.distributed as dist

    found: list[T] = [value] * world_size
    dist.all_gather_object(found, value)
    return found


PART_IMAGES = 16
"""Images a process saves in one part: a killed run loses at most this many of each process's."""


class ImageParts:
    """Per-image results saved in small ``.npz`` parts in ``folder``, by every process of a run.

    An image's result is a mapping of named arrays (a proposals' ``boxes``; detections' ``boxes``,
    ``scores``, ``labels``), rows of one image per array. ``stamp`` (JSON-able) records what the results
    depend on: a folder made with another one is discarded. Every ``PART_IMAGES`` images a process writes
    what it has as one part, atomically.
    """

    def __init__(self, folder: Path, stamp: Mapping[str, Any], procs: Processes = SINGLE):
        self.folder, self.procs, self.every = Path(folder), procs, PART_IMAGES
        self.pending: dict[str, Mapping[str, np.ndarray]] = {}
        if procs.writer:
            recorded = folder / "stamp.json"
            if folder.exists() and (not recorded.is_file() or json.loads(recorded.read_text()) != stamp):
                shutil.rmtree(folder)
            ensure_folder(folder)
            with atomic_path(recorded) as tmp:
                tmp.write_text(json.dumps(stamp, sort_keys=True, default=str))
        procs.wait()

    def image_ids(self) -> set[str]:
        """The finished images, whichever process made them (their arrays are not read)."""
        done: set[str] = set()
        for part in self.folder.glob("part-*.npz"):
            with np.load(part) as data:
                done.update(data["image_ids"].tolist())
        return done

    def load(self) -> dict[str, dict[str, np.ndarray]]:
        """Every finished image's arrays, whichever process made them."""
        done: dict[str, dict[str, np.ndarray]] = {}
        for part in sorted(self.folder.glob("part-*.npz")):
            with np.load(part) as data:
                ids = data["image_ids"].tolist()
                names = [key.removesuffix(".offsets") for key in data.files if key.endswith(".offsets")]
                for name in names:
                    offsets, rows = data[f"{name}.offsets"], data[name]
                    for i, image_id in enumerate(ids):
                        done.setdefault(image_id, {})[name] = rows[offsets[i] : offsets[i + 1]]
        return done

    def add(self, image_id: str, arrays: Mapping[str, np.ndarray]) -> None:
        self.pending[image_id] = arrays
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write the pending images as one part."""
        if not self.pending:
            return
        ids = list(self.pending)
        payload: dict[str, np.ndarray] = {"image_ids": np.array(ids)}
        for name in self.pending[ids[0]]:
            arrays = [np.asarray(self.pending[i][name]) for i in ids]
            payload[f"{name}.offsets"] = np.cumsum([0] + [len(a) for a in arrays])
            payload[name] = np.concatenate(arrays)
        part = self.folder / f"part-{self.procs.rank}-{time.time_ns()}.npz"
        with atomic_path(part) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **payload)  # type: ignore[arg-type]
        self.pending.clear()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def shared_task(
    progress: Progress,
    procs: Processes,
    board: Path,
    description: str,
    total: int,
    unit: str = "it",
    done: int = 0,
) -> Iterator[Advance]:
    """A progress task over the items of every process: rank 0 shows the count of them all.

    Each process writes how many items it has done to ``board``/<rank> (at most twice a second); rank 0's
    display adds the others' counts as they change, also while it waits for them at the end, where every
    process meets. ``done``: items finished before (a resumed run), counted once.
    """
    if procs.world_size == 1:
        with progress.task(description, total, unit, done) as advance:
            yield advance
        return
    mine = ensure_folder(board) / str(procs.rank)
    count, written = [0], [0.0]

    def publish(force: bool = False) -> None:
        if force or time.monotonic() - written[0] > 0.5:
            with atomic_path(mine) as tmp:
                tmp.write_text(str(count[0]))
            written[0] = time.monotonic()

    publish(force=True)  # 0, so that no count of an earlier, interrupted run is read
    procs.wait()
    if not procs.writer:

        def advance_here(n: int = 1, **fields: Any) -> None:
            count[0] += n
            publish()

        yield advance_here
        publish(force=True)
        procs.wait()
        return
    others = [board / str(rank) for rank in range(1, procs.world_size)]
    with progress.task(description, total, unit, done) as advance:
        lock, shown, stop = threading.Lock(), [0], threading.Event()

        def show_others() -> None:
            while not stop.wait(0.5):
                reported = sum(_count(path) for path in others)
                with lock:
                    advance(reported - shown[0])
                    shown[0] = reported

        def advance_writer(n: int = 1, **fields: Any) -> None:
            count[0] += n
            with lock:
                advance(n, **fields)

        watcher = threading.Thread(target=show_others, name="rcnn-progress", daemon=True)
        watcher.start()
        try:
            yield advance_writer
            procs.wait()  # every process is done, its last count on the board
        finally:
            stop.set()
            watcher.join()
        advance(sum(_count(path) for path in others) - shown[0])


def _count(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


class ImageShard(Generic[T]):
    """The frame of a stage that works image by image over the run's processes: this process's shard of
    ``items`` less those finished before an interruption (``todo``; ``key`` gives an item's image id),
    the parts they go to (``parts``: ``ImageParts`` in ``folder``, discarded unless made with ``stamp``),
    and how many of every process's items were done before (``done``). Work in ``working``; rank 0
    merges the parts after it (``ImageParts.load``)."""

    def __init__(
        self,
        procs: Processes,
        folder: Path,
        stamp: Mapping[str, Any],
        items: Sequence[T],
        key: Callable[[T], str],
    ):
        self.procs, self.total = procs, len(items)
        self.parts = ImageParts(folder, stamp, procs)
        finished = self.parts.image_ids()
        self.todo = [item for item in spread(items, procs) if key(item) not in finished]
        self.done = sum(key(item) in finished for item in items)
        if self.done and procs.writer:
            log.info("resuming: %d of %d images already done", self.done, self.total)

    @contextlib.contextmanager
    def working(self, progress: Progress, description: str, unit: str = "img") -> Iterator[Advance]:
        """A progress task over every process's items (``shared_task``); the parts flushed however the
        block ends."""
        board = self.parts.folder / "progress"
        with shared_task(progress, self.procs, board, description, self.total, unit, self.done) as advance:
            try:
                yield advance
            finally:
                self.parts.flush()


def spread(items: Sequence[T], procs: Processes) -> list[T]:
    """This process's exact shard of ``items`` (``Processes.shard``)."""
    return [items[i] for i in procs.shard(len(items))]
