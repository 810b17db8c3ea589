import json
from dataclasses import dataclass

import pytest

from stages.atomic import atomic_path
from stages.errors import UserError
from stages.runs import manifest_path, require_artifact, write_manifest


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
    assert require_artifact(artifact, "rcnn x", {"backbone": "tiny"})["stage"] == "x"
    with pytest.raises(UserError, match=r"made with backbone='tiny', this needs backbone='vgg16'; remake"):
        require_artifact(artifact, "rcnn x", {"backbone": "vgg16"})
