"""The argument checks and the graph mode the attacks' TF math shares."""

from __future__ import annotations

import math
import numbers

import tensorflow as tf

__all__ = ["plain_tf", "is_number", "check_choice", "check_positive"]

# The functions building TF ops branch only on Python arguments and loop with
# explicit `tf.while_loop`s, so AutoGraph has nothing to convert; skipping it cuts
# the tracing time inside a caller's `tf.function` from ~4 s to ~1 s.
plain_tf = tf.autograph.experimental.do_not_convert


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}; got {name}={value!r}.")


def check_positive(name, value):
    if not is_number(value):
        raise TypeError(f"`{name}` must be a number; got {name}={value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be finite and > 0; got {name}={value!r}.")
