"""Shared fixtures: a tiny generated demo dataset, and a run folder with its proposals and backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from stages.datasets.demo import generate_demo
from tests.helpers import TINY, make_run, rcnn

# No per-example deadline: the first example pays for importing torchvision (seconds).
settings.register_profile("rcnn", deadline=None)
settings.load_profile("rcnn")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables as wide as they need, whatever the terminal running the tests (rich reads COLUMNS once)."""
    from rcnn_cli.console import err, out

    for console in (out, err):
        monkeypatch.setattr(console, "_width", 200)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A tiny demo dataset (3 train, 2 val, 3 test images); read-only for the tests."""
    return generate_demo(tmp_path_factory.mktemp("data") / "demo", TINY)


@pytest.fixture(scope="session")
def tiny_run(tiny_demo, tmp_path_factory) -> tuple[Path, Path]:
    """(tiny dataset, a run folder with its proposals and a tiny backbone pre-trained for 100 mini-batches,
    enough for the chains to learn something); copy before use."""
    run = tmp_path_factory.mktemp("runs") / "base"
    steps = [
        ["propose", "--split", "trainval", "--workers", "1", "--max-side", "160"],
        ["propose", "--split", "test", "--workers", "1", "--max-side", "160"],
        ["pretrain", "--iterations", "100", "--batch-size", "32", "--checkpoint-every", "50"],
    ]
    for step in steps:
        result = rcnn(*step, "--data", tiny_demo, "--run", run)
        assert result.exit_code == 0, result.output
    return tiny_demo, run


@pytest.fixture(scope="session")
def made(tiny_demo, tmp_path_factory) -> tuple[Path, Path]:
    """(config, run folder) of a finished ``rcnn run`` of ``RUN_CONFIG`` on the tiny demo, read-only for
    the tests: a copy would not do for ``rcnn run``, as its manifests say where it was made
    (``test_a_copied_run_folder_is_planned_anew``)."""
    return make_run(tiny_demo, tmp_path_factory.mktemp("pipeline"))


SLOW_FIXTURES = {"made", "trained", "studied"}
"""Fixtures that run a whole chain: a test that uses one is slow (``make test-quick`` leaves it out)."""


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
