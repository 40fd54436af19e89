"""Olivetti faces (AT&T/ORL): 40 people x 10 images of 64x64, as scikit-learn gives them.

Reads scikit-learn's cache file `olivetti_py3.pkz` (joblib; uint8 [400, 4096],
the `.mat` array transposed) or else Sam Roweis' `olivettifaces.mat`
(`faces`, uint8 [4096, 400]), and reproduces
`sklearn.datasets.fetch_olivetti_faces` exactly: min-max scaling to [0, 1]
(the raw maximum is 242, not 255) and a transpose of each 64x64 image, which
is what makes the faces upright.
"""

from __future__ import annotations

import os
import pathlib

import joblib
import numpy as np
import scipy.io

from tff_byz.datasets import partition, source

__all__ = ["TEST_IMAGES_PER_PERSON", "load_olivetti"]

_PKZ = "olivetti_py3.pkz"
_MAT = "olivettifaces.mat"
_NUM_PEOPLE = 40
_IMAGES_PER_PERSON = 10
_SIDE = 64
# The paper-style 8/2 split of each person's 10 images.
TEST_IMAGES_PER_PERSON = 2


def _read_faces(path: pathlib.Path) -> np.ndarray:
    """Raw uint8 faces [400, 4096] in scikit-learn's row layout."""
    if path.name == _PKZ:
        # joblib unpickles: only point data_dir at trusted data.
        faces = np.asarray(joblib.load(path))
    else:
        faces = scipy.io.loadmat(path)["faces"].T
    expected = (_NUM_PEOPLE * _IMAGES_PER_PERSON, _SIDE * _SIDE)
    if faces.shape != expected:
        raise ValueError(f"olivetti: {path} holds shape {faces.shape}, expected {expected}")
    return faces


def _sklearn_images(faces: np.ndarray) -> np.ndarray:
    # Same steps as sklearn.datasets.fetch_olivetti_faces.
    images = np.float32(faces)
    images = images - images.min()
    images /= images.max()
    return images.reshape((-1, _SIDE, _SIDE)).transpose(0, 2, 1)


def load_olivetti(
    data_dir: str | os.PathLike | None, *, seed: partition.RandomSource = 0
) -> source.SourceData:
    """400 images [64, 64, 1] in [0, 1], 40 classes; 8 train / 2 test per person.

    Searches `<data_dir>/olivetti`, then `<data_dir>`, for `olivetti_py3.pkz`
    and then `olivettifaces.mat`.

    Args:
      data_dir: directory holding the files (see above).
      seed: int seed or Generator for the per-person train/test split.
    """
    root = source.require_data_dir("olivetti", data_dir, (_PKZ, _MAT))
    searched = [root / "olivetti", root]
    candidates = [d / name for name in (_PKZ, _MAT) for d in searched]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise source.not_found("olivetti", (_PKZ, _MAT), root, searched)
    x = np.ascontiguousarray(_sklearn_images(_read_faces(path))[..., np.newaxis])
    # Images are stored person by person.
    y = np.repeat(np.arange(_NUM_PEOPLE, dtype=np.int32), _IMAGES_PER_PERSON)
    train, test = source.stratified_split(
        y, TEST_IMAGES_PER_PERSON / _IMAGES_PER_PERSON, rng=seed)
    return source.SourceData(
        name="olivetti", num_classes=_NUM_PEOPLE,
        train_x=x[train], train_y=y[train], test_x=x[test], test_y=y[test])
