"""Mimic's target and mimic-misaligned's vectors, and the attacks bound to a run (their
`--attack` entries are `attacks.mimic`)."""

from __future__ import annotations

import collections
import math
import numbers

import numpy as np
import tensorflow as tf

from aggregators.distances import pairwise_squared_distances
from attacks.checks import is_number, plain_tf
from attacks.local import LocalAttack
from attacks.losses import loss_collusion, with_local_loss
from attacks.params import LossForgery, bound, parse_loss
from attacks.plan import AttackComponent
from attacks.reference import colluding_component

__all__ = ["max_variance_index", "mimic_misaligned_vectors", "mimic_attack",
           "mimic_misaligned_attack", "build_mimic", "build_mimic_misaligned"]


@plain_tf
def max_variance_index(values, honest_mask, iterations=50):
    """Mimic's `target=max_variance` (§4): row index argmax_{i∈H} ⟨e, x_i − μ⟩, int32 scalar.

    e is the top principal direction of the honest rows, by `iterations` steps of
    power iteration v ← CᵀC v / ||CᵀC v|| (C the centred honest rows) started from the
    first non-zero centred honest row; its sign is therefore the one with ⟨e, v₀⟩ > 0.
    Run in the h-dimensional row space: with v = Cᵀa, CᵀC v = Cᵀ(K a), K = CCᵀ the
    float64 centred Gram matrix (from the pairwise distances), and the scores
    C v = K a. Ties go to the lowest row index.
    """
    if not isinstance(iterations, numbers.Integral) or isinstance(iterations, bool):
        raise TypeError(f"`iterations` must be an int; got iterations={iterations!r}.")
    if iterations < 1:
        raise ValueError(f"`iterations` must be >= 1; got iterations={iterations!r}.")
    honest_mask = tf.convert_to_tensor(honest_mask, tf.bool)
    rows = tf.where(honest_mask)[:, 0]
    distances = pairwise_squared_distances(tf.gather(values, rows))
    # K = −½ J D J (double centring) is the Gram matrix of the centred rows.
    row_means = tf.reduce_mean(distances, axis=1)
    gram = -0.5 * (distances - row_means[:, tf.newaxis] - row_means[tf.newaxis, :]
                   + tf.reduce_mean(distances))
    positions = tf.range(tf.shape(gram)[0], dtype=tf.int32)
    # a₀ = one-hot of the first honest row whose centred row is non-zero (v₀ = C[first]).
    # If all honest rows are equal there is none: a₀ = 0, all scores 0, the first row wins.
    nonzero = tf.linalg.diag_part(gram) > 0.0
    first = tf.reduce_min(tf.where(nonzero, positions, tf.int32.max))
    coefficients = tf.one_hot(first, tf.shape(gram)[0], dtype=tf.float64)

    def step(i, a):
        a = tf.linalg.matvec(gram, a)
        return i + 1, tf.math.divide_no_nan(a, tf.norm(a))

    _, coefficients = tf.while_loop(lambda i, _: i < iterations, step,
                                    (tf.constant(0), coefficients))
    scores = tf.linalg.matvec(gram, coefficients)
    best = tf.reduce_max(scores)
    winner = tf.reduce_min(tf.where(tf.equal(scores, best), positions, tf.int32.max))
    return tf.cast(tf.gather(rows, winner), tf.int32)


@plain_tf
def mimic_misaligned_vectors(own, seeds, eta=0.1):
    """Mimic-misaligned (§4): row j of `own` `[k, D]` becomes −own_j + η e_j.

    e_j = z/||z||, z ~ `tf.random.stateless_normal([D], seed=seeds[j])`: one seed per
    row, `seeds` `[k, 2]` int32/int64, so each client's vector depends on its own
    (run seed, round, client id) seed and not on its row position.
    """
    if not is_number(eta):
        raise TypeError(f"`eta` must be a number; got eta={eta!r}.")
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"`eta` must be finite and >= 0; got eta={eta!r}.")
    own = tf.convert_to_tensor(own)
    seeds = tf.convert_to_tensor(seeds)
    dim = tf.shape(own)[1]

    def direction(seed):
        z = tf.cast(tf.random.stateless_normal([dim], seed=seed, dtype=tf.float32), tf.float64)
        return tf.cast(z / tf.norm(z), own.dtype)

    directions = tf.map_fn(direction, seeds, fn_output_signature=tf.TensorSpec([None], own.dtype))
    return -own + tf.cast(eta, own.dtype) * directions


def mimic_attack(name: str, *, target: str, seed: int, start: int, loss):
    """Every Byzantine client sends one honest client's vector; the target is fixed
    for the run (chosen at the first attacked round; re-chosen, with the same rule,
    only if it does not take part in a later round)."""

    def vector_fn(values, honest, own, client_ids, round_seed, memory):
        del own
        present = tf.logical_and(honest, tf.equal(client_ids, memory))
        honest_rows = tf.cast(tf.where(honest)[:, 0], tf.int32)

        def choose():
            if target == "max_variance":
                return max_variance_index(values, honest)
            if target == "random":
                pick = tf.random.stateless_uniform(
                    [], seed=tf.stack([tf.constant(seed, tf.int64), tf.constant(0x313, tf.int64)]),
                    maxval=tf.maximum(tf.shape(honest_rows)[0], 1), dtype=tf.int32)
                return honest_rows[pick]
            wanted = tf.logical_and(honest, tf.equal(client_ids, int(target)))
            return tf.cast(tf.argmax(tf.cast(wanted, tf.int32)), tf.int32)

        del round_seed
        row = tf.cond(tf.reduce_any(present),
                      lambda: tf.cast(tf.argmax(tf.cast(present, tf.int32)), tf.int32), choose)
        return values[row], client_ids[row], collections.OrderedDict(target=client_ids[row])

    return colluding_component(name, vector_fn, start=start, loss=loss, reads_own=False)


def mimic_misaligned_attack(name: str, *, eta: float, rho: float, start: int, loss):
    """−u_j + η e_j locally; reported loss μ_f − ρ σ_f of the honest losses (default)."""

    def misalign(record, weight, ctx):
        leaves = tf.nest.flatten(record["delta"])
        flat = tf.concat([tf.reshape(leaf, [-1]) for leaf in leaves], axis=0)
        moved = mimic_misaligned_vectors(
            flat[tf.newaxis], ctx.seed[tf.newaxis], eta)[0]
        parts = tf.split(moved, [int(np.prod(leaf.shape)) for leaf in leaves])
        out = collections.OrderedDict(record)
        out["delta"] = tf.nest.pack_sequence_as(
            record["delta"], [tf.reshape(p, leaf.shape) for p, leaf in zip(parts, leaves)])
        return out, weight

    forgery = loss if loss is not None else LossForgery("mean_minus_rho_std", rho)
    local = LocalAttack(name, transform=with_local_loss(misalign, forgery))
    return AttackComponent(name, start=start, local=local,
                           collusion=loss_collusion(name, forgery))


def build_mimic(name, *, seed, dataset, loss, **values):
    del dataset
    return mimic_attack(name, seed=seed, loss=parse_loss(loss), **values)


build_mimic_misaligned = bound(mimic_misaligned_attack)
