"""Each attack of attacks.md as an `AttackComponent`: the math (in
`attacks.perturbations`, `attacks.collusion`, `attacks.poisoning`) bound to where
it acts. The registry (`attacks.registry`) maps names and parameters to these.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from attacks import collusion as collusion_math
from attacks import perturbations, poisoning
from attacks.colluding import Collusion
from attacks.local import LocalAttack
from attacks.plan import AttackComponent, Backdoor

__all__ = ["LossForgery", "parse_loss", "local_update_attack", "sign_flip", "random_params",
           "weight_lying", "label_flip", "backdoor", "lie", "ipm", "min_max", "min_sum", "mimic",
           "mimic_misaligned", "LOSS_MODES"]

LOSS_MODES = ("auto", "honest", "value:<x>", "mean_minus_rho_std:<rho>", "mean_plus_z_std:<z>")


@dataclasses.dataclass(frozen=True)
class LossForgery:
    """What loss a Byzantine client reports (used by FedLAW's weight step)."""
    mode: str  # "honest" | "value" | "mean_minus_rho_std" | "mean_plus_z_std"
    amount: float = 0.0

    @property
    def needs_server(self) -> bool:
        return self.mode in ("mean_minus_rho_std", "mean_plus_z_std")


def parse_loss(text: str) -> Optional[LossForgery]:
    """`auto` → None (the attack's own default), else a `LossForgery`; ValueError if bad."""
    mode, sep, amount = text.partition(":")
    if mode == "auto" and not sep:
        return None
    if mode == "honest" and not sep:
        return LossForgery("honest")
    if mode in ("value", "mean_minus_rho_std", "mean_plus_z_std") and sep:
        number = float(amount)
        if not np.isfinite(number):
            raise ValueError(f"loss amount must be finite; got {amount!r}")
        return LossForgery(mode, number)
    raise ValueError(f"valid forms: {', '.join(LOSS_MODES)}")


def check_loss(text: str) -> Optional[str]:
    try:
        parse_loss(text)
    except ValueError as error:
        return str(error)
    return None


# --- local update attacks (attacks.md §3) -----------------------------------

def _map_delta(record, weight, fn, ctx):
    """Applies `fn(leaf, leaf_seed)` to every leaf of the record's delta."""
    leaves = tf.nest.flatten(record["delta"])
    seeds = perturbations.structure_seeds(ctx.seed, leaves)
    out = collections.OrderedDict(record)
    out["delta"] = tf.nest.pack_sequence_as(
        record["delta"], [fn(leaf, seed) for leaf, seed in zip(leaves, seeds)])
    return out, weight


def _with_local_loss(transform, loss: Optional[LossForgery]):
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


def _loss_collusion(name: str, loss: Optional[LossForgery]) -> Optional[Collusion]:
    """A server-side loss forgery from the honest losses' statistics, if asked for."""
    if loss is None or not loss.needs_server:
        return None
    mode = loss.mode

    def compute(values, honest, own, client_ids, losses, seed, memory):
        del own, client_ids, seed
        forged = collusion_math.forged_loss(tf.boolean_mask(losses, honest), mode, loss.amount)
        return tf.zeros([tf.shape(values)[1]], tf.float32), forged, memory, collections.OrderedDict()

    return Collusion(f"{name}_loss", compute, replaces_update=False, forges_loss=True)


def local_update_attack(name: str, leaf_fn, *, start: int, loss: Optional[LossForgery]):
    """An attack `u → leaf_fn(u, seed)` on each leaf of the Byzantine clients' deltas."""
    def transform(record, weight, ctx):
        return _map_delta(record, weight, leaf_fn, ctx)
    local = LocalAttack(name, transform=_with_local_loss(
        transform if leaf_fn is not None else None, loss))
    return AttackComponent(name, start=start, local=local, collusion=_loss_collusion(name, loss))


def sign_flip(name: str, *, scale: float, mode: str, start: int, loss):
    if mode == "ascent":
        local = LocalAttack(name, transform=_with_local_loss(None, loss), ascent=True)
        return AttackComponent(name, start=start, local=local,
                               collusion=_loss_collusion(name, loss))
    return local_update_attack(name, lambda u, _: perturbations.sign_flip(u, scale),
                               start=start, loss=loss)


def random_params(name: str, *, nu1: float, nu2: float, start: int, loss):
    """Train from θ + ε, ε ~ N(ν1 μ_θ, (ν2 σ_θ)²); report Δ = ψ − θ (attacks.md §3)."""

    def noise(trainable, ctx):
        return perturbations.random_params_noise(trainable, ctx.seed, nu1, nu2)

    def correct(record, weight, ctx):
        # The honest work reported ψ − (θ + ε); relative to the true θ that is + ε.
        epsilon = noise(ctx.weights, ctx)
        out = collections.OrderedDict(record)
        out["delta"] = tf.nest.pack_sequence_as(
            record["delta"], [d + e for d, e in zip(tf.nest.flatten(record["delta"]), epsilon)])
        return out, weight

    local = LocalAttack(name, transform=_with_local_loss(correct, loss), perturb_weights=noise)
    return AttackComponent(name, start=start, local=local, collusion=_loss_collusion(name, loss))


def weight_lying(name: str, *, count: float, start: int, loss):
    def lie_about_count(record, weight, ctx):
        del weight, ctx
        out = collections.OrderedDict(record)
        out["num_examples"] = tf.constant(count, tf.float32)
        return out, tf.constant(count, tf.float32)

    local = LocalAttack(name, transform=_with_local_loss(lie_about_count, loss))
    return AttackComponent(name, start=start, local=local, collusion=_loss_collusion(name, loss))


# --- data poisoning (attacks.md §2) -------------------------------------------

def label_flip(name: str, *, label_map: str, start: int, loss):
    def poison(x, y, positions, num_examples, seed, num_classes):
        del positions, num_examples, seed
        mapping = poisoning.parse_label_map(label_map, num_classes) if label_map else None
        return x, poisoning.flip_labels_tf(y, num_classes, mapping)

    component = local_update_attack(name, None, start=start, loss=loss)
    return dataclasses.replace(component, poison=poison)


def backdoor(name: str, *, size: Optional[int], row: Optional[int], col: Optional[int],
             value: float, target: str, fraction: float, preset: str, start: int, loss,
             image_shape, num_classes: int, normalization):
    """Trigger-patch poisoning plus the stamp used to score it on the test set."""
    corner = None if row is None and col is None else (row or 0, col or 0)
    options = dict(size=size, corner=corner, value=value,
                   target="random" if target == "random" else int(target))
    if preset == "fedlaw_code":
        options = poisoning.fedlaw_code_preset(normalization)
    poison_options = dict(options)
    stamp_options = {k: poison_options.pop(k) for k in ("size", "corner", "value")}
    poisoning.backdoor_geometry(image_shape, stamp_options["size"], stamp_options["corner"])
    if isinstance(poison_options.get("target"), int) and not \
            0 <= poison_options["target"] < num_classes:
        raise ValueError(f"backdoor: target={poison_options['target']} is not a label in "
                         f"[0, {num_classes}).")

    def poison(x, y, positions, num_examples, seed, num_classes):
        return poisoning.backdoor_tf(x, y, positions, num_examples, seed, num_classes=num_classes,
                                     fraction=fraction, **stamp_options, **poison_options)

    target_label = poison_options.get("target")
    door = Backdoor(stamp=lambda x: poisoning.triggered_test_set(x, **stamp_options),
                    target=target_label if isinstance(target_label, int) else None)
    component = local_update_attack(name, None, start=start, loss=loss)
    return dataclasses.replace(component, poison=poison, backdoor=door)


# --- colluding attacks (attacks.md §4) -----------------------------------------

def _reference(honest, own, stats):
    return honest if stats == "honest" else own


def _colluding(name, vector_fn, *, start, loss):
    """A Collusion sending `vector_fn(values, honest, own, client_ids, seed, memory)`.

    A server-side `loss` (mean_*_std) is forged from the honest losses; `value:x`
    is set locally; `auto`/`honest` leave the losses alone."""
    forges = loss is not None and loss.needs_server

    def compute(values, honest, own, client_ids, losses, seed, memory):
        vector, memory, named = vector_fn(values, honest, own, client_ids, seed, memory)
        forged = tf.constant(0.0)
        if forges:
            forged = collusion_math.forged_loss(tf.boolean_mask(losses, honest), loss.mode,
                                                loss.amount)
        return vector, tf.cast(forged, tf.float32), memory, named

    collusion = Collusion(name, compute, replaces_update=True, forges_loss=forges)
    local = None
    if loss is not None and loss.mode == "value":
        local = LocalAttack(name, transform=_with_local_loss(None, loss))
    return AttackComponent(name, start=start, local=local, collusion=collusion)


def _statistics(values, honest, own, stats, ddof):
    return collusion_math.reference_statistics(values, _reference(honest, own, stats), ddof)


LIE_PRESETS = {
    # The FedLAW authors' code (amirhdaghestani/sparse-federated-learning, attack/attack.py
    # and server/server_base.py) as it attacks FedLAW: on pseudo-gradients g = −Δ/α with
    # +z, so on the update Δ it is μ − zσ; σ is torch.std (unbiased); the loss is μ_f + z σ_f
    # (np.std) of the same reference set. (Their FedAvg server collects deltas, attacked
    # with +z: that is plain lie:z=...,ddof=1.) Final release (ae74e1f3): honest statistics and
    # z = Φ⁻¹((n − s)/n), s = ⌊n/2⌋ + 1 + m (−1.311 at n = 200, m = 80).
    "fedlaw_code": dict(z="fedlaw_code", stats="honest"),
    # An earlier version (a24dc218): the Byzantine clients' own statistics, Baruch's z.
    "fedlaw_code_v1": dict(z="baruch", stats="byzantine"),
}


def lie(name: str, *, z: str, stats: str, ddof: int, start: int, loss,
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
    fixed = _parse_z(z)

    def vector_fn(values, honest, own, client_ids, seed, memory):
        del client_ids, seed
        mu, sigma = _statistics(values, honest, own, stats, ddof)
        n = tf.shape(values)[0]
        m = tf.reduce_sum(tf.cast(tf.logical_not(honest), tf.int32))
        z_value = tf.cast(collusion_math.lie_z_tensor(n, m, fixed), tf.float32)
        return collusion_math.lie_vector(mu, sigma, update_sign * z_value), memory, \
            collections.OrderedDict(z=z_value)

    component = _colluding(name, vector_fn, start=start, loss=loss)
    if isinstance(fixed, str):
        component = dataclasses.replace(
            component, check=lambda n, m: collusion_math.lie_z(n, m, fixed))
    if loss is not None:
        return component

    def compute(values, honest, own, client_ids, losses, seed, memory):
        vector, memory, named = vector_fn(values, honest, own, client_ids, seed, memory)
        reference = tf.boolean_mask(losses, _reference(honest, own, stats))
        forged = tf.reduce_mean(reference) + named["z"] * tf.math.reduce_std(reference)
        return vector, tf.cast(forged, tf.float32), memory, named

    return dataclasses.replace(
        component, collusion=Collusion(name, compute, replaces_update=True, forges_loss=True))


def _parse_z(z: str):
    if z in ("baruch", "blades", "fedlaw_code"):
        return z
    return float(z)


def check_z(z: str) -> Optional[str]:
    try:
        _parse_z(z)
    except ValueError:
        return "must be baruch, blades, fedlaw_code or a number"
    return None


def ipm(name: str, *, eps: float, stats: str, start: int, loss):
    def vector_fn(values, honest, own, client_ids, seed, memory):
        del client_ids, seed
        mu, _ = _statistics(values, honest, own, stats, 0)
        return collusion_math.ipm_vector(mu, eps), memory, collections.OrderedDict()

    return _colluding(name, vector_fn, start=start, loss=loss)


def _min_search(kind: str):
    def build(name: str, *, p: str, gamma0: float, stats: str, bound: str = "min", start: int,
              loss):
        def vector_fn(values, honest, own, client_ids, seed, memory):
            del client_ids, seed
            reference = _reference(honest, own, stats)
            mu, sigma = collusion_math.reference_statistics(values, reference, 0)
            direction = collusion_math.perturbation(mu, sigma, p)
            rows = tf.boolean_mask(values, reference)
            if kind == "min_max":
                gamma = collusion_math.min_max_gamma(rows, mu, direction, gamma0=gamma0)
            else:
                gamma = collusion_math.min_sum_gamma(rows, mu, direction, gamma0=gamma0,
                                                     bound=bound)
            gamma = tf.cast(gamma, tf.float32)
            return mu - gamma * direction, memory, collections.OrderedDict(gamma=gamma)

        return _colluding(name, vector_fn, start=start, loss=loss)

    return build


min_max = _min_search("min_max")
min_sum = _min_search("min_sum")


def mimic(name: str, *, target: str, seed: int, start: int, loss):
    """Every Byzantine client sends one honest client's vector; the target is fixed
    for the run (chosen at the first attacked round; re-chosen, with the same rule,
    only if it does not take part in a later round)."""

    def vector_fn(values, honest, own, client_ids, round_seed, memory):
        del own
        present = tf.logical_and(honest, tf.equal(client_ids, memory))
        honest_rows = tf.cast(tf.where(honest)[:, 0], tf.int32)

        def choose():
            if target == "max_variance":
                return collusion_math.max_variance_index(values, honest)
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

    return _colluding(name, vector_fn, start=start, loss=loss)


def mimic_misaligned(name: str, *, eta: float, rho: float, start: int, loss):
    """−u_j + η e_j locally; reported loss μ_f − ρ σ_f of the honest losses (default)."""

    def misalign(record, weight, ctx):
        leaves = tf.nest.flatten(record["delta"])
        flat = tf.concat([tf.reshape(leaf, [-1]) for leaf in leaves], axis=0)
        moved = collusion_math.mimic_misaligned_vectors(
            flat[tf.newaxis], ctx.seed[tf.newaxis], eta)[0]
        parts = tf.split(moved, [int(np.prod(leaf.shape)) for leaf in leaves])
        out = collections.OrderedDict(record)
        out["delta"] = tf.nest.pack_sequence_as(
            record["delta"], [tf.reshape(p, leaf.shape) for p, leaf in zip(parts, leaves)])
        return out, weight

    forgery = loss if loss is not None else LossForgery("mean_minus_rho_std", rho)
    local = LocalAttack(name, transform=_with_local_loss(misalign, forgery))
    return AttackComponent(name, start=start, local=local,
                           collusion=_loss_collusion(name, forgery))
