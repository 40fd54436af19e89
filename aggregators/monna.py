"""Nearest-neighbour averaging around a trusted vector, MoNNA (Farhadkhani et al., ICML 2023,
"Robust collaborative learning with linear gradient overhead").

The output is the mean of the n − f vectors nearest to a trusted client's vector, that vector
included (squared Euclidean distance; equally distant vectors go to the lower client id, as
in `aggregators.nnm`). The rule assumes the trusted client is honest: in peer-to-peer
learning each honest node trusts itself; at a server it is a client the server vouches for
(`trusted`, a client id; choose it with `--byzantine_selection=ids:...` so that it is
honest). If the trusted client is absent from a round (partial participation, or it sent
NaN/Inf), the lowest client id present stands in, and `trusted_present` says so. Needs
f < n/2. Unweighted.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from aggregators.base import RobustAggregationFactory
from aggregators.nnm import nearest_neighbors

__all__ = ["monna", "trusted_row", "MoNNAFactory"]


def trusted_row(client_ids: tf.Tensor, trusted) -> tuple[tf.Tensor, tf.Tensor]:
    """(row of client `trusted`, or of the lowest id present; whether `trusted` is present)."""
    client_ids = tf.cast(client_ids, tf.int32)
    present = tf.equal(client_ids, tf.cast(trusted, tf.int32))
    found = tf.reduce_any(present)
    row = tf.cond(found, lambda: tf.argmax(tf.cast(present, tf.int32), output_type=tf.int32),
                  lambda: tf.argmin(client_ids, output_type=tf.int32))
    return row, found


def monna(stacked: tf.Tensor, *, f, row, client_ids=None) -> tf.Tensor:
    """`[n, ...] -> [...]`: the mean of the n − f rows nearest to row `row` (itself included)."""
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    rows = tf.reshape(stacked, [n, -1])
    nearest = nearest_neighbors(rows, f=f, client_ids=client_ids)[row]
    return tf.reshape(tf.reduce_mean(tf.gather(rows, nearest), axis=0), tf.shape(stacked)[1:])


class MoNNAFactory(RobustAggregationFactory):
    """MoNNA as a TFF aggregation factory; `trusted` is a client id. Measurements:
    `non_finite_clients`, `f`, `trusted_present` (1 when the trusted client took part)."""

    name = "monna"
    requirement = "f < n/2 (n >= 2f + 1)"

    def __init__(self, *, trusted: int = 0, **kwargs):
        if isinstance(trusted, bool) or not isinstance(trusted, (int, np.integer)) or trusted < 0:
            raise ValueError(f"monna: trusted must be a client id >= 0; got {trusted!r}.")
        if kwargs.get("weighted"):
            raise ValueError(f"monna: weighted must be False (its neighbourhood has no standard "
                             f"weighted form); got weighted={kwargs['weighted']!r}.")
        self.trusted = int(trusted)
        super().__init__(**kwargs)

    def min_clients(self, f):
        return 2 * f + 1

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        row, present = trusted_row(client_ids, self.trusted)
        result = monna(values, f=f, row=row, client_ids=client_ids)
        return result, state, collections.OrderedDict(trusted_present=tf.cast(present, tf.int32))
