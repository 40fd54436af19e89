"""PDMM's update rules as pure functions on structures of tensors (pdmm.md §1–§3).

Centralized PDMM in the scaled variables of pdmm.md §2 (client i holds w_i,
v_i = −z_{i|s}/c, u_i = z_{s|i}/c; the server holds z̄ = mean_i u_i):

    w_i ← argmin_w f_i(w) + (c/2)‖w − v_i‖²     (inexact: K steps of `prox_gradient`)
    y_i = 2 w_i − v_i                           (`uplink_message`, the only uplink)
    u_i ← (1 − θ) u_i + θ y_i                   (`relax`)
    z̄ ← (1 − θ) z̄ + θ mean_i y_i;  w_s = z̄
    v_i ← (1 − θ) v_i + θ (2 w_s − u_i)         (`relax` of `server_reply`)

Decentralized PDMM (§1, §3), node i with duals z_{i|j}, B_{i|j} = ±1:

    gradient of the primal step: ∇f_i(w) + Σ_j B_{i|j} z_{i|j} + c d_i w   (`node_gradient`)
    y_{i|j} = z_{i|j} + 2 c B_{i|j} w_i                                    (`edge_message`)
    z_{i|j} ← (1 − θ) z_{i|j} + θ y_{j|i}                                  (`relax`)

All functions map leaf by leaf over `tf.nest` structures (or plain tensors /
numpy arrays for the arithmetic ones), so they serve the TFF processes and
the NumPy references in the tests alike.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["prox_gradient", "uplink_message", "relax", "server_reply", "node_gradient",
           "edge_message", "squared_distance"]


def _map(fn, *structures):
    """`tf.nest.map_structure`, with a fast path for plain arrays and tensors."""
    if all(isinstance(x, (np.ndarray, np.generic, float, tf.Tensor, tf.Variable))
           for x in structures):
        return fn(*structures)
    return tf.nest.map_structure(fn, *structures)


def prox_gradient(gradients, w, v, *, c):
    """∇f(w) + c (w − v): the gradient of f(w) + (c/2)‖w − v‖², leaf by leaf."""
    return _map(lambda g, wl, vl: g + c * (wl - vl), gradients, w, v)


def uplink_message(w, v):
    """y = 2w − v (the reflection of v through w)."""
    return _map(lambda wl, vl: 2.0 * wl - vl, w, v)


def relax(old, new, *, theta):
    """(1 − θ) old + θ new: θ = 1 plain PDMM, θ = 1/2 averaged PDMM."""
    if theta == 1.0:
        return _map(lambda o, n: n, old, new)
    return _map(lambda o, n: (1.0 - theta) * o + theta * n, old, new)


def server_reply(w_s, u):
    """2 w_s − u: the server's message y_{s|i}, scaled (computed by the client from w_s)."""
    return _map(lambda s, ul: 2.0 * s - ul, w_s, u)


def node_gradient(gradients, w, dual_sum, *, c, degree):
    """∇f_i(w) + Σ_j B_{i|j} z_{i|j} + c d_i w (`dual_sum` = Σ_j B_{i|j} z_{i|j})."""
    return _map(lambda g, wl, zl: g + zl + c * degree * wl,
                                 gradients, w, dual_sum)


def edge_message(z, w, *, c, sign):
    """y_{i|j} = z_{i|j} + 2c B_{i|j} w_i."""
    return _map(lambda zl, wl: zl + 2.0 * c * sign * wl, z, w)


def squared_distance(a, b):
    """‖a − b‖² summed over every leaf (float32 scalar)."""
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(x, tf.float32) - tf.cast(y, tf.float32)))
                     for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b))])
