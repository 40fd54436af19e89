"""Tests for tff_byz/datasets/olivetti.py (Olivetti faces)."""

import shutil

import numpy as np
import pytest
import sklearn.datasets

from tff_byz.datasets import olivetti, source


def test_real_olivetti_split(require_data):
    data = olivetti.load_olivetti(require_data("olivetti/olivetti_py3.pkz"), seed=0)
    assert data.num_classes == 40
    assert data.train_x.shape == (320, 64, 64, 1) and data.test_x.shape == (80, 64, 64, 1)
    np.testing.assert_array_equal(np.bincount(data.train_y), [8] * 40)
    np.testing.assert_array_equal(np.bincount(data.test_y), [2] * 40)
    assert data.train_x.dtype == np.float32
    assert min(data.train_x.min(), data.test_x.min()) == 0.0
    assert max(data.train_x.max(), data.test_x.max()) == 1.0
    other = olivetti.load_olivetti(require_data(), seed=1)
    assert not np.array_equal(data.test_x, other.test_x)
    again = olivetti.load_olivetti(require_data(), seed=0)
    np.testing.assert_array_equal(data.test_x, again.test_x)


def test_matches_scikit_learn_orientation_and_scaling(require_data, tmp_path):
    data_dir = require_data("olivetti/olivetti_py3.pkz")
    shutil.copy(data_dir / "olivetti" / "olivetti_py3.pkz", tmp_path)
    reference = sklearn.datasets.fetch_olivetti_faces(data_home=tmp_path, download_if_missing=False)
    data = olivetti.load_olivetti(data_dir, seed=0)
    # The loader's split, recomputed: the same seeded per-person 8/2 draw.
    train, test = source.stratified_split(reference.target, 0.2, rng=0)
    # Upright (per-image transpose) and min-max scaled exactly like scikit-learn.
    np.testing.assert_array_equal(data.train_x[..., 0], reference.images[train])
    np.testing.assert_array_equal(data.test_x[..., 0], reference.images[test])
    np.testing.assert_array_equal(data.train_y, reference.target[train])
    np.testing.assert_array_equal(data.test_y, reference.target[test])


def test_mat_fallback_gives_the_same_images(require_data, tmp_path):
    data_dir = require_data("olivetti/olivettifaces.mat", "olivetti/olivetti_py3.pkz")
    (tmp_path / "olivetti").mkdir()
    (tmp_path / "olivetti" / "olivettifaces.mat").symlink_to(data_dir / "olivetti" / "olivettifaces.mat")
    from_mat = olivetti.load_olivetti(tmp_path, seed=3)
    from_pkz = olivetti.load_olivetti(data_dir, seed=3)
    np.testing.assert_array_equal(from_mat.train_x, from_pkz.train_x)
    np.testing.assert_array_equal(from_mat.test_y, from_pkz.test_y)


def test_missing_files_message(tmp_path):
    with pytest.raises(source.DatasetNotFoundError) as info:
        olivetti.load_olivetti(tmp_path)
    assert str(info.value) == (
        f"olivetti: olivetti_py3.pkz, olivettifaces.mat not found in {tmp_path} "
        f"(searched {tmp_path}/olivetti, {tmp_path})")
