"""R-CNN on the command line, on the tiny dataset: fine-tuning, features (resumed after an interruption),
SVMs, box regressors, evaluation, detection, report."""

import contextlib
import json
import shutil

import cv2
import h5py
import numpy as np
import pytest

from stages.core.progress import Progress
from stages.datasets.formats import load_dataset
from stages.detections.files import read_detections
from stages.methods.rcnn.features import extract_features
from stages.runs.layout import RunLayout
from tests.helpers import rcnn, run_steps

pytestmark = pytest.mark.slow  # torchrun, SIGKILL or a whole chain: `make test-quick` leaves it out


def test_the_rcnn_chain_learns_its_training_split(tiny_run, tmp_path):
    """The chain fits the five images it was trained on: a pipeline that mixed up labels, boxes or scores
    anywhere would not (its mAP there after 3 iterations instead of 100 is below 0.1)."""
    data, base = tiny_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    on = ("--data", data)
    output = run_steps(
        run,
        ("finetune", "--method", "rcnn", *on, "--iterations", "100", "--checkpoint-every", "50"),
        ("extract-features", "--method", "rcnn", *on, "--split", "trainval"),
        ("extract-features", "--method", "rcnn", *on, "--split", "test"),
        ("train-svm", "--method", "rcnn"),
        ("train-bbox", "--method", "rcnn"),
        ("evaluate", "--method", "rcnn", *on, "--split", "trainval"),
        ("evaluate", "--method", "rcnn", *on, "--split", "test"),
    )
    assert "mAP (voc07)" in output and "mAP without box regression" in output
    files = RunLayout(run).method("rcnn")
    fitted = json.loads(files.results("trainval").read_text())
    assert fitted["method"] == "rcnn" and fitted["box_regression"] is True and fitted["map"] > 0.25
    assert files.pr_curves("test").is_file() and len(read_detections(files.detections("test"))) > 0
    assert_extraction_resumes(data, RunLayout(run))
    image = next((data / "JPEGImages").glob("*.jpg"))
    gray = tmp_path / "gray.png"  # a grayscale PNG works as well as a colour JPEG
    cv2.imwrite(str(gray), cv2.imread(str(image), cv2.IMREAD_GRAYSCALE))
    out = tmp_path / "out"
    result = rcnn(
        "detect", image, gray, "--run", run, "--method", "rcnn", "--out", out, "--score-thresh", "-100"
    )
    assert result.exit_code == 0, result.output
    for stem in (image.stem, "gray"):
        assert (out / f"{stem}.png").is_file() and len(read_detections(out / f"{stem}.json")) > 0
    result = rcnn("report", "--run", run)
    assert result.exit_code == 0 and "rcnn/features/trainval.h5" in result.output and "total" in result.output
    assert "R-CNN" in result.output and f"{fitted['map']:.3f}" in result.output


class _InterruptAfterOne(Progress):
    """Ctrl-C as soon as the first image has been written."""

    def task(self, description, total, unit="it", done=0):
        @contextlib.contextmanager
        def managed():
            def advance(n=1, **fields):
                if fields:  # an image was written
                    raise KeyboardInterrupt

            yield advance

        return managed()


def assert_extraction_resumes(data, run: RunLayout):
    """Interrupt feature extraction after one image; the rerun continues and gives the same file."""
    cache = run.method("rcnn").features("test")
    with h5py.File(cache) as h5:
        expected = {name: h5[name][:] for name in ("fc7", "pool5", "boxes", "offsets")}
    cache.unlink()
    dataset = load_dataset(data, "test")
    with pytest.raises(KeyboardInterrupt):
        extract_features(dataset, run, progress=_InterruptAfterOne())
    assert not cache.exists() and (cache.parent / ".test.h5.partial").exists()
    summary = extract_features(dataset, run)
    assert summary.computed == len(dataset) - 1
    with h5py.File(cache) as h5:
        for name, values in expected.items():
            np.testing.assert_array_equal(h5[name][:], values)
