"""The feature cache: schema, block reads, resuming after an interruption."""

import h5py
import numpy as np
import pytest

from stages.cache import files
from stages.cache.files import CacheWriter, FeatureCache, merge_caches
from stages.cache.options import COMPRESSIONS, CacheOptions
from stages.core.errors import UserError
from tests.helpers import separable_images, write_cache


def test_cache_reads_stay_within_the_block_size(tmp_path):
    path = write_cache(tmp_path / "c.h5", separable_images(num_images=7, per_image=98))  # 100 rows an image
    with FeatureCache(path, "make it") as cache:
        sizes = [len(block["fc7"]) for _, block in cache.blocks(["fc7"], max_rows=250)]
        assert sizes == [200, 200, 200, 100]
        # an image larger than the block comes alone
        assert [len(b["fc7"]) for _, b in cache.blocks(["fc7"], max_rows=50)] == [100] * 7
        ids = [image.image_id for image in cache.images(["fc7"], max_rows=250)]
        assert ids == [str(i) for i in range(7)]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_cache_schema(tmp_path, compression):
    images = separable_images(num_images=2, per_image=10)
    path = write_cache(tmp_path / "c.h5", images, compression=compression)
    with h5py.File(path) as h5:
        assert h5.attrs["format"] == "rcnn-toolkit/features" and h5.attrs["complete"]
        assert h5["offsets"][:].tolist() == [0, 12, 24]
        assert h5["boxes"].shape == (24, 4) and h5["class_iou"].shape == (24, 2)
        assert h5["gt_labels"].dtype == np.int16 and h5["fc7"].chunks[0] > 1
        assert h5["fc7"].compression == {"none": None}.get(compression, compression)
        np.testing.assert_array_equal(h5["fc7"][:], np.concatenate([fc7 for _, fc7, _ in images]))


def test_unknown_compression_is_a_user_error():
    with pytest.raises(UserError, match="--compression zstd"):
        CacheOptions(compression="zstd")


def test_cache_resumes_after_an_interruption(tmp_path):
    images = separable_images(num_images=4, per_image=10)
    target = tmp_path / "c.h5"
    ids = [str(i) for i in range(4)]
    writer = CacheWriter(target, {"s": 1}, ["a", "b"], {"fc7": 8, "pool5": 4}, "float32", ids)
    for i in range(2):
        writer.append(ids[i], images[i][0], {"fc7": images[i][1], "pool5": images[i][2]})
    # the third image was half written when the process died
    writer.h5["fc7"].resize(writer.h5["fc7"].shape[0] + 5, axis=0)
    writer.close()
    assert not target.exists()
    resumed = CacheWriter(target, {"s": 1}, ["a", "b"], {"fc7": 8, "pool5": 4}, "float32", ids)
    assert resumed.images_done == 2 and resumed.h5["fc7"].shape[0] == 24
    resumed.close()
    write_cache(target, images, stamp={"s": 1})
    with FeatureCache(target, "x") as cache:
        np.testing.assert_array_equal(cache.h5["fc7"][:], np.concatenate([f for _, f, _ in images]))
    # a partial file made with other settings is not continued
    other = CacheWriter(tmp_path / "d.h5", {"s": 1}, ["a", "b"], {"fc7": 8, "pool5": 4}, "float32", ids)
    other.append(ids[0], images[0][0], {"fc7": images[0][1], "pool5": images[0][2]})
    other.close()
    fresh = CacheWriter(tmp_path / "d.h5", {"s": 2}, ["a", "b"], {"fc7": 8, "pool5": 4}, "float32", ids)
    assert fresh.images_done == 0
    fresh.close()


def test_merged_parts_equal_the_cache_one_writer_makes(tmp_path, monkeypatch):
    """rank 0's merge under torchrun: two parts' rows one after the other, offsets shifted, copied here
    one row a block; the same columns and attributes as one cache of all the images."""
    images = separable_images(num_images=5, per_image=10)
    whole = write_cache(tmp_path / "whole.h5", images)
    ids = [str(i) for i in range(len(images))]
    dims = {"fc7": images[0][1].shape[1], "pool5": images[0][2].shape[1]}
    parts = []
    for k, chosen in enumerate(((0, 1, 2), (3, 4))):
        writer = CacheWriter(
            tmp_path / f"{k}.h5", {"test": 1}, ["a", "b"], dims, "float32", [ids[i] for i in chosen]
        )
        for i in chosen:
            writer.append(ids[i], images[i][0], {"fc7": images[i][1], "pool5": images[i][2]})
        parts.append(writer.finish({}))
    monkeypatch.setattr(files, "MERGE_BLOCK_BYTES", 1)
    merged = merge_caches(parts, tmp_path / "merged.h5")
    with h5py.File(merged) as made, h5py.File(whole) as expected:
        assert sorted(made) == sorted(expected)
        for name in expected:
            np.testing.assert_array_equal(made[name][:], expected[name][:], err_msg=name)
        assert dict(made.attrs) == dict(expected.attrs)
