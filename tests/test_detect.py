"""`rcnn detect`'s arguments: files, folders and glob patterns."""

import pytest

from stages.core.errors import UserError
from stages.inference.detect import image_paths
from tests.helpers import write_image


def test_files_folders_and_globs_name_the_images(tmp_path):
    for name in ("b.jpg", "a.png", "sub/c.jpg", "sub/deeper/d.jpeg"):
        write_image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    assert image_paths([tmp_path]) == [tmp_path / "a.png", tmp_path / "b.jpg"]
    assert image_paths([f"{tmp_path}/**/*.jp*g"]) == [
        tmp_path / "b.jpg",
        tmp_path / "sub" / "c.jpg",
        tmp_path / "sub" / "deeper" / "d.jpeg",
    ]
    assert image_paths([tmp_path / "missing.jpg"]) == [tmp_path / "missing.jpg"]  # refused when read


def test_an_empty_folder_or_a_glob_without_images_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no images"):
        image_paths([tmp_path / "empty"])
    with pytest.raises(UserError, match=r"\*\.png: matches no image"):
        image_paths([f"{tmp_path}/*.png"])
