"""Tests of the training tf.data pipeline and model-input validation."""

import numpy as np
import pytest

from anogan_tf.data import DataError, make_train_dataset, validate_model_input


def _patches(n=10, s=4, c=1):
    # Patch k is filled with a value that identifies it.
    values = np.linspace(-1, 1, n, dtype=np.float32)
    return np.broadcast_to(values[:, None, None, None], (n, s, s, c)).copy()


def _ids(batch):
    return np.round((batch[:, 0, 0, 0] + 1) / 2 * 9).astype(int).tolist()


def test_batches_are_full_shuffled_and_cover_each_epoch():
    ds = make_train_dataset(_patches(), batch_size=5, seed=0)
    assert ds.element_spec.shape.as_list() == [5, 4, 4, 1]
    batches = [b.numpy() for b in ds.take(4)]
    assert all(b.dtype == np.float32 for b in batches)
    epoch1 = _ids(batches[0]) + _ids(batches[1])
    epoch2 = _ids(batches[2]) + _ids(batches[3])
    assert sorted(epoch1) == list(range(10)) == sorted(epoch2)
    assert epoch1 != list(range(10))  # Shuffled ...
    assert epoch1 != epoch2  # ... differently each epoch.
    again = [b.numpy() for b in make_train_dataset(
        _patches(), batch_size=5, seed=0).take(4)]
    np.testing.assert_array_equal(np.stack(batches), np.stack(again))


def test_no_shuffle_no_repeat_drops_remainder():
    ds = make_train_dataset(_patches(), batch_size=4, seed=0, shuffle=False,
                            repeat=False, cache=False)
    batches = [_ids(b.numpy()) for b in ds]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_too_few_patches_for_batch():
    with pytest.raises(DataError) as e:
        make_train_dataset(_patches(3), batch_size=8, seed=0)
    assert "Only 3 training patches" in str(e.value)
    assert "--batch_size" in str(e.value)


def test_validate_model_input_accepts_good_batch():
    arr = validate_model_input(np.zeros((2, 8, 8, 1), np.float64), 8, 1)
    assert arr.dtype == np.float32 and arr.shape == (2, 8, 8, 1)


@pytest.mark.parametrize("array, phrase", [
    (np.zeros((8, 8, 1), np.float32), "rank 3"),
    (np.zeros((0, 8, 8, 1), np.float32), "is empty"),
    (np.zeros((2, 16, 16, 1), np.float32), "16x16, but the model takes 8x8"),
    (np.zeros((2, 8, 8, 3), np.float32), "--channels=1"),
    (np.zeros((2, 8, 8, 1), np.uint8), "dtype uint8"),
    (np.full((2, 8, 8, 1), np.nan, np.float32), "128 NaN/Inf"),
    (np.full((2, 8, 8, 1), 255.0, np.float32), "[-1, 1]"),
])
def test_validate_model_input_rejects(array, phrase):
    with pytest.raises(DataError) as e:
        validate_model_input(array, 8, 1, name="query")
    assert phrase in str(e.value) and "query" in str(e.value)
