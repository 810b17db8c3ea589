import hashlib
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.datasets.demo import DEMO_CLASSES, generate_demo, render_image
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


def test_objects_cut_by_the_border_are_marked_truncated(tiny_demo):
    """Drawn: truncated exactly when the object's box leaves the image (these seeds draw boxes that touch
    its edges from inside, and one cut by a pixel); read back: a truncated object's clipped box reaches the
    border, and the tiny demo has both kinds."""
    touching = []
    for seed in (41, 148, 168, 189):
        image, objects = render_image(np.random.default_rng(seed), DemoOptions())
        height, width = image.shape[:2]
        for _, (x1, y1, x2, y2), truncated in objects:
            assert truncated == (x1 < 0 or y1 < 0 or x2 > width or y2 > height)
            if min(x1, y1, width - x2, height - y2) in (0, -1):
                touching.append(truncated)
    assert sorted(touching) == [False, False, False, True]
    records = load_dataset(tiny_demo, "trainval").images + load_dataset(tiny_demo, "test").images
    truncated = np.concatenate([r.truncated for r in records])
    assert truncated.sum() == 7 and (~truncated).sum() == 24
    for record in records:
        box = record.boxes[record.truncated]
        edge = (box[:, :2] == 0).any(axis=1) | (box[:, 2] == record.width) | (box[:, 3] == record.height)
        assert edge.all(), record.image_id


def test_the_annotations_are_as_before_but_for_the_truncated_tags(tiny_demo):
    """Names, poses, difficult flags, boxes and sizes as the demo wrote them before it marked truncation
    (its results stay where they were); each object's tags in VOC's order."""
    lines = [
        line
        for path in sorted((tiny_demo / "Annotations").glob("*.xml"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    text = "".join(line + "\n" for line in lines if "<truncated>" not in line)
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "d796c8c0cda938cb2825f38e7e975ac0a05345eaa0da4b2a93c2a68b37e388df"
    )
    tags = [line.split(">")[0].strip() for line in lines if line.startswith("    <")]
    assert tags == ["<name", "<pose", "<truncated", "<difficult", "<bndbox"] * 31


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
