"""Tests of ImageSet / PatchSet validation and the display helpers."""

import numpy as np
import pytest
from PIL import Image

from anogan_tf.data import (DataError, ImageSet, PatchSet, images_to_uint8,
                            save_image_grid)


def _set(n=4, h=8, w=6, c=1, **kwargs):
    images = np.linspace(-1, 1, n * h * w * c, dtype=np.float32).reshape(
        n, h, w, c)
    return ImageSet(images=images, ids=tuple(f"im{i}" for i in range(n)),
                    **kwargs)


def test_imageset_converts_types():
    s = _set(labels=[0, 1, 0, 1], masks=np.zeros((4, 8, 6), bool),
             categories=["good", "crack", "good", "crack"])
    assert s.labels.dtype == np.int32 and s.labels.tolist() == [0, 1, 0, 1]
    assert s.masks.dtype == np.uint8
    assert s.categories == ("good", "crack", "good", "crack")
    assert len(s) == 4 and s.image_shape == (8, 6)


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(ids=("a", "b")), "one string per image (4 images), got 2"),
    (dict(labels=np.array([0, 1, 2, 0])), "found values [2]"),
    (dict(labels=np.zeros(3, np.int32)), "shape (4,)"),
    (dict(masks=np.zeros((4, 8, 5), np.uint8)), "(4, 8, 6)"),
    (dict(categories=("good",)), "categories must hold one string"),
])
def test_imageset_rejects_inconsistent_fields(kwargs, phrase):
    images = np.zeros((4, 8, 6, 1), np.float32)
    args = dict(images=images, ids=tuple("abcd"))
    args.update(kwargs)
    with pytest.raises(DataError) as e:
        ImageSet(**args)
    assert phrase in str(e.value)


def test_imageset_rejects_bad_images():
    with pytest.raises(DataError, match="must lie in"):
        ImageSet(images=np.full((1, 4, 4, 1), 255.0, np.float32), ids=("a",))
    with pytest.raises(DataError, match="floating point"):
        ImageSet(images=np.zeros((1, 4, 4, 1), np.uint8), ids=("a",))
    with pytest.raises(DataError, match=r"\[N, H, W, C\]"):
        ImageSet(images=np.zeros((4, 4, 1), np.float32), ids=("a",))
    with pytest.raises(DataError, match="NaN"):
        ImageSet(images=np.full((1, 4, 4, 1), np.nan, np.float32), ids=("a",))


def test_subset_and_take_follow_images():
    s = _set(labels=[0, 1, 0, 1], masks=np.arange(4)[:, None, None] % 2 *
             np.ones((4, 8, 6), np.uint8), categories=list("abcd"))
    sub = s.subset([3, 1])
    assert sub.ids == ("im3", "im1")
    np.testing.assert_array_equal(sub.images, s.images[[3, 1]])
    assert sub.labels.tolist() == [1, 1] and sub.categories == ("d", "b")
    assert sub.masks[0].all()
    by_mask = s.subset(s.labels == 0)
    assert by_mask.ids == ("im0", "im2")
    assert s.take(2).ids == ("im0", "im1")
    assert s.take(10) is s
    with pytest.raises(DataError, match="indices must lie in"):
        s.subset([4])


def test_patchset_validates_coordinates():
    kwargs = dict(patches=np.zeros((2, 4, 4, 1), np.float32),
                  image_index=[0, 0], ys=[0, 4], xs=[0, 4], patch_size=4,
                  image_shape=(8, 8), patched=True)
    p = PatchSet(**kwargs)
    assert p.ys.dtype == np.int32 and len(p) == 2
    with pytest.raises(DataError, match="outside"):
        PatchSet(**{**kwargs, "ys": [0, 5]})
    with pytest.raises(DataError, match="one per patch"):
        PatchSet(**{**kwargs, "xs": [0]})


def test_images_to_uint8_endpoints():
    x = np.array([-1.0, 0.0, 1.0, -3.0, 3.0], np.float32)
    assert images_to_uint8(x).tolist() == [0, 128, 255, 0, 255]
    with pytest.raises(DataError, match="NaN"):
        images_to_uint8(np.array([np.nan]))


def test_save_image_grid_layout(tmp_path):
    images = np.stack([np.full((4, 5, 1), v, np.float32)
                       for v in (-1.0, 0.0, 1.0)])
    path = save_image_grid(str(tmp_path / "sub" / "grid.png"), images, ncols=2)
    grid = np.asarray(Image.open(path))
    # 2 columns x 2 rows of 4x5 tiles with 2 px padding.
    assert grid.shape == (4 + 2 + 4, 5 + 2 + 5)
    assert grid[0, 0] == 0 and grid[0, 7] == 128 and grid[6, 0] == 255
    rgb = save_image_grid(str(tmp_path / "rgb.png"),
                          np.zeros((2, 3, 3, 3), np.float32), ncols=8)
    assert np.asarray(Image.open(rgb)).shape == (3, 8, 3)
    with pytest.raises(DataError, match="non-empty"):
        save_image_grid(str(tmp_path / "x.png"), np.zeros((0, 3, 3)), 2)
