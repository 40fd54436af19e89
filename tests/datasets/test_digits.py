"""Tests for tff_byz/datasets/digits.py (scikit-learn's bundled digits)."""

import numpy as np

from tff_byz.datasets import digits


def test_digits_shapes_ranges_and_split():
    data = digits.load_digits(seed=0)
    assert data.name == "digits" and data.num_classes == 10
    assert data.train_x.shape == (1438, 8, 8, 1) and data.test_x.shape == (359, 8, 8, 1)
    assert data.train_x.shape[0] + data.test_x.shape[0] == 1797
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int32
    assert data.train_x.min() == 0.0 and data.train_x.max() == 1.0
    # Pixels were counts 0..16.
    np.testing.assert_array_equal(data.train_x * 16, np.round(data.train_x * 16))
    # 20 % of each class (178..183 images) goes to the test set.
    full = np.bincount(np.concatenate([data.train_y, data.test_y]))
    np.testing.assert_array_equal(full, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    np.testing.assert_array_equal(np.bincount(data.test_y), np.floor(0.2 * full + 0.5).astype(int))
    assert data.writer_ids is None


def test_digits_split_is_seeded():
    a, b, c = digits.load_digits(seed=0), digits.load_digits(seed=0), digits.load_digits(seed=1)
    np.testing.assert_array_equal(a.test_x, b.test_x)
    np.testing.assert_array_equal(a.test_y, b.test_y)
    assert not np.array_equal(a.test_x, c.test_x)
