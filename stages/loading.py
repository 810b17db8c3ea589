"""Items made in DataLoader worker processes, with a user's error kept as the one line it was.

A DataLoader raises a worker's exception again with the worker's whole traceback as its message, so an
unreadable image (a UserError in a worker) would reach the user as a page of text. Here items travel as
``(item, None)`` or ``(None, message)``, and the message is raised again in the main process as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data._utils.collate import default_convert

from stages.errors import UserError


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


def loaded(items: TorchDataset, workers: int, *, convert: bool = False, pin_memory: bool = False) -> Iterator:
    """``items[0], items[1], ...`` made by ``workers`` DataLoader processes (0: here), in order.

    ``convert`` turns numpy arrays into tensors as a DataLoader does by default; a UserError raised while
    making an item is raised here, unchanged. The loader's iterator is made at the call, when it draws its
    seed from torch's global generator (a resumed training run restores that generator after this call).
    """
    loader = DataLoader(
        _Carrying(items, convert),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=_as_made,
    )
    return _unwrapped(iter(loader))


def _unwrapped(pairs: Iterator[tuple[Any, str | None]]) -> Iterator:
    for item, problem in pairs:
        if problem is not None:
            raise UserError(problem)
        yield item
