"""Bucketing (Karimireddy, He, Jaggi, ICLR 2022), and the FedLAW `variant=split`.

**Bucketing** (`bucketing:s=2+rule`, aggregators.md §2): a random permutation of
the clients (seeded per round), buckets of s consecutive clients, and the inner
rule sees the ⌈n/s⌉ bucket means (the last bucket may be smaller). The inner
requirement is checked at (⌈n/s⌉, f): at most f buckets are contaminated.

- Order: rows are put in client-id order before the seeded permutation, so the
  buckets depend on the seed and the ids only, never on arrival order.
- Weights: a bucket's mean is weighted by its members' weights (uniform weights
  give the plain mean) and its weight is their sum; a bucket whose weights are all
  zero takes the plain mean of its members. Client id of a bucket: its smallest
  member id.

**Split** (`bucketing:variant=split`, §4, FedLAW's baseline): shuffle, split into
s groups (group g = every s-th client of the permutation from g), run the inner
rule inside each group with f' = min(f, max(1, ⌊f/s⌋)) and average the group
outputs. A stateful rule (centered clipping) starts every group from the same
state and keeps the mean of the groups' new states (for CClip: the mean of the
group outputs, as §4 says). This is not a pre-aggregator (the rule runs per
group), so it is the wrapper factory `SplitBucketingFactory(rule, s=...)`.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf

from aggregators.base import RobustAggregationFactory
from aggregators.clip import check_integer
from aggregators.compose import PreAggregator

__all__ = ["bucketing", "bucket", "seeded_permutation", "Bucketing", "SplitBucketingFactory"]

# Folded into the round seed so the permutation is independent of other seeded
# steps of the same round ("buck" in ASCII).
_SEED_TAG = 0x6275636B


def seeded_permutation(client_ids: tf.Tensor, seed) -> tf.Tensor:
    """Row indices: client-id order (stable), then a permutation drawn from `seed` (int64[2])."""
    client_ids = tf.convert_to_tensor(client_ids)
    by_id = tf.argsort(client_ids, stable=True)
    seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64),
                                                    tf.constant(_SEED_TAG, tf.int64))
    shuffle = tf.random.experimental.stateless_shuffle(tf.range(tf.size(client_ids)), seed=seed)
    return tf.gather(by_id, shuffle)


def bucket(values: tf.Tensor, weights: tf.Tensor, client_ids: tf.Tensor, *, s, seed):
    """`[n, D], [n], [n] -> [n', D], [n'], [n']`: bucket means, weights, ids; n' = ⌈n/s⌉."""
    values = tf.convert_to_tensor(values)
    weights = tf.cast(weights, values.dtype)
    client_ids = tf.convert_to_tensor(client_ids)
    # Rows in permuted order, so every sum runs in an order fixed by ids and seed only:
    # the result is bit-for-bit independent of the arrival order (one O(nD) copy).
    order = seeded_permutation(client_ids, seed)
    values = tf.gather(values, order)
    weights = tf.gather(weights, order)
    client_ids = tf.gather(client_ids, order)
    segments = tf.range(tf.shape(values)[0]) // s  # consecutive buckets of s
    bucket_weights = tf.math.segment_sum(weights, segments)
    means = tf.math.segment_sum(values * weights[:, tf.newaxis], segments) / tf.where(
        bucket_weights > 0, bucket_weights, tf.ones_like(bucket_weights))[:, tf.newaxis]

    def with_plain_means_for_zero_weight_buckets():
        plain = tf.math.segment_mean(values, segments)
        return tf.where((bucket_weights > 0)[:, tf.newaxis], means, plain)

    means = tf.cond(tf.reduce_all(bucket_weights > 0), lambda: means,
                    with_plain_means_for_zero_weight_buckets)
    bucket_ids = tf.math.segment_min(client_ids, segments)
    return means, bucket_weights, bucket_ids


