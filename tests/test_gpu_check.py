"""`rcnn bench gpu-check`: its carried folder made here, and the check proven on the CPU from the working
tree without an install (`scripts/gpu-check`), as a lent GPU machine runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import pytest

from stages.check.gpu import CARRY_LIMIT, prepare_check_data
from tests.helpers import ROOT, TINY, assert_one_line_error, rcnn


@pytest.fixture(scope="module")
def carried(tmp_path_factory):
    """The carried folder, of the tiny demo: its split, proposals and packages."""
    return prepare_check_data(tmp_path_factory.mktemp("gpu-check") / "data", TINY)


def test_the_carried_folder_holds_the_split_its_proposals_and_the_missing_packages(carried):
    assert {path.name for path in carried.iterdir()} == {"demo", "proposals", "site"}
    assert {path.name for path in (carried / "proposals").glob("*.h5")} == {"trainval.h5", "test.h5"}
    assert (carried / "site" / "tomli_w" / "__init__.py").is_file()
    assert sum(path.stat().st_size for path in carried.rglob("*") if path.is_file()) < CARRY_LIMIT


def test_the_script_plans_every_short_run_on_the_carried_proposals_without_an_install(carried, tmp_path):
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [str(ROOT / "scripts" / "gpu-check"), "--device", "cpu", "--dry-run"]
    command += ["--data", str(carried), "--out", str(tmp_path / "out")]
    done = subprocess.run(
        command, env={**environment, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = json.loads((tmp_path / "out" / "gpu-check.json").read_text(encoding="utf-8"))
    assert [(row["part"], row["device"], row["status"]) for row in table["rows"]] == [("run", "cpu", "ok")]
    assert "proposals carried" in table["rows"][0]["note"]
    assert (tmp_path / "out" / "gpu-check.md").read_text(encoding="utf-8").startswith("# rcnn gpu-check")


def test_a_missing_carried_folder_is_one_line_with_the_command_that_makes_it(tmp_path):
    result = rcnn("bench", "gpu-check", "--device", "cpu", "--data", tmp_path / "none", "--dry-run")
    assert_one_line_error(result, "none", "not found", "--prepare")


def test_selective_search_without_opencv_contrib_is_one_line(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.delattr(cv2, "ximgproc")
    result = rcnn("propose", "--data", tiny_demo, "--split", "test", "--run", tmp_path / "run")
    assert_one_line_error(result, "contrib", "opencv-contrib-python-headless")
