"""The run folder: every artifact's path, atomic writes, manifests, and the check of a stage's inputs."""

import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from stages.core.atomic import atomic_path
from stages.core.errors import UserError
from stages.runs.layout import RunLayout, manifest_path, read_manifest, require_artifact, write_manifest


@dataclass(frozen=True)
class Options:
    backbone: str = "tiny"
    scale: int = 600


def test_atomic_write_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "a" / "artifact.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"first" and list(target.parent.iterdir()) == [target]


def test_an_artifact_is_as_readable_as_a_file_open_would_make(tmp_path):
    """Not mkstemp's private 0600: processes of other users sharing a run folder read it."""
    target, plain = tmp_path / "artifact.bin", tmp_path / "plain.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
    plain.write_bytes(b"x")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_manifest_records_options_inputs_and_versions(tmp_path):
    artifact, source = tmp_path / "train.h5", tmp_path / "input.txt"
    artifact.write_bytes(b"x")
    source.write_text("abc")
    write_manifest(
        artifact, stage="test", options=Options(), inputs=[source], seconds=1.23456, results={"recall": 0.9}
    )
    manifest = json.loads(manifest_path(artifact).read_text())
    assert manifest_path(artifact).name == "train.manifest.json"
    assert manifest["options"] == {"backbone": "tiny", "scale": 600}
    assert manifest["inputs"][0]["bytes"] == 3 and manifest["seconds"] == 1.235
    assert manifest["versions"]["torch"] and manifest["results"] == {"recall": 0.9}


def test_require_artifact_names_the_command_that_makes_it(tmp_path):
    artifact = tmp_path / "features" / "train.h5"
    with pytest.raises(UserError, match=r"train.h5: not found; make it with `rcnn extract-features`"):
        require_artifact(artifact, "rcnn extract-features")
    artifact.parent.mkdir()
    artifact.write_bytes(b"x")
    with pytest.raises(UserError, match=r"train.manifest.json: manifest missing"):
        require_artifact(artifact, "rcnn extract-features")
    write_manifest(artifact, stage="x", options=Options(), inputs=[], seconds=0)
    assert require_artifact(artifact, "rcnn x")["stage"] == "x"
    assert read_manifest(artifact)["options"] == {"backbone": "tiny", "scale": 600}
    assert read_manifest(tmp_path / "none.h5") is None
    manifest_path(artifact).write_text("{")
    with pytest.raises(UserError, match=r"train.manifest.json: unreadable manifest"):
        require_artifact(artifact, "rcnn x")


def test_the_layout_owns_every_path_of_a_run():
    run = RunLayout(Path("runs/demo"))
    spp = run.method("spp")
    paths = {
        run.proposals("test"): "proposals/test.h5",
        run.proposal_parts("test"): "proposals/.test.parts",
        run.pretrain.model: "backbone.pt",
        run.pretrain.checkpoint: "pretrain/checkpoint.pt",
        run.pretrain.log: "pretrain/log.csv",
        spp.finetune.model: "spp/finetune/model.pt",
        spp.finetune.checkpoint: "spp/finetune/checkpoint.pt",
        spp.finetune.log: "spp/finetune/log.csv",
        spp.features("trainval"): "spp/features/trainval.h5",
        spp.svm: "spp/svm.npz",
        spp.bbox: "spp/bbox.npz",
        spp.detections("test"): "spp/detections/test.json",
        spp.results("test"): "spp/eval/test.json",
        spp.pr_curves("test"): "spp/eval/test.pr.png",
        spp.detect: "spp/detect",
        run.method("fast").compressed: "fast/compressed/model.pt",
        run.method("fast").detections("test", "svd"): "fast/detections/test.svd.json",
        run.method("fast").results("test", "svd"): "fast/eval/test.svd.json",
        run.method("fast").pr_curves("test", "svd"): "fast/eval/test.svd.pr.png",
    }
    for path, relative in paths.items():
        assert path == Path("runs/demo") / relative
    assert spp.name == "spp" and spp.run == Path("runs/demo") and str(run) == "runs/demo"


def test_evaluations_and_manifests_are_found(tmp_path):
    run = RunLayout(tmp_path)
    fast = run.method("fast")
    for path in (fast.results("test"), fast.results("test", "svd")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        write_manifest(path, stage="evaluate", options={}, inputs=[], seconds=1.0)
    assert fast.evaluations() == [fast.results("test"), fast.results("test", "svd")]
    assert run.method("rcnn").evaluations() == []
    assert len(run.manifests()) == 2
