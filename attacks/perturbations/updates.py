"""Local update attacks (spec `attacks.md` §3): the math on one tensor and each attack bound
to the Byzantine clients' records (`build_<name>`); their `--attack` entries are
`attacks.perturbations`.

Pure TensorFlow, graph-mode safe (no Python control flow on tensor values), so
the client-work transforms can call these inside a `tf.function` of a TFF
computation. Each function acts on ONE float tensor `u` of any (possibly
unknown) shape; the caller maps it over the leaves of the model delta and gives
every leaf its own seed (`structure_seeds`). Random functions take an explicit
`seed`: an int32/int64 tensor of shape [2] for `tf.random.stateless_*`, derived
by the caller from (run seed, round, client id); nothing here touches global
random state.

Parameters (`scale`, `sigma`, `p`, `bits`, ...) are Python values fixed when the
attack is built; they are validated here, in Python, before any op is created.
"""

from __future__ import annotations

import collections
import math
import numbers
from typing import Optional

import tensorflow as tf

from attacks.local import LocalAttack
from attacks.losses import loss_collusion, with_local_loss
from attacks.params import LossForgery, bound, parse_loss
from attacks.plan import AttackComponent

__all__ = [
    "local_update_attack",
    "BIT_GROUPS",
    "bit_flip",
    "bit_flip_mask",
    "constant",
    "gaussian",
    "random_params_noise",
    "scaling",
    "sign_flip",
    "structure_seeds",
]

# IEEE-754 binary32 layout: bit 31 sign, bits 23..30 exponent, bits 0..22 mantissa.
BIT_GROUPS: dict[str, tuple[int, ...]] = {
    "sign": (31,),
    "exponent": tuple(range(23, 31)),
    "mantissa": tuple(range(0, 23)),
    "all": tuple(range(32)),
}


