"""Items made in DataLoader worker processes, or ahead in a thread, with a user's error kept as the one
line it was.

A DataLoader raises a worker's exception again with the worker's whole traceback as its message, so an
unreadable image (a UserError in a worker) would reach the user as a page of text. Here items travel as
``(item, None)`` or ``(None, message)``, and the message is raised again in the main process as it was.
Without worker processes, items can be made by a thread a few ahead of the caller (``ahead``): decoding,
resizing and sampling (OpenCV, numpy) then overlap the network's work (torch); all release the GIL.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data._utils.collate import default_convert

from stages.core.errors import UserError


class _Carrying(TorchDataset):
    def __init__(self, items: TorchDataset, convert: bool):
        self.items, self.convert = items, convert

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, str | None]:
        try:
            item = self.items[index]
        except UserError as exc:
            return None, str(exc)
        return (default_convert(item) if self.convert else item), None


def _as_made(pair):
    return pair


def loaded(
    items: TorchDataset, workers: int, *, convert: bool = False, pin_memory: bool = False, ahead: bool = False
) -> Iterator:
    """``items[0], items[1], ...`` made by ``workers`` DataLoader processes (0: here), in order.

    ``convert`` turns numpy arrays into tensors as a DataLoader does by default; a UserError raised while
    making an item is raised here, unchanged. The loader's iterator is made at the call, when it draws its
    seed from torch's global generator (a resumed training run restores that generator after this call).
    With no workers and ``ahead``, a thread makes the items, at most ``AHEAD`` before they are asked for:
    for items made without torch (whose work would compete with the network's for the cores), and that
    do not draw from torch's global generator (the network's dropout does, in this thread).
    """
    loader = DataLoader(
        _Carrying(items, convert),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=_as_made,
    )
    pairs = iter(loader)
    return _unwrapped(_made_ahead(pairs) if ahead and not workers else pairs)


AHEAD = 2
"""Items a thread makes before they are asked for (``loaded`` without worker processes)."""

SWITCH_INTERVAL = 0.0005
"""Seconds one thread may hold the GIL while another waits for it, while a thread makes items (Python's
default is 0.005). Between its long torch calls the network's thread needs the GIL for microseconds; with
the default it waited up to 5 ms for the loading thread each time (Fast R-CNN's demo training: 64.5
instead of 69.1 ms an iteration)."""


def _made_ahead(items: Iterator) -> Iterator:
    """``items``, made by a thread that stays at most ``AHEAD`` items ahead; its exceptions are raised
    here. Closing the generator (the caller stopped early) stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()
    end = object()

    def make() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # raised again in the caller's thread
            ready.put((end, exc))
            return
        ready.put((end, None))

    thread = threading.Thread(target=make, name="rcnn-loading", daemon=True)
    interval = sys.getswitchinterval()
    try:
        sys.setswitchinterval(min(interval, SWITCH_INTERVAL))
        thread.start()
        while True:
            item, failure = ready.get()
            if item is end:
                if failure is not None:
                    raise failure
                return
            yield item
    finally:
        stop.set()
        sys.setswitchinterval(interval)


def _unwrapped(pairs: Iterator[tuple[Any, str | None]]) -> Iterator:
    for item, problem in pairs:
        if problem is not None:
            raise UserError(problem)
        yield item
