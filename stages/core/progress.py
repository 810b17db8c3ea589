"""How library loops report their advance without knowing who is watching.

Stages take a ``Progress``; the default reports nothing, the command line plugs in a rich display.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

Advance = Callable[..., None]
"""``advance(n=1, **fields)``: n more items done; fields (say ``loss=0.3``) are shown beside the bar."""


class Progress:
    """A silent progress reporter; subclasses display the tasks."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str = "it", done: int = 0) -> Iterator[Advance]:
        """Open a task of ``total`` items (None when unknown), ``done`` of them finished before (a
        resumed run's: shown, but not counted in the rate), and yield its ``advance`` function."""

        def advance(n: int = 1, **fields: Any) -> None:
            return None

        yield advance


SILENT = Progress()
