"""Adaptive ("optimal") LIE and IPM: the attack's scale searched against the actual defence
each round (the Byzantine-FL libraries' Opt-ALIE / Opt-IPM; Allouah et al. 2023). The
search and the attacks bound to a run; their `--attack` entries are `attacks.adaptive`.

Each round the colluding clients of the group send the same vector b(τ): IPM's −τ μ or
LIE's μ − τ σ of the reference set (`attacks.reference`) of updates, which is the libraries'
μ + τ σ of gradients or momenta (an update is a negative gradient: Δ = −η g, or −m under
momentum SGD). τ is the one, among those a line search tries, that maximises

    F(τ) = ‖ Agg(the round's rows, the group's rows replaced by b(τ)) − μ_H ‖₂,

the distance of the robust aggregate from the honest mean μ_H. Agg is the run's own rule,
evaluated on the stacked rows with equal weights and its current state
(`aggregators.base.RobustAggregationFactory.simulate`; `mean` too).

The line search (`line_maximize`), forward only: F(start) first; then, while the step
improves F (strictly), τ ← τ + δ and δ ← 2δ; at the first step that does not, δ ← ratio·δ
and the search contracts: each remaining evaluation tries τ + δ, keeps it if strictly
better, and sets δ ← ratio·δ. `evals` evaluations in all, counting F(start).
"""

from __future__ import annotations

import collections

import tensorflow as tf

from attacks.checks import plain_tf
from attacks.colluding import Collusion
from attacks.params import bound
from attacks.plan import AttackComponent
from attacks.reference import statistics

__all__ = ["line_maximize", "attack_distance", "ipm_optimal_attack", "lie_optimal_attack",
           "build_ipm_optimal", "build_lie_optimal"]


@plain_tf
def line_maximize(objective, *, start=0.0, delta=10.0, evals=20, ratio=0.8):
    """(τ, F(τ)): the forward line search of the module doc on a scalar `objective`."""
    start = tf.constant(start, tf.float64)
    best_y = tf.cast(objective(start), tf.float64)

    def body(left, expanding, tau, y, step):
        candidate = tau + step
        value = tf.cast(objective(candidate), tf.float64)
        better = value > y
        tau, y = tf.where(better, candidate, tau), tf.where(better, value, y)
        keep_expanding = tf.logical_and(expanding, better)
        step = tf.where(keep_expanding, 2.0 * step, ratio * step)
        return left - 1, keep_expanding, tau, y, step

    _, _, tau, y, _ = tf.while_loop(
        lambda left, *_: left > 0, body,
        (tf.constant(evals - 1), tf.constant(True), start, best_y,
         tf.constant(delta, tf.float64)))
    return tau, y


def attack_distance(defence, values, honest, own, vector):
    """F for one candidate: ‖defence(values, own rows ← vector) − mean of the honest rows‖."""
    honest_mean = tf.reduce_mean(tf.boolean_mask(values, honest), axis=0)
    replaced = tf.where(own[:, tf.newaxis], vector[tf.newaxis, :], values)
    return tf.norm(tf.cast(defence(replaced) - honest_mean, tf.float64))


def _adaptive(name, base, *, stats, ddof, start, delta, evals, ratio, first_round):
    """A colluding component sending `base(μ, σ, τ)` at the searched τ."""

    def compute(values, honest, own, client_ids, losses, seed, memory, *, defence):
        del client_ids, losses, seed
        mu, sigma = statistics(values, honest, own, stats, ddof)

        def objective(tau):
            return attack_distance(defence, values, honest, own,
                                   base(mu, sigma, tf.cast(tau, mu.dtype)))

        tau, distance = line_maximize(objective, start=start, delta=delta, evals=evals,
                                      ratio=ratio)
        vector = base(mu, sigma, tf.cast(tau, mu.dtype))
        return vector, tf.constant(0.0), memory, collections.OrderedDict(
            tau=tf.cast(tau, tf.float32), distance=tf.cast(distance, tf.float32))

    collusion = Collusion(name, compute, replaces_update=True, reads_own=stats == "byzantine",
                          uses_defence=True)
    return AttackComponent(name, start=first_round, collusion=collusion)


def _honest_loss_only(loss):
    if loss is not None and loss.mode != "honest":
        raise ValueError("an adaptive attack reports the honest loss; loss= must be auto or "
                         "honest")


def ipm_optimal_attack(name, *, stats, tau0, delta, evals, ratio, start, loss):
    _honest_loss_only(loss)
    return _adaptive(name, lambda mu, sigma, tau: -tau * mu, stats=stats, ddof=0, start=tau0,
                     delta=delta, evals=evals, ratio=ratio, first_round=start)


def lie_optimal_attack(name, *, stats, ddof, tau0, delta, evals, ratio, start, loss):
    _honest_loss_only(loss)
    return _adaptive(name, lambda mu, sigma, tau: mu - tau * sigma, stats=stats, ddof=ddof,
                     start=tau0, delta=delta, evals=evals, ratio=ratio, first_round=start)


build_ipm_optimal = bound(ipm_optimal_attack)
build_lie_optimal = bound(lie_optimal_attack)
