"""Model leaves packed into one float32 vector: the layout of per-client states.

TFF moves CLIENTS-placed values tensor by tensor at a fixed cost per tensor
(BUILD_NOTES.md), so momentum SGD and PDMM store each client's model-sized
vectors as one vector or the rows of one matrix: leaf by leaf, each flattened
row-major.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["Packing", "pack_numpy", "unpack_numpy"]


class Packing:
    """Packs structures shaped like `like` (a list of arrays) into `[D]` vectors and back."""

    def __init__(self, like):
        self.shapes = [tuple(np.shape(t)) for t in like]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.dimension = int(sum(self.sizes))

    def pack(self, leaves) -> tf.Tensor:
        """TF: leaves → `[D]`."""
        return tf.concat([tf.reshape(tf.convert_to_tensor(t), [-1]) for t in leaves], axis=0)

    def unpack(self, vector) -> list:
        """TF: `[D]` → leaves."""
        parts = tf.split(vector, self.sizes) if len(self.sizes) > 1 else [vector]
        return [tf.reshape(p, s) for p, s in zip(parts, self.shapes)]

    def unpack_rows(self, rows, width: int) -> list:
        """TF: `[width, D]` → one `[width, *shape]` tensor per leaf."""
        parts = tf.split(rows, self.sizes, axis=1) if len(self.sizes) > 1 else [rows]
        return [tf.reshape(p, [width, *s]) for p, s in zip(parts, self.shapes)]


def pack_numpy(leaves) -> np.ndarray:
    """NumPy: leaves → one float32 vector."""
    return np.concatenate([np.reshape(np.asarray(t, np.float32), [-1]) for t in leaves])


def unpack_numpy(vector, like) -> list:
    """NumPy: the inverse of `pack_numpy`, shaped like the leaves `like`. Leading axes of
    `vector` (e.g. one row per client) are kept: `[..., D]` → `[..., *shape]` per leaf."""
    vector = np.asarray(vector)
    offsets = np.cumsum([0] + [int(np.prod(np.shape(t))) for t in like])
    return [np.reshape(vector[..., a:b], (*vector.shape[:-1], *np.shape(t)))
            for a, b, t in zip(offsets[:-1], offsets[1:], like)]
