"""Model files: written with what made them, read back through one function that checks their kind and
classes."""

import pytest
import torch

from stages.core.errors import UserError
from stages.networks.backbones import Classifier, build_backbone
from stages.networks.models import load_model, save_model
from stages.runs.layout import write_manifest


def _classifier(meta):
    return Classifier.from_meta(meta, len(meta["classes"]) + 1)


def test_model_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Classifier(build_backbone("tiny"), 4).eval()
    path = tmp_path / "m.pt"
    save_model(path, model, kind="rcnn", backbone="tiny", classes=["a", "b", "c"], note="kept")
    write_manifest(path, stage="test", options={}, inputs=[], seconds=0.0)
    loaded = load_model(path, "rcnn", _classifier, command="make it", classes=("a", "b", "c"))
    crops = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded.module.eval()(crops), model(crops))
    assert loaded.classes == ("a", "b", "c") and loaded.backbone == "tiny" and loaded.meta["note"] == "kept"
    # and a backbone from it, as later stages take --weights FILE
    backbone = build_backbone("tiny", path).eval()
    torch.testing.assert_close(backbone(crops)[1], model.backbone(crops)[1])


def test_model_files_of_another_kind_or_classes_are_refused(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, Classifier(build_backbone("tiny"), 3), kind="rcnn", backbone="tiny", classes=["a", "b"])
    write_manifest(path, stage="test", options={}, inputs=[], seconds=0.0)
    with pytest.raises(UserError, match=r"m\.pt: a 'rcnn' model file, not 'fast'; remake it with `make it`"):
        load_model(path, "fast", _classifier, command="make it")
    with pytest.raises(UserError, match=r"m\.pt: trained on classes a, b, not this dataset's a, c"):
        load_model(path, "rcnn", _classifier, command="make it", classes=("a", "c"))
    with pytest.raises(UserError, match=r"gone\.pt: not found; make it with `make it`"):
        load_model(tmp_path / "gone.pt", "rcnn", _classifier, command="make it")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    write_manifest(tmp_path / "foreign.pt", stage="test", options={}, inputs=[], seconds=0.0)
    with pytest.raises(UserError, match="not a model file written by rcnn"):
        load_model(tmp_path / "foreign.pt", "rcnn", _classifier, command="make it")
