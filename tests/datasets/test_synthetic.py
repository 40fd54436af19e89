"""Tests for tff_byz/datasets/synthetic.py (TFF's synthetic EMNIST)."""

import numpy as np

from tff_byz.datasets import synthetic


def test_synthetic_format():
    data = synthetic.load_synthetic()
    assert data.num_classes == 10
    assert data.train_x.shape == (20, 28, 28, 1) and data.train_x.dtype == np.float32
    assert data.writer_ids == ("synthetic1", "synthetic2")
    np.testing.assert_array_equal(data.train_writer, [0] * 10 + [1] * 10)
    # One example per digit per client ...
    np.testing.assert_array_equal(data.train_y, np.tile(np.arange(10), 2))
    # ... and TFF gives both clients the same ten images (pixels k / 9, background 1).
    np.testing.assert_array_equal(data.train_x[:10], data.train_x[10:])
    assert np.unique(data.train_x[:10].reshape(10, -1), axis=0).shape[0] == 10
    np.testing.assert_allclose(data.train_x * 9, np.round(data.train_x * 9), atol=1e-5)
    assert data.train_x.min() == 0.0 and data.train_x.max() == 1.0
    assert np.mean(data.train_x == 1.0) > 0.5
    # The test set is the pool of all examples.
    np.testing.assert_array_equal(data.test_x, data.train_x)
    np.testing.assert_array_equal(data.test_y, data.train_y)