def _number(name: str, value, *, function: str) -> float:
    """`value` as a float; TypeError naming the argument otherwise (ints accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{function}: `{name}` must be a real number; got {name}={value!r}.")
    return float(value)


def structure_seeds(seed, structure) -> list[tf.Tensor]:
    """One seed per leaf of `structure`, in `tf.nest.flatten` order.

    Leaf k gets `stateless_fold_in(seed, k)`, so the leaves draw independent
    streams from one client seed. Returns a flat list of int32 shape-[2] tensors.
    """
    seed = tf.convert_to_tensor(seed)
    return [tf.random.experimental.stateless_fold_in(seed, index)
            for index in range(len(tf.nest.flatten(structure)))]


def sign_flip(u, scale=1.0) -> tf.Tensor:
    """§3 sign_flip: u → −λu (λ = `scale`, default 1)."""
    scale = _number("scale", scale, function="sign_flip")
    u = tf.convert_to_tensor(u)
    return -tf.cast(scale, u.dtype) * u if scale != 1.0 else -u


def scaling(u, scale=10.0) -> tf.Tensor:
    """§3 scaling (boosting): u → λu (λ = `scale`, default 10)."""
    scale = _number("scale", scale, function="scaling")
    u = tf.convert_to_tensor(u)
    return tf.cast(scale, u.dtype) * u


def gaussian(u, seed, sigma=1.0, mu=0.0, mode="replace") -> tf.Tensor:
    """§3 gaussian: `replace`: u → N(μ, σ²I); `add`: u → u + N(0, σ²I).

    The noise has u's (dynamic) shape and dtype. The spec's `add` mode has mean 0,
    so `mu` ≠ 0 with `mode="add"` is an error rather than a silent extension.
    """
    sigma = _number("sigma", sigma, function="gaussian")
    mu = _number("mu", mu, function="gaussian")
    if sigma < 0:
        raise ValueError(f"gaussian: `sigma` must be >= 0; got sigma={sigma}.")
    if mode not in ("replace", "add"):
        raise ValueError(f"gaussian: `mode` must be 'replace' or 'add'; got mode={mode!r}.")
    if mode == "add" and mu != 0.0:
        raise ValueError(
            f"gaussian: `mu` applies only to mode='replace' (add is u + N(0, σ²)); got mu={mu}.")
    u = tf.convert_to_tensor(u)
    noise = tf.random.stateless_normal(tf.shape(u), seed=seed, mean=mu, stddev=sigma, dtype=u.dtype)
    return noise if mode == "replace" else u + noise


def _bit_positions(bits: str) -> tuple[int, ...]:
    """The allowed bit positions for `bits` ("all", "sign", ..., or a comma-combination)."""
    if not isinstance(bits, str):
        raise TypeError(f"bit_flip: `bits` must be a string; got bits={bits!r}.")
    names = [name.strip() for name in bits.split(",")]
    unknown = [name for name in names if name not in BIT_GROUPS]
    if unknown or not names:
        raise ValueError(f"bit_flip: `bits` must be one or a comma-combination of "
                         f"{', '.join(BIT_GROUPS)}; got bits={bits!r}.")
    return tuple(sorted({position for name in names for position in BIT_GROUPS[name]}))


def bit_flip_mask(shape, seed, p=1e-3, bits="all") -> tf.Tensor:
    """§3 bit_flip: uint32 mask of `shape`; each allowed bit is set independently with prob. p.

    One uniform draw per element and allowed bit (shape + [number of allowed
    bits]); a bit is set when its draw is < p, so p = 0 sets none and p = 1 sets
    every allowed bit. Bit positions follow IEEE-754 binary32 (`BIT_GROUPS`).
    """
    p = _number("p", p, function="bit_flip")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"bit_flip: `p` must be in [0, 1]; got p={p}.")
    positions = _bit_positions(bits)
    shape = tf.convert_to_tensor(shape, dtype=tf.int32)
    draws = tf.random.stateless_uniform(
        tf.concat([shape, [len(positions)]], axis=0), seed=seed, dtype=tf.float32)
    # Summing distinct powers of two in int64 equals OR-ing them; the result fits in 32 bits.
    powers = tf.constant([2**position for position in positions], tf.int64)
    flips = tf.cast(draws < p, tf.int64)
    return tf.cast(tf.reduce_sum(flips * powers, axis=-1), tf.uint32)


def bit_flip(u, seed, p=1e-3, bits="all") -> tf.Tensor:
    """§3 bit_flip: bitcast(u) XOR `bit_flip_mask(shape(u), seed, p, bits)`, back to float32.

    `bits="sign", p=1` equals `sign_flip(u)` exactly. Exponent flips create huge,
    Inf and NaN values on purpose.
    """
    u = tf.convert_to_tensor(u)
    if u.dtype != tf.float32:
        raise TypeError(f"bit_flip: `u` must be float32 (32-bit view); got dtype={u.dtype.name}.")
    mask = bit_flip_mask(tf.shape(u), seed, p, bits)
    return tf.bitcast(tf.bitwise.bitwise_xor(tf.bitcast(u, tf.uint32), mask), tf.float32)


def constant(u, value) -> tf.Tensor:
    """§3 zero / constant / inf / nan: u → c·1 with c = 0, c (default 1), +∞ or NaN."""
    value = _number("value", value, function="constant")
    u = tf.convert_to_tensor(u)
    return tf.fill(tf.shape(u), tf.constant(value, u.dtype))


def random_params_noise(weights, seed, nu1=-5.0, nu2=1.5):
    """§3 random_params: ε_k ~ N(ν1·μ_θ, (ν2·σ_θ)²), same structure as `weights` (θ).

    μ_θ and σ_θ are the mean and population standard deviation (ddof 0) over all
    parameters of θ concatenated (computed in float64). Leaf k draws with
    `structure_seeds(seed, weights)[k]`. ν2 scales the std, as in the authors' code.
    """
    nu1 = _number("nu1", nu1, function="random_params_noise")
    nu2 = _number("nu2", nu2, function="random_params_noise")
    leaves = [tf.convert_to_tensor(leaf) for leaf in tf.nest.flatten(weights)]
    if not leaves:
        raise ValueError("random_params_noise: `weights` has no tensors.")
    flat = tf.concat([tf.reshape(tf.cast(leaf, tf.float64), [-1]) for leaf in leaves], axis=0)
    mean = tf.reduce_mean(flat)
    std = tf.sqrt(tf.reduce_mean(tf.square(flat - mean)))
    loc, scale = nu1 * mean, nu2 * std
    noise = [
        tf.cast(loc, leaf.dtype) + tf.cast(scale, leaf.dtype)
        * tf.random.stateless_normal(tf.shape(leaf), seed=leaf_seed, dtype=leaf.dtype)
        for leaf, leaf_seed in zip(leaves, structure_seeds(seed, weights))
    ]
    return tf.nest.pack_sequence_as(weights, noise)


# --- the attacks bound to the Byzantine clients' records -----------------------------------

def _map_delta(record, weight, fn, ctx):
    """Applies `fn(leaf, leaf_seed)` to every leaf of the record's delta."""
    leaves = tf.nest.flatten(record["delta"])
    seeds = structure_seeds(ctx.seed, leaves)
    out = collections.OrderedDict(record)
    out["delta"] = tf.nest.pack_sequence_as(
        record["delta"], [fn(leaf, seed) for leaf, seed in zip(leaves, seeds)])
    return out, weight


