import hashlib

import numpy as np
import pytest

from stages.core.errors import UserError
from stages.datasets.demo import DEMO_CLASSES, DIFFICULT_BELOW, generate_demo
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
        assert (record.difficult[sizes >= DIFFICULT_BELOW] == 0).all()  # clipping only shrinks boxes
    assert splits["test"].classes == tuple(sorted(DEMO_CLASSES))


def test_existing_folder_is_kept_or_refused(tiny_demo, tmp_path):
    assert generate_demo(tiny_demo, TINY) == tiny_demo  # same options: left as it is
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError, match="mine: exists and is not this demo dataset; pass --force"):
        generate_demo(tmp_path / "mine", TINY)
    generate_demo(tmp_path / "mine", TINY, force=True)
    assert (tmp_path / "mine" / "ImageSets" / "Main" / "trainval.txt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
