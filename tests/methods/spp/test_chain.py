"""SPP-net on the command line, on the tiny dataset: pyramids, fc fine-tuning, fc7 from the cached
pyramids, SVMs, box regressors, evaluation, detection."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from stages.methods.spp.features import SppExtractor
from stages.methods.spp.network import load_spp
from stages.networks.inputs import read_image
from stages.runs.layout import RunLayout, read_manifest
from tests.helpers import rcnn, run_steps

pytestmark = pytest.mark.slow  # torchrun, SIGKILL or a whole chain: `make test-quick` leaves it out


def test_the_spp_chain_learns_its_training_split(tiny_run, tmp_path):
    data, base = tiny_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    files = RunLayout(run).method("spp")
    on, scales = ("--data", data), ("--scales", "96,160")
    first = ("extract-features", "--method", "spp", *on, "--split", "trainval", *scales)
    run_steps(run, (*first, "--before-finetuning"))
    with h5py.File(files.features("trainval")) as h5:
        assert "pyramid" in h5 and "fc7" not in h5 and h5["pyramid"].shape[1] == 128 * 50
        pyramids = h5["pyramid"][:]
    pyramid_seconds = json.loads(files.features("trainval").with_suffix(".manifest.json").read_text())[
        "seconds"
    ]
    run_steps(
        run,
        (
            "finetune",
            "--method",
            "spp",
            *on,
            "--iterations",
            "100",
            "--learning-rate",
            "0.01",
            "--checkpoint-every",
            "50",
        ),
        ("extract-features", "--method", "spp", *on, "--split", "trainval", *scales),
        ("extract-features", "--method", "spp", *on, "--split", "test", *scales),
        ("train-svm", "--method", "spp"),
        ("train-bbox", "--method", "spp"),
        ("evaluate", "--method", "spp", *on, "--split", "trainval"),
        ("evaluate", "--method", "spp", *on, "--split", "test"),
    )
    assert_fc7_from_cached_pyramids(data, RunLayout(run), pyramids)
    # the fc7 pass extends the pyramid cache, and its manifest counts the time of both
    assert read_manifest(files.features("trainval"))["seconds"] > pyramid_seconds
    fitted = json.loads(files.results("trainval").read_text())
    assert fitted["method"] == "spp" and fitted["map"] > 0.4
    image = next((data / "JPEGImages").glob("*.jpg"))
    out = tmp_path / "spp-out"
    result = rcnn("detect", image, "--run", run, "--method", "spp", "--out", out, "--score-thresh", "-100")
    assert result.exit_code == 0, result.output
    assert (out / f"{image.stem}.png").is_file()


def assert_fc7_from_cached_pyramids(data, run: RunLayout, pyramids):
    """After fine-tuning, trainval's fc7 comes from the pyramids cached before it (kept as they were),
    and equals fc7 computed from the image."""
    cache = run.method("spp").features("trainval")
    with h5py.File(cache) as h5:
        assert h5.attrs["with_fc7"] and json.loads(h5.attrs["feature_points"]) == ["pyramid", "fc7"]
        assert np.array_equal(h5["pyramid"][:], pyramids)
        image_id, rows = h5["image_ids"].asstr()[0], slice(*h5["offsets"][:2])
        boxes, stored = h5["boxes"][rows], h5["fc7"][rows].astype(np.float32)
    assert read_manifest(cache)["results"]["images_computed"] == 0
    model = load_spp(run).module
    extractor = SppExtractor(model.net, (96, 160), 224, torch.device("cpu"), with_fc7=True)
    computed = extractor(read_image(data / "JPEGImages" / f"{image_id}.jpg"), boxes)["fc7"].numpy()
    np.testing.assert_allclose(stored, computed, rtol=0.01, atol=0.01 * np.abs(computed).max())
