"""Tests of .npy/.npz and TFRecord sources."""

import os

import numpy as np
import pytest
import tensorflow as tf

from anogan_tf.config import DataConfig
from anogan_tf.data import DataError, load_images, write_tfrecord


def _npy(path, **kwargs):
    return DataConfig(dataset="npy", data_path=str(path), image_size=8,
                      **kwargs)


def _tfr(path, **kwargs):
    return DataConfig(dataset="tfrecord", data_path=str(path), image_size=8,
                      **kwargs)


def _uint8(n=4, h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w),
                                                dtype=np.uint8)


def test_npy_uint8_uint16_float_scaling(tmp_path):
    pixels = _uint8()
    np.save(tmp_path / "u8.npy", pixels)
    s = load_images(_npy(tmp_path / "u8.npy"), "test")
    np.testing.assert_allclose(s.images[..., 0], pixels / 127.5 - 1, atol=1e-6)
    assert s.ids[0] == "u8/00000" and s.labels is None

    deep = np.array([0, 32768, 65535], np.uint16).reshape(1, 1, 3, 1)
    deep = np.broadcast_to(deep, (2, 8, 3, 1)).repeat(3, axis=2)
    np.save(tmp_path / "u16.npy", np.ascontiguousarray(deep))
    s16 = load_images(_npy(tmp_path / "u16.npy"), "train")
    assert s16.images[0, 0, 0, 0] == pytest.approx(-1.0)
    assert s16.images[0, 0, 3, 0] == pytest.approx(0.0, abs=1e-4)
    assert s16.images[0, 0, 8, 0] == pytest.approx(1.0)
    assert s16.labels.tolist() == [0, 0]

    floats = np.random.default_rng(1).random((3, 8, 8, 3))
    np.save(tmp_path / "f.npy", floats)
    s3 = load_images(_npy(tmp_path / "f.npy", channels=3), "test")
    np.testing.assert_allclose(s3.images, 2 * floats - 1, atol=1e-6)


def test_npz_labels_masks_ids_and_train_split(tmp_path):
    images = _uint8(4)
    labels = np.array([0, 1, 0, 1])
    masks = np.zeros((4, 8, 8), bool)
    masks[1, :2], masks[3, 5:] = True, True
    ids = np.array(["n0", "a0", "n1", "a1"])
    np.savez(tmp_path / "d.npz", images=images, labels=labels, masks=masks,
             ids=ids)
    test = load_images(_npy(tmp_path / "d.npz"), "test")
    assert test.ids == ("n0", "a0", "n1", "a1")
    assert test.labels.tolist() == [0, 1, 0, 1]
    assert test.masks.dtype == np.uint8 and test.masks[1, :2].all()
    assert test.masks[3].sum() == 3 * 8 and test.masks[0].sum() == 0
    train = load_images(_npy(tmp_path / "d.npz"), "train")
    assert train.ids == ("n0", "n1") and train.labels.tolist() == [0, 0]
    np.testing.assert_array_equal(train.images, test.images[[0, 2]])
    with pytest.raises(DataError, match="calibration data must be given"):
        load_images(_npy(tmp_path / "d.npz"), "calibration")


def test_npy_resize(tmp_path):
    np.save(tmp_path / "a.npy", np.full((2, 8, 8), 255, np.uint8))
    s = load_images(_npy(tmp_path / "a.npy", resize=(16, 12)), "test")
    assert s.images.shape == (2, 16, 12, 1)
    np.testing.assert_allclose(s.images, 1.0, atol=1e-6)


@pytest.mark.parametrize("dtype", [bool, np.int64, np.int16, np.complex64,
                                   np.uint32])
def test_npy_wrong_dtype_names_dtype_and_accepted(tmp_path, dtype):
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), dtype))
    with pytest.raises(DataError) as e:
        load_images(_npy(tmp_path / "x.npy"), "train")
    message = str(e.value)
    assert f"dtype {np.dtype(dtype)}" in message and "x.npy" in message
    assert "uint8, uint16, float16, float32, float64" in message


