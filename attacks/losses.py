"""What loss a Byzantine client reports (`loss=` of every attack; attacks.md §4).

`auto` leaves it to the attack (honest, unless the attack defines one), `honest`
reports the honest loss, `value:x` a constant (set at the client), and
`mean_minus_rho_std:ρ` / `mean_plus_z_std:z` forge it at the server from the honest
clients' reported losses (a `Collusion` that replaces no update). The `loss=` parameter
itself (`parse_loss`, `LossForgery`) is read in `attacks.params` (no TensorFlow).
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from attacks.checks import check_choice, is_number, plain_tf
from attacks.colluding import Collusion
from attacks.params import LossForgery

__all__ = ["FORGERY_MODES", "forged_loss", "with_local_loss", "loss_collusion"]

FORGERY_MODES = ("mean_minus_rho_std", "mean_plus_z_std", "value")


@plain_tf
def forged_loss(honest_losses, mode, value=0.0):
    """Forged reported loss (§4), from the honest reported losses' mean μ_f and population std σ_f.

    "mean_minus_rho_std": μ_f − value·σ_f; "mean_plus_z_std": μ_f + value·σ_f;
    "value": the constant `value`.
    """
    check_choice("mode", mode, FORGERY_MODES)
    if not is_number(value):
        raise TypeError(f"`value` must be a number; got value={value!r}.")
    losses = tf.convert_to_tensor(honest_losses)
    if mode == "value":
        return tf.constant(value, losses.dtype)
    mean = tf.reduce_mean(losses)
    std = tf.sqrt(tf.reduce_mean(tf.square(losses - mean)))
    sign = -1.0 if mode == "mean_minus_rho_std" else 1.0
    return mean + tf.constant(sign * value, losses.dtype) * std


def with_local_loss(transform, loss: Optional[LossForgery]):
    """Adds a fixed reported loss (`loss=value:x`) after `transform`."""
    if loss is None or loss.mode != "value":
        return transform

    def forged(record, weight, ctx):
        if transform is not None:
            record, weight = transform(record, weight, ctx)
        record = collections.OrderedDict(record)
        record["loss"] = tf.constant(loss.amount, tf.float32)
        return record, weight

    return forged


def loss_collusion(name: str, loss: Optional[LossForgery]) -> Optional[Collusion]:
    """A server-side loss forgery from the honest losses' statistics, if asked for."""
    if loss is None or not loss.needs_server:
        return None
    mode = loss.mode

    def compute(values, honest, own, client_ids, losses, seed, memory):
        del own, client_ids, seed
        forged = forged_loss(tf.boolean_mask(losses, honest), mode, loss.amount)
        return tf.zeros([tf.shape(values)[1]], tf.float32), forged, memory, collections.OrderedDict()

    return Collusion(f"{name}_loss", compute, replaces_update=False, forges_loss=True)