def local_update_attack(name: str, leaf_fn, *, start: int, loss: Optional[LossForgery],
                        reads_update: bool = True):
    """An attack `u → leaf_fn(u, seed)` on each leaf of the Byzantine clients' deltas;
    `reads_update=False` when `leaf_fn` ignores u's values."""
    def transform(record, weight, ctx):
        return _map_delta(record, weight, leaf_fn, ctx)
    local = LocalAttack(name, transform=with_local_loss(
        transform if leaf_fn is not None else None, loss), reads_update=reads_update)
    return AttackComponent(name, start=start, local=local, collusion=loss_collusion(name, loss))


def sign_flip_attack(name: str, *, scale: float, mode: str, start: int, loss):
    if mode == "ascent":
        local = LocalAttack(name, transform=with_local_loss(None, loss), ascent=True)
        return AttackComponent(name, start=start, local=local,
                               collusion=loss_collusion(name, loss))
    return local_update_attack(name, lambda u, _: sign_flip(u, scale),
                               start=start, loss=loss)


def random_params_attack(name: str, *, nu1: float, nu2: float, start: int, loss):
    """Train from θ + ε, ε ~ N(ν1 μ_θ, (ν2 σ_θ)²); report Δ = ψ − θ (attacks.md §3)."""

    def noise(trainable, ctx):
        return random_params_noise(trainable, ctx.seed, nu1, nu2)

    def correct(record, weight, ctx):
        # The honest work reported ψ − (θ + ε); relative to the true θ that is + ε.
        epsilon = noise(ctx.weights, ctx)
        out = collections.OrderedDict(record)
        out["delta"] = tf.nest.pack_sequence_as(
            record["delta"], [d + e for d, e in zip(tf.nest.flatten(record["delta"]), epsilon)])
        return out, weight

    local = LocalAttack(name, transform=with_local_loss(correct, loss), perturb_weights=noise)
    return AttackComponent(name, start=start, local=local, collusion=loss_collusion(name, loss))


def weight_lying_attack(name: str, *, count: float, start: int, loss):
    def lie_about_count(record, weight, ctx):
        del weight, ctx
        out = collections.OrderedDict(record)
        out["num_examples"] = tf.constant(count, tf.float32)
        return out, tf.constant(count, tf.float32)

    local = LocalAttack(name, transform=with_local_loss(lie_about_count, loss))
    return AttackComponent(name, start=start, local=local, collusion=loss_collusion(name, loss))


def _leaf(fn, reads_update=lambda **params: True):
    """An attack u → fn(u, seed, **params) on every leaf of the delta; `reads_update(**params)`
    is False when the attack's output ignores u's values."""
    def build(name, *, seed, dataset, start, loss, **params):
        del seed, dataset
        return local_update_attack(name, lambda u, leaf_seed: fn(u, leaf_seed, **params),
                                   start=start, loss=parse_loss(loss),
                                   reads_update=reads_update(**params))
    return build


def _ignores(**params) -> bool:
    del params
    return False


build_sign_flip = bound(sign_flip_attack)
build_scaling = _leaf(lambda u, seed, scale: scaling(u, scale))
build_gaussian = _leaf(lambda u, seed, sigma, mu, mode: gaussian(u, seed, sigma=sigma, mu=mu,
                                                                 mode=mode),
                       reads_update=lambda sigma, mu, mode: mode != "replace")
build_bit_flip = _leaf(lambda u, seed, p, bits: bit_flip(u, seed, p=p,
                                                         bits=bits.replace("|", ",")))
build_zero = _leaf(lambda u, seed: constant(u, 0.0), _ignores)
build_constant = _leaf(lambda u, seed, c: constant(u, c), _ignores)
build_inf = _leaf(lambda u, seed: constant(u, math.inf), _ignores)
build_nan = _leaf(lambda u, seed: constant(u, math.nan), _ignores)
build_random_params = bound(random_params_attack)
build_weight_lying = bound(weight_lying_attack)
