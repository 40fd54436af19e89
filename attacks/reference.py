"""The reference set R of the colluding and omniscient attacks (attacks.md §4).

The aggregation-factory wrapper (`attacks.colluding.CollusionFactory`) gathers the
round's stacked vectors; an attack's vector comes from R: the honest rows
(`stats=honest`, omniscient) or the Byzantine clients' own honest rows
(`stats=byzantine`, colluding). `colluding_component` makes a family's vector function
into the `AttackComponent` that replaces the Byzantine rows.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

from attacks.checks import plain_tf
from attacks.colluding import Collusion
from attacks.local import LocalAttack
from attacks.losses import forged_loss, with_local_loss
from attacks.plan import AttackComponent

__all__ = ["reference_statistics", "reference", "statistics", "colluding_component"]


@plain_tf
def reference_statistics(values, mask, ddof=0):
    """(μ, σ) `[D]`: coordinate-wise mean and std over the rows of `values` where `mask` (§4).

    σ = sqrt(Σ (x − μ)² / (k − ddof)) with k masked rows: ddof 0 the population std
    (default), 1 the unbiased one. Two passes in float32 (mean, then mean squared
    deviation), so a large common offset does not cancel catastrophically.
    """
    if not isinstance(ddof, numbers.Integral) or isinstance(ddof, bool) or ddof not in (0, 1):
        raise ValueError(f"`ddof` must be 0 or 1; got ddof={ddof!r}.")
    rows = tf.boolean_mask(values, tf.convert_to_tensor(mask, tf.bool))
    count = tf.shape(rows)[0]
    with tf.control_dependencies([
            tf.debugging.assert_greater(
                count, ddof, message=f"reference_statistics needs more than ddof={ddof} rows"),
    ]):
        mu = tf.reduce_mean(rows, axis=0)
    deviation = rows - mu
    variance = tf.reduce_sum(deviation * deviation, axis=0) / tf.cast(count - ddof, rows.dtype)
    return mu, tf.sqrt(variance)


def reference(honest, own, stats):
    """The mask of R: the honest rows, or the Byzantine clients' own (`stats`)."""
    return honest if stats == "honest" else own


def colluding_component(name, vector_fn, *, start, loss, reads_own):
    """A Collusion sending `vector_fn(values, honest, own, client_ids, seed, memory)`.

    A server-side `loss` (mean_*_std) is forged from the honest losses; `value:x`
    is set locally; `auto`/`honest` leave the losses alone. `reads_own`: whether
    `vector_fn` reads the Byzantine clients' own rows."""
    forges = loss is not None and loss.needs_server

    def compute(values, honest, own, client_ids, losses, seed, memory):
        vector, memory, named = vector_fn(values, honest, own, client_ids, seed, memory)
        forged = tf.constant(0.0)
        if forges:
            forged = forged_loss(tf.boolean_mask(losses, honest), loss.mode, loss.amount)
        return vector, tf.cast(forged, tf.float32), memory, named

    collusion = Collusion(name, compute, replaces_update=True, forges_loss=forges,
                          reads_own=reads_own)
    local = None
    if loss is not None and loss.mode == "value":
        local = LocalAttack(name, transform=with_local_loss(None, loss))
    return AttackComponent(name, start=start, local=local, collusion=collusion)


def statistics(values, honest, own, stats, ddof):
    """(μ, σ) of R."""
    return reference_statistics(values, reference(honest, own, stats), ddof)
