"""Items made ahead in a thread: the same items in the same order, errors raised in the caller, and a
caller that stops early stops the thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.core.loading import loaded


class Items:
    """Item i is i's square as an array; item ``bad`` fails with ``error``."""

    def __init__(self, count: int, bad: int | None = None, error: type[Exception] = UserError):
        self.count, self.bad, self.error = count, bad, error
        self.made: list[int] = []

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        if index == self.bad:
            raise self.error(f"item {index}: broken")
        self.made.append(index)
        return np.array([index * index])


def test_items_made_ahead_are_the_items_in_order():
    plain = [int(x[0]) for x in loaded(Items(9), 0)]
    ahead = [int(x[0]) for x in loaded(Items(9), 0, ahead=True)]
    assert plain == ahead == [i * i for i in range(9)]


@pytest.mark.parametrize("error", [UserError, ValueError])
def test_an_error_making_an_item_is_raised_in_the_caller_after_the_items_before_it(error):
    found = []
    with pytest.raises(error, match="item 3: broken"):
        for item in loaded(Items(9, bad=3, error=error), 0, ahead=True):
            found.append(int(item[0]))
    assert found == [0, 1, 4]


def test_a_caller_that_stops_early_stops_the_thread():
    items = Items(1000)
    iterator = loaded(items, 0, ahead=True)
    assert int(next(iterator)[0]) == 0
    iterator.close()
    deadline = time.monotonic() + 5
    while any(t.name == "rcnn-loading" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "rcnn-loading" for t in threading.enumerate())
    assert len(items.made) < 10  # a few ahead, not all of them