def bucketing(stacked: tf.Tensor, *, s: int = 2, seed, weights: Optional[tf.Tensor] = None,
              client_ids: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`[n, ...] -> [⌈n/s⌉, ...]`: means of s randomly chosen clients each.

    `seed` is an int64[2] stateless seed; `client_ids` default to the row order,
    `weights` to uniform.
    """
    if not tf.is_tensor(s):
        check_integer("bucketing", "s", s, 1)
    stacked = tf.convert_to_tensor(stacked)
    n = tf.shape(stacked)[0]
    weights = tf.ones([n], stacked.dtype) if weights is None else weights
    client_ids = tf.range(n) if client_ids is None else client_ids
    means, _, _ = bucket(tf.reshape(stacked, [n, -1]), weights, client_ids, s=s, seed=seed)
    return tf.reshape(means, tf.concat([tf.shape(means)[:1], tf.shape(stacked)[1:]], 0))


class Bucketing(PreAggregator):
    """`bucketing:s=S`: the inner rule sees the ⌈n/s⌉ bucket means (see module doc).

    Measurement `buckets` (= ⌈n/s⌉, the n' the inner rule saw).
    """

    name = "bucketing"

    def __init__(self, s: int = 2):
        self.s = check_integer("bucketing", "s", s, 1)
        self.requirement = f"the inner rule's requirement at (ceil(n/{self.s}), f)"

    def min_clients(self, inner_min, f):  # pylint: disable=unused-argument
        # Smallest n with ⌈n/s⌉ >= inner_min.
        return self.s * (inner_min - 1) + 1

    def transform(self, values, weights, client_ids, *, f, seed):
        means, bucket_weights, bucket_ids = bucket(values, weights, client_ids, s=self.s, seed=seed)
        return means, bucket_weights, bucket_ids, collections.OrderedDict(
            buckets=tf.shape(means)[0])


def _group_f(f, s):
    """f' = min(f, max(1, ⌊f/s⌋)) for ints and tensors (f = 0 stays 0: nothing to clamp up)."""
    if isinstance(f, (int, np.integer)):
        return min(int(f), max(1, int(f) // s))
    f = tf.cast(f, tf.int32)
    return tf.minimum(f, tf.maximum(1, f // s))


class SplitBucketingFactory(RobustAggregationFactory):
    """`bucketing:variant=split,s=S+rule`: the rule runs inside s random groups (see module doc).

    Options (f, declared fraction, weighted, seed) are the inner rule's. The
    requirement: each group (at least ⌊n/s⌋ clients) meets the rule's requirement
    at f' = min(f, max(1, ⌊f/s⌋)), i.e. n >= s · rule.min_clients(f'). A rule may
    provide `for_split_group(s)` returning the rule to run inside groups (Bulyan's
    b' = max(1, ⌊b/s⌋)); otherwise the rule itself is used. Group outputs are
    averaged uniformly; state: the rule's, averaged over groups (float leaves; other
    leaves from group 0). Measurements: `non_finite_clients`, `f`, then each
    group's rule measurements under `group_<g>/`.
    """

    def __init__(self, rule: RobustAggregationFactory, *, s: int = 2,
                 expected_clients: Optional[int] = None):
        if not isinstance(rule, RobustAggregationFactory):
            raise TypeError("bucketing:variant=split: the inner rule must be a "
                            f"RobustAggregationFactory; got {type(rule).__name__}.")
        self.s = check_integer("bucketing", "s", s, 1)
        self.rule = rule
        group_rule = getattr(rule, "for_split_group", None)
        self.group_rule = group_rule(self.s) if callable(group_rule) else rule
        self.name = f"bucketing:variant=split+{rule.name}"
        self.requirement = (f"each of the {self.s} groups (floor(n/{self.s}) clients) meets "
                            f"{rule.requirement} at f' = min(f, max(1, floor(f/{self.s})))")
        super().__init__(byzantine_fraction=rule.byzantine_fraction, f=rule.f,
                         weighted=rule.weighted, seed=rule.seed,
                         expected_clients=expected_clients)

    def min_clients(self, f):
        return self.s * self.group_rule.min_clients(_group_f(f, self.s))

    def initial_state(self, dim: int):
        return self.group_rule.initial_state(dim)

    def aggregate(self, values, weights, client_ids, *, f, state, seed):
        order = seeded_permutation(client_ids, seed)
        group_f = _group_f(f, self.s)
        outputs, states = [], []
        measurements = collections.OrderedDict()
        for g in range(self.s):
            rows = order[g::self.s]
            group_weights = tf.gather(weights, rows)
            group_weights = tf.math.divide_no_nan(group_weights, tf.reduce_sum(group_weights))
            output, new_state, group_measurements = self.group_rule.aggregate(
                tf.gather(values, rows), group_weights, tf.gather(client_ids, rows),
                f=group_f, state=state,
                seed=tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64),
                                                              tf.constant(g, tf.int64)))
            outputs.append(output)
            states.append(new_state)
            for key, value in group_measurements.items():
                measurements[f"group_{g}/{key}"] = value

        def average(*leaves):
            if leaves[0].dtype.is_floating:
                return tf.add_n(list(leaves)) / tf.cast(len(leaves), leaves[0].dtype)
            return leaves[0]

        new_state = tf.nest.map_structure(average, *states) if states else state
        return tf.add_n(outputs) / float(self.s), new_state, measurements
