import hashlib
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.datasets.demo import DEMO_CLASSES, generate_demo
from stages.datasets.formats import load_dataset
from stages.datasets.options import DemoOptions
from tests.helpers import TINY


def digest(root) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "demo.manifest.json")
    return hashlib.sha256(
        b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)
    ).hexdigest()


def test_same_seed_same_bytes_other_seed_other_images(tiny_demo, tmp_path):
    assert digest(generate_demo(tmp_path / "again", TINY)) == digest(tiny_demo)
    other = generate_demo(tmp_path / "other", DemoOptions(seed=8, num_train=3, num_val=2, num_test=3))
    assert digest(other) != digest(tiny_demo)


def test_layout_splits_and_objects(tiny_demo):
    splits = {s: load_dataset(tiny_demo, s) for s in ("train", "val", "trainval", "test")}
    assert [len(splits[s]) for s in ("train", "val", "trainval", "test")] == [3, 2, 5, 3]
    ids = {s: {r.image_id for r in d.images} for s, d in splits.items()}
    assert ids["trainval"] == ids["train"] | ids["val"] and not ids["trainval"] & ids["test"]
    for record in splits["trainval"].images + splits["test"].images:
        assert 320 <= record.height <= 500 and 320 <= record.width <= 500
        assert 2 <= len(record.labels) <= 6
        sizes = np.maximum(record.boxes[:, 2] - record.boxes[:, 0], record.boxes[:, 3] - record.boxes[:, 1])
        assert (record.difficult[sizes >= DemoOptions().difficult_below] == 0).all()  # clipping only shrinks
    assert splits["test"].classes == tuple(sorted(DEMO_CLASSES))


def test_existing_folder_is_kept_or_refused(tiny_demo, tmp_path):
    assert generate_demo(tiny_demo, TINY) == tiny_demo  # same options: left as it is
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError, match="mine: exists and is not this demo dataset; pass --force"):
        generate_demo(tmp_path / "mine", TINY)
    generate_demo(tmp_path / "mine", TINY, force=True)
    assert (tmp_path / "mine" / "ImageSets" / "Main" / "trainval.txt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_dense_scene_of_small_objects(tmp_path):
    """Faster R-CNN's case against selective search: 40 to 80 objects of 12 to 30 px an image, none
    difficult."""
    options = DemoOptions(num_train=1, num_val=1, num_test=2, min_objects=40, max_objects=80)
    options = replace(options, min_size=12, max_size=30, difficult_below=0)
    for record in load_dataset(generate_demo(tmp_path / "dense", options), "test").images:
        sides = np.maximum(record.boxes[:, 2] - record.boxes[:, 0], record.boxes[:, 3] - record.boxes[:, 1])
        assert 40 <= len(record.boxes) <= 80 and sides.max() <= 30 and not record.difficult.any()
        assert np.median(sides) >= 12


def test_a_set_made_before_the_size_options_is_the_same_set(tiny_demo, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(tiny_demo, copy)
    manifest = copy / "demo.manifest.json"
    made = json.loads(manifest.read_text())
    for name in ("min_size", "max_size", "difficult_below"):
        del made["options"][name]
    manifest.write_text(json.dumps(made))
    assert generate_demo(copy, TINY) == copy and json.loads(manifest.read_text()) == made  # kept


@pytest.mark.parametrize(
    ("options", "message"),
    [({"min_objects": 5, "max_objects": 2}, "objects an image"), ({"min_size": 4}, "object sizes")],
)
def test_bad_demo_options(options, message):
    with pytest.raises(UserError, match=message):
        DemoOptions(**options)
