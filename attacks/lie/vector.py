"""LIE's z and vector μ + zσ, and the attack bound to a run (its `--attack` entry is
`attacks.lie`)."""

from __future__ import annotations

import collections
import dataclasses
import math
import numbers
import statistics as python_statistics
from typing import Optional

import tensorflow as tf

from attacks.checks import check_choice, is_number, plain_tf
from attacks.colluding import Collusion
from attacks.lie import LIE_PRESETS, LIE_Z_VARIANTS, parse_z
from attacks.params import bound
from attacks.reference import colluding_component, reference, statistics

__all__ = ["lie_z", "lie_z_tensor", "lie_vector", "lie_attack", "build_lie"]


def _check_lie_variant(variant):
    if is_number(variant):
        if not math.isfinite(variant):
            raise ValueError(f"a fixed LIE `z` must be finite; got z={variant!r}.")
    else:
        check_choice("variant", variant, LIE_Z_VARIANTS)


# --------------------------------------------------------------------------- lie


def _lie_fraction(n, m, variant):
    """(numerator, denominator) of the Φ⁻¹ argument; works on ints and int tensors alike."""
    if variant == "baruch":  # s = ⌊n/2 + 1⌋ − m, z = Φ⁻¹((n − s)/n)
        s = n // 2 + 1 - m
        return n - s, n
    if variant == "blades":  # s = ⌊n/2⌋ + 1 − m, z = Φ⁻¹((n − m − s)/(n − m))
        s = n // 2 + 1 - m
        return n - m - s, n - m
    s = n // 2 + 1 + m  # fedlaw_code: s = ⌊n/2⌋ + 1 + m, z = Φ⁻¹((n − s)/n)
    return n - s, n


def lie_z(n: int, m: int, variant="baruch") -> float:
    """LIE's z (§4 lie) for n clients, m of them Byzantine (Python float).

    `variant`: "baruch" z = Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − m; "blades"
    z = Φ⁻¹((n − m − s)/(n − m)), s = ⌊n/2⌋ + 1 − m; "fedlaw_code" z = Φ⁻¹((n − s)/n),
    s = ⌊n/2⌋ + 1 + m; a number: that fixed z. ValueError when the Φ⁻¹ argument is
    outside (0, 1).
    """
    _check_lie_variant(variant)
    if is_number(variant):
        return float(variant)
    for name, value in (("n", n), ("m", m)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"`{name}` must be an int; got {name}={value!r}.")
    numerator, denominator = _lie_fraction(int(n), int(m), variant)
    if denominator <= 0 or not 0 < numerator / denominator < 1:
        raise ValueError(
            f"LIE z={variant}: the Φ⁻¹ argument {numerator}/{denominator} is outside (0, 1); "
            f"got n={n}, m={m}, variant={variant!r}.")
    return python_statistics.NormalDist().inv_cdf(numerator / denominator)


@plain_tf
def lie_z_tensor(n, m, variant="baruch", dtype=tf.float32) -> tf.Tensor:
    """`lie_z` for tensor n, m (e.g. the round's client count): scalar of `dtype`.

    Same formulas through `tf.math.ndtri` (in float64); an out-of-range Φ⁻¹ argument
    fails a `tf.debugging` assertion (InvalidArgumentError) instead of returning NaN.
    A fixed-number variant returns that constant.
    """
    _check_lie_variant(variant)
    if is_number(variant):
        return tf.constant(variant, dtype)
    n = tf.cast(n, tf.int64)
    m = tf.cast(m, tf.int64)
    numerator, denominator = _lie_fraction(n, m, variant)
    argument = tf.cast(numerator, tf.float64) / tf.cast(denominator, tf.float64)
    message = f"LIE z={variant}: the Φ⁻¹ argument is outside (0, 1) (n, m, argument follow)"
    with tf.control_dependencies([
            tf.debugging.Assert(
                tf.logical_and(tf.logical_and(denominator > 0, argument > 0.0), argument < 1.0),
                [message, n, m, argument]),
    ]):
        return tf.cast(tf.math.ndtri(argument), dtype)


@plain_tf
def lie_vector(mu, sigma, z):
    """LIE (§4): u = μ + zσ."""
    return mu + tf.cast(z, sigma.dtype) * sigma


def lie_attack(name: str, *, z: str, stats: str, ddof: int, start: int, loss,
        preset: Optional[str] = None):
    """μ + zσ of the reference set; with `loss=auto` the reported loss is μ_f + z σ_f of the
    same reference set's reported losses (honest by default). `preset` (`LIE_PRESETS`):
    the FedLAW authors' code, which sets z, stats and ddof = 1 and negates z on the update.
    """
    update_sign = 1.0
    if preset is not None:
        if (z, stats, ddof) != ("baruch", "honest", 0):
            raise ValueError(f"lie:preset={preset} sets z, stats and ddof itself; got "
                             f"z={z}, stats={stats}, ddof={ddof}")
        z, stats = LIE_PRESETS[preset]["z"], LIE_PRESETS[preset]["stats"]
        ddof, update_sign = 1, -1.0
    fixed = parse_z(z)

    def vector_fn(values, honest, own, client_ids, seed, memory):
        del client_ids, seed
        mu, sigma = statistics(values, honest, own, stats, ddof)
        n = tf.shape(values)[0]
        m = tf.reduce_sum(tf.cast(tf.logical_not(honest), tf.int32))
        z_value = tf.cast(lie_z_tensor(n, m, fixed), tf.float32)
        return lie_vector(mu, sigma, update_sign * z_value), memory, \
            collections.OrderedDict(z=z_value)

    component = colluding_component(name, vector_fn, start=start, loss=loss,
                                    reads_own=stats == "byzantine")
    if isinstance(fixed, str):
        component = dataclasses.replace(
            component, check=lambda n, m: lie_z(n, m, fixed))
    if loss is not None:
        return component

    def compute(values, honest, own, client_ids, losses, seed, memory):
        vector, memory, named = vector_fn(values, honest, own, client_ids, seed, memory)
        reference_losses = tf.boolean_mask(losses, reference(honest, own, stats))
        forged = (tf.reduce_mean(reference_losses)
                  + named["z"] * tf.math.reduce_std(reference_losses))
        return vector, tf.cast(forged, tf.float32), memory, named

    return dataclasses.replace(
        component, collusion=Collusion(name, compute, replaces_update=True, forges_loss=True,
                                       reads_own=stats == "byzantine"))


build_lie = bound(lie_attack)