def test_npy_string_array_is_refused(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a"] * 8] * 8 * 2).reshape(2, 8, 8))
    with pytest.raises(DataError, match="dtype <U1"):
        load_images(_npy(tmp_path / "s.npy"), "train")


def test_npy_float_out_of_range(tmp_path):
    np.save(tmp_path / "r.npy", np.full((2, 8, 8), 255.0, np.float32))
    with pytest.raises(DataError) as e:
        load_images(_npy(tmp_path / "r.npy"), "train")
    assert "[255, 255]" in str(e.value) and "[0, 1]" in str(e.value)
    assert "uint8" in str(e.value)


def test_npy_nan_and_inf_name_count_and_first_index(tmp_path):
    arr = np.zeros((3, 8, 8), np.float32)
    arr[1, 2, 3] = np.nan
    arr[2, 0, 0] = np.inf
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(DataError) as e:
        load_images(_npy(tmp_path / "nan.npy"), "train")
    message = str(e.value)
    assert "nan.npy['images']" in message
    assert "2 NaN/Inf values" in message and "(1, 2, 3, 0)" in message


def test_pickled_npy_is_refused_with_resave_hint(tmp_path):
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = np.zeros((8, 8)), np.ones((8, 8))
    np.save(tmp_path / "obj.npy", arr, allow_pickle=True)
    with pytest.raises(DataError) as e:
        load_images(_npy(tmp_path / "obj.npy"), "train")
    message = str(e.value)
    assert "obj.npy" in message and "refused" in message
    assert "np.save(path, arr.astype(np.uint8))" in message
    np.savez(tmp_path / "obj.npz", images=arr)
    with pytest.raises(DataError, match="'images' holds pickled"):
        load_images(_npy(tmp_path / "obj.npz"), "train")


def test_npz_bad_fields(tmp_path):
    np.savez(tmp_path / "a.npz", pixels=_uint8())
    with pytest.raises(DataError, match="no 'images'"):
        load_images(_npy(tmp_path / "a.npz"), "train")
    np.savez(tmp_path / "b.npz", images=_uint8(), labels=np.array([0, 1, 2, 0]))
    with pytest.raises(DataError, match=r"b.npz\['labels'\].*Map your classes"):
        load_images(_npy(tmp_path / "b.npz"), "test")
    np.savez(tmp_path / "c.npz", images=_uint8(), masks=np.zeros((4, 4, 4)))
    with pytest.raises(DataError, match=r"c.npz\['masks'\] must have shape"):
        load_images(_npy(tmp_path / "c.npz"), "test")
    (tmp_path / "d.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="d.npy"):
        load_images(_npy(tmp_path / "d.npy"), "train")


def test_tfrecord_round_trip(tmp_path):
    images = _uint8(5, seed=3)
    labels = np.array([0, 0, 1, 0, 1])
    masks = np.zeros((5, 8, 8), np.uint8)
    masks[2, 1:4, 2:5] = 1
    masks[4, 7, 7] = 1
    ids = [f"scan_{i}" for i in range(5)]
    path = write_tfrecord(str(tmp_path / "d" / "x.tfrecord"), images,
                          labels=labels, masks=masks, ids=ids)
    assert os.path.isfile(path)
    test = load_images(_tfr(path), "test")
    np.testing.assert_allclose(test.images[..., 0], images / 127.5 - 1,
                               atol=1e-6)
    assert test.ids == tuple(ids)
    assert test.labels.tolist() == labels.tolist()
    np.testing.assert_array_equal(test.masks, masks)
    train = load_images(_tfr(path), "train")
    assert train.ids == ("scan_0", "scan_1", "scan_3")
    assert train.masks is None


def test_tfrecord_rgb_without_labels_and_glob(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3),
                                            dtype=np.uint8)
    write_tfrecord(str(tmp_path / "p-0.tfrecord"), rgb[:1])
    write_tfrecord(str(tmp_path / "p-1.tfrecord"), rgb[1:])
    s = load_images(_tfr(tmp_path / "p-*.tfrecord", channels=3), "test")
    np.testing.assert_allclose(s.images, rgb / 127.5 - 1, atol=1e-6)
    assert s.ids == ("p-0/00000", "p-1/00000") and s.labels is None


def test_write_tfrecord_rejects_floats(tmp_path):
    with pytest.raises(DataError, match="images_to_uint8"):
        write_tfrecord(str(tmp_path / "f.tfrecord"), np.zeros((1, 8, 8)))


def test_corrupt_tfrecord_names_file_and_record(tmp_path):
    path = write_tfrecord(str(tmp_path / "c.tfrecord"), _uint8(3))
    data = bytearray(open(path, "rb").read())
    record = len(data) // 3
    data[record + 20] ^= 0xFF  # Flip a byte inside record 1's payload.
    open(path, "wb").write(bytes(data))
    with pytest.raises(DataError) as e:
        load_images(_tfr(path), "test")
    assert "c.tfrecord record 1" in str(e.value)
    assert "--skip_bad_files" in str(e.value)


def _raw_records(path, payloads):
    with tf.io.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)


def _example(image_bytes):
    return tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[image_bytes]))
    })).SerializeToString()


def test_tfrecord_bad_records_are_named_and_skippable(tmp_path):
    good = str(tmp_path / "good.tfrecord")
    write_tfrecord(good, _uint8(1))
    good_record = next(iter(tf.data.TFRecordDataset(good))).numpy()
    undecodable = str(tmp_path / "img.tfrecord")
    _raw_records(undecodable, [good_record, _example(b"garbage")])
    with pytest.raises(DataError,
                       match="img.tfrecord record 1: cannot decode image"):
        load_images(_tfr(undecodable), "test")
    not_example = str(tmp_path / "proto.tfrecord")
    _raw_records(not_example, [good_record, b"not a proto \xff\xff"])
    with pytest.raises(DataError,
                       match="proto.tfrecord record 1 is not a valid image"):
        load_images(_tfr(not_example), "test")
    for path in (undecodable, not_example):
        kept = load_images(_tfr(path, skip_bad_files=True), "test")
        assert len(kept) == 1


def test_tfrecord_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_images(_tfr(tmp_path / "none.tfrecord"), "test")
    with pytest.raises(DataError, match="No TFRecord file matches"):
        load_images(_tfr(tmp_path / "none-*.tfrecord"), "test")
