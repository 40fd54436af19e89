"""scikit-learn's bundled 8x8 digits (no download), for fast end-to-end runs."""

from __future__ import annotations

import numpy as np
import sklearn.datasets

from tff_byz.datasets import partition, source

__all__ = ["TEST_FRACTION", "load_digits"]

# The data has no official test set; hold out a stratified 20 %.
TEST_FRACTION = 0.2

# Digits pixels are counts of set pixels in 4x4 blocks of a 32x32 bitmap: 0..16.
_MAX_PIXEL = 16.0


def load_digits(*, seed: partition.RandomSource = 0) -> source.SourceData:
    """1797 images [8, 8, 1] in [0, 1], 10 classes, seeded stratified split.

    Args:
      seed: int seed or Generator for the train/test split (20 % of each
        class, rounded, goes to the test set: 1438 train / 359 test).
    """
    bunch = sklearn.datasets.load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(_MAX_PIXEL))[..., np.newaxis]
    y = bunch.target.astype(np.int32)
    train, test = source.stratified_split(y, TEST_FRACTION, rng=seed)
    return source.SourceData(
        name="digits", num_classes=10,
        train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test])
