"""Data poisoning: label flips and the backdoor trigger (spec `attacks.md` §2) and the two
attacks bound to a run (`build_label_flip`, `build_backdoor`); their `--attack` entries are
`attacks.poisoning`.

Two forms of each attack:
- TensorFlow, per example (`flip_labels_tf`, `backdoor_tf`): what runs in TFF's
  worker when a Byzantine client reads its rows (`tff_byz.client_inputs`).
  Whether example j of a client is poisoned, and its random target, depend only
  on (seed, client, j), so a round that reads a subset of the rows sees exactly
  the subset of the poisoned data: the poisoned set is fixed for the run.
- NumPy, whole arrays (`flip_labels`, `backdoor_poison`, `stamp_trigger`): the
  reference semantics, and the triggered test set scored on the host.

Images are float32 `[N, H, W, C]` raw pixels in [0, 1] (the model normalises
them in its first layer), labels int32 `[N]`. Randomness is explicit (stateless
seeds or a caller's `np.random.Generator`); nothing touches global random state.

Backdoor defaults: a k×k patch with k = min(8, ⌊min(H, W)/2⌋), i.e. the spec's
k = 8 on 28×28 / 32×32 images and k = 4 on the embedded 8×8 `digits` images
(an 8×8 patch would cover the whole image); at the centre, value 0 (black).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional

import numpy as np
import tensorflow as tf

from attacks.params import parse_loss
from attacks.perturbations.updates import local_update_attack
from attacks.plan import Backdoor

__all__ = [
    "build_label_flip",
    "build_backdoor",
    "label_flip_attack",
    "backdoor_attack",
    "attack_success_rate",
    "backdoor_geometry",
    "backdoor_poison",
    "backdoor_tf",
    "flip_labels_tf",
    "fedlaw_code_preset",
    "flip_labels",
    "parse_label_map",
    "stamp_trigger",
    "triggered_test_set",
]

# Spec default patch size; the automatic size never exceeds half the image side.
_DEFAULT_PATCH = 8


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_num_classes(num_classes, function: str) -> int:
    if not _is_int(num_classes):
        raise TypeError(f"{function}: `num_classes` must be an int; got num_classes={num_classes!r}.")
    if num_classes < 2:
        raise ValueError(f"{function}: `num_classes` must be >= 2; got num_classes={num_classes}.")
    return int(num_classes)


def _check_labels(y, num_classes: int, function: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{function}: labels must be a 1-D integer array; "
                        f"got shape={y.shape}, dtype={y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{function}: labels must be in 0..{num_classes - 1}; "
                         f"got min={y.min()}, max={y.max()}.")
    return y


def parse_label_map(text: str, num_classes: int) -> np.ndarray:
    """§2 label_flip map: "0:1,1:0" → int32 array `m` of length L, identity where unmapped.

    ValueError (one line, naming the bad item and the valid range 0..L−1) for a
    malformed item, a label out of range, or a source label mapped twice.
    """
    num_classes = _check_num_classes(num_classes, "parse_label_map")
    if not isinstance(text, str):
        raise TypeError(f"parse_label_map: `text` must be a string; got text={text!r}.")
    label_map = np.arange(num_classes, dtype=np.int32)
    seen = set()
    for item in text.split(","):
        parts = item.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            source, target = (int(part.strip()) for part in parts)
        except ValueError:
            raise ValueError(f"label map item {item.strip()!r} must be 'source:target' with integer "
                             f"labels in 0..{num_classes - 1} (e.g. '0:1,1:0').") from None
        if not (0 <= source < num_classes and 0 <= target < num_classes):
            raise ValueError(
                f"label map item {item.strip()!r}: labels must be in 0..{num_classes - 1}.")
        if source in seen:
            raise ValueError(f"label map item {item.strip()!r}: label {source} is mapped twice "
                             f"(labels in 0..{num_classes - 1}).")
        seen.add(source)
        label_map[source] = target
    return label_map


def flip_labels(y, num_classes, label_map=None) -> np.ndarray:
    """§2 label_flip: l → L−1−l, or l → label_map[l] (length-L array, see `parse_label_map`)."""
    num_classes = _check_num_classes(num_classes, "flip_labels")
    y = _check_labels(y, num_classes, "flip_labels")
    if label_map is None:
        return (num_classes - 1 - y).astype(np.int32)
    label_map = np.asarray(label_map)
    if label_map.shape != (num_classes,) or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f"flip_labels: `label_map` must be an integer array of length {num_classes}; "
                         f"got shape={label_map.shape}, dtype={label_map.dtype}.")
    if label_map.min() < 0 or label_map.max() >= num_classes:
        raise ValueError(
            f"flip_labels: `label_map` values must be in 0..{num_classes - 1}; got {label_map}.")
    return label_map[y].astype(np.int32)


def backdoor_geometry(image_shape, size=None, corner=None) -> tuple[int, int, int]:
    """§2 backdoor patch: `(k, row, col)` of the k×k patch with top-left corner (row, col).

    `image_shape` is (H, W, ...) (extra trailing dims, e.g. channels, ignored).
    size None → k = min(8, ⌊min(H, W)/2⌋) (8 on 28×28, 4 on 8×8); corner None →
    centre (⌊(H−k)/2⌋, ⌊(W−k)/2⌋). ValueError when the patch does not fit.
    """
    if len(image_shape) < 2:
        raise ValueError(
            f"backdoor: `image_shape` must be (H, W, ...); got image_shape={tuple(image_shape)}.")
    height, width = int(image_shape[0]), int(image_shape[1])
    if size is None:
        size = min(_DEFAULT_PATCH, min(height, width) // 2)
        if size < 1:
            raise ValueError(
                f"backdoor: image {height}×{width} too small for an automatic patch size.")
    elif not _is_int(size):
        raise TypeError(f"backdoor: `size` must be an int; got size={size!r}.")
    elif size < 1:
        raise ValueError(f"backdoor: `size` must be >= 1; got size={size}.")
    size = int(size)
    if corner is None:
        row, col = (height - size) // 2, (width - size) // 2
    else:
        if len(corner) != 2 or not all(_is_int(c) for c in corner):
            raise TypeError(f"backdoor: `corner` must be two ints (row, col); got corner={corner!r}.")
        row, col = int(corner[0]), int(corner[1])
    if row < 0 or col < 0 or row + size > height or col + size > width:
        raise ValueError(f"backdoor: a {size}×{size} patch at corner ({row}, {col}) does not fit "
                         f"in a {height}×{width} image.")
    return size, row, col


def stamp_trigger(x, size=None, corner=None, value=0.0) -> np.ndarray:
    """§2 backdoor trigger: a copy of `x` [N, H, W, C] with the k×k patch set to `value`.

    `value` is a scalar (all channels) or an array of C per-channel values, in raw
    pixel units. Geometry from `backdoor_geometry(x.shape[1:], size, corner)`.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"stamp_trigger: `x` must be [N, H, W, C]; got shape={x.shape}.")
    value = np.asarray(value, dtype=x.dtype)
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] not in (1, x.shape[3])):
        raise ValueError(f"stamp_trigger: `value` must be a scalar or {x.shape[3]} per-channel values; "
                         f"got value={value}.")
    size, row, col = backdoor_geometry(x.shape[1:], size, corner)
    stamped = x.copy()
    stamped[:, row:row + size, col:col + size, :] = value
    return stamped


def backdoor_poison(x, y, rng: np.random.Generator, *, num_classes, fraction=1.0, size=None,
                    corner=None, value=0.0, target="random", target_classes=None):
    """§2 backdoor: stamp and relabel round(p·N) examples; returns (x_new, y_new, poisoned_mask).

    The poisoned examples are drawn with `rng.choice(N, round(p·N), replace=False)`
    (p = `fraction`; Python's round). Their label becomes `target` (an int), or,
    with `target="random"`, a uniform draw per poisoned example (one
    `rng.integers` call, after the choice, in index order) from `target_classes`
    (default all of 0..L−1; the fedlaw_code preset uses 0..8). The other
    examples are returned unchanged. Inputs are not modified.
    """
    num_classes = _check_num_classes(num_classes, "backdoor_poison")
    x = np.asarray(x)
    y = _check_labels(y, num_classes, "backdoor_poison")
    if x.ndim != 4 or x.shape[0] != y.shape[0]:
        raise ValueError(f"backdoor_poison: `x` must be [N, H, W, C] with N = len(y); "
                         f"got x.shape={x.shape}, len(y)={y.shape[0]}.")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise TypeError(f"backdoor_poison: `fraction` must be a number; got fraction={fraction!r}.")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"backdoor_poison: `fraction` must be in [0, 1]; got fraction={fraction}.")
    if target == "random":
        classes = np.arange(num_classes) if target_classes is None else np.asarray(target_classes)
        if classes.ndim != 1 or classes.size == 0 or not np.issubdtype(classes.dtype, np.integer):
            raise ValueError(f"backdoor_poison: `target_classes` must be a non-empty list of ints; "
                             f"got target_classes={target_classes!r}.")
        if classes.min() < 0 or classes.max() >= num_classes:
            raise ValueError(f"backdoor_poison: `target_classes` must be in 0..{num_classes - 1}; "
                             f"got target_classes={target_classes!r}.")
    elif _is_int(target):
        if target_classes is not None:
            raise ValueError(f"backdoor_poison: `target_classes` applies only to target='random'; "
                             f"got target={target}, target_classes={target_classes!r}.")
        if not 0 <= target < num_classes:
            raise ValueError(f"backdoor_poison: `target` must be 'random' or a label in "
                             f"0..{num_classes - 1}; got target={target}.")
    else:
        raise ValueError(
            f"backdoor_poison: `target` must be 'random' or an int label; got target={target!r}.")
    # Validate the geometry (and value) even when nothing is poisoned.
    backdoor_geometry(x.shape[1:], size, corner)

    count = round(fraction * x.shape[0])
    indices = np.sort(rng.choice(x.shape[0], size=count, replace=False))
    mask = np.zeros(x.shape[0], dtype=bool)
    mask[indices] = True
    x_new = x.copy()
    y_new = y.astype(np.int32)  # a copy
    x_new[indices] = stamp_trigger(x[indices], size, corner, value)
    if target == "random":
        y_new[indices] = classes[rng.integers(0, classes.size, size=count)]
    else:
        y_new[indices] = target
    return x_new, y_new, mask


def flip_labels_tf(y, num_classes: int, label_map=None):
    """TF form of `flip_labels`: l → L−1−l, or l → label_map[l]. Per example."""
    if label_map is None:
        return tf.cast(num_classes - 1, y.dtype) - y
    return tf.gather(tf.constant(np.asarray(label_map), y.dtype), y)


def backdoor_tf(x, y, positions, num_examples, seed, *, num_classes: int, fraction=1.0, size=None,
                corner=None, value=0.0, target="random", target_classes=None):
    """TF form of `backdoor_poison` on the rows at client-local `positions` of a client with
    `num_examples` examples; returns (x, y) of those rows.

    Which round(p·N) of the client's N examples carry the trigger: the first
    round(p·N) of a permutation seeded by `seed` (int64[2]; one per client and
    run); a random target is one uniform draw per example from the same seed.
    Both depend only on (seed, position), never on which rows a round reads.
    Same patch, value and labels as `backdoor_poison`, different random draws.
    """
    size, row, col = backdoor_geometry(tuple(x.shape[1:]), size, corner)
    height, width, channels = (int(d) for d in x.shape[1:])
    patch = np.zeros([height, width, channels], bool)
    patch[row:row + size, col:col + size, :] = True
    fill = np.broadcast_to(np.asarray(value, np.float32), [height, width, channels])
    num_examples = tf.cast(num_examples, tf.int32)
    count = tf.cast(tf.round(float(fraction) * tf.cast(num_examples, tf.float64)), tf.int32)
    order = tf.random.experimental.stateless_shuffle(tf.range(num_examples), seed=seed)
    rank = tf.gather(tf.math.invert_permutation(order), positions)
    chosen = rank < count
    if target == "random":
        classes = np.arange(num_classes) if target_classes is None else np.asarray(target_classes)
        draws = tf.random.stateless_uniform(
            [num_examples], seed=tf.random.experimental.stateless_fold_in(seed, 1),
            minval=0, maxval=len(classes), dtype=tf.int32)
        new_labels = tf.gather(tf.constant(classes, y.dtype), tf.gather(draws, positions))
    else:
        new_labels = tf.fill(tf.shape(y), tf.cast(target, y.dtype))
    stamped = tf.where(tf.logical_and(chosen[:, tf.newaxis, tf.newaxis, tf.newaxis],
                                      tf.constant(patch)[tf.newaxis]),
                       tf.constant(fill)[tf.newaxis], x)
    return stamped, tf.where(chosen, new_labels, y)


def fedlaw_code_preset(normalization) -> dict:
    """§2 `backdoor:preset=fedlaw_code`: keyword arguments for `backdoor_poison`.

    k = 10 at corner (9, 9), value 0 *after* normalisation, i.e. the raw value is
    the per-channel mean of `normalization` = ((mean, ...), (std, ...)) (a float
    for one channel, a per-channel array otherwise), target uniform in {0, …, 8}
    (`target="random", target_classes=(0, …, 8)`). Needs images of at least 19×19.
    """
    try:
        mean = np.asarray(normalization[0], dtype=np.float32).ravel()
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"fedlaw_code_preset: `normalization` must be ((mean, ...), (std, ...)); "
                         f"got normalization={normalization!r}.") from None
    if mean.size == 0:
        raise ValueError(f"fedlaw_code_preset: `normalization` has no mean; "
                         f"got normalization={normalization!r}.")
    value = float(mean[0]) if mean.size == 1 else mean
    return dict(size=10, corner=(9, 9), value=value, target="random", target_classes=tuple(range(9)))


def triggered_test_set(x, size=None, corner=None, value=0.0) -> np.ndarray:
    """§2 metrics: every test image stamped with the trigger (labels unchanged, kept by the caller)."""
    return stamp_trigger(x, size, corner, value)


def attack_success_rate(predictions, true_labels, target) -> float:
    """§2 ASR: share of triggered test images with true label ≠ target predicted as the target.

    `predictions` are predicted labels [N] (or logits [N, L], reduced by argmax).
    NaN when no test image has a true label ≠ target.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        predictions = predictions.argmax(axis=1)
    true_labels = np.asarray(true_labels)
    if predictions.shape != true_labels.shape or predictions.ndim != 1:
        raise ValueError(f"attack_success_rate: predictions and true_labels must be [N]; "
                         f"got {predictions.shape} and {true_labels.shape}.")
    eligible = true_labels != target
    if not eligible.any():
        return float("nan")
    return float(np.mean(predictions[eligible] == target))


# --- the attacks bound to a run --------------------------------------------------------

def label_flip_attack(name: str, *, label_map: str, start: int, loss):
    def poison(x, y, positions, num_examples, seed, num_classes):
        del positions, num_examples, seed
        mapping = parse_label_map(label_map, num_classes) if label_map else None
        return x, flip_labels_tf(y, num_classes, mapping)

    component = local_update_attack(name, None, start=start, loss=loss)
    return dataclasses.replace(component, poison=poison)


def backdoor_attack(name: str, *, size: Optional[int], row: Optional[int], col: Optional[int],
             value: float, target: str, fraction: float, preset: str, start: int, loss,
             image_shape, num_classes: int, normalization):
    """Trigger-patch poisoning plus the stamp used to score it on the test set."""
    corner = None if row is None and col is None else (row or 0, col or 0)
    options = dict(size=size, corner=corner, value=value,
                   target="random" if target == "random" else int(target))
    if preset == "fedlaw_code":
        options = fedlaw_code_preset(normalization)
    poison_options = dict(options)
    stamp_options = {k: poison_options.pop(k) for k in ("size", "corner", "value")}
    backdoor_geometry(image_shape, stamp_options["size"], stamp_options["corner"])
    if isinstance(poison_options.get("target"), int) and not \
            0 <= poison_options["target"] < num_classes:
        raise ValueError(f"backdoor: target={poison_options['target']} is not a label in "
                         f"[0, {num_classes}).")

    def poison(x, y, positions, num_examples, seed, num_classes):
        return backdoor_tf(x, y, positions, num_examples, seed, num_classes=num_classes,
                                     fraction=fraction, **stamp_options, **poison_options)

    target_label = poison_options.get("target")
    door = Backdoor(stamp=lambda x: triggered_test_set(x, **stamp_options),
                    target=target_label if isinstance(target_label, int) else None)
    component = local_update_attack(name, None, start=start, loss=loss)
    return dataclasses.replace(component, poison=poison, backdoor=door)


def build_label_flip(name, *, seed, dataset, label_map, loss, **values):
    del seed, dataset
    return label_flip_attack(name, label_map=label_map.replace(";", ","), loss=parse_loss(loss),
                             **values)


def build_backdoor(name, *, seed, dataset, loss, start, **values):
    del seed
    if dataset is None:
        raise ValueError("backdoor needs the dataset's image shape")
    return backdoor_attack(name, image_shape=dataset.input_shape,
                           num_classes=dataset.num_classes, normalization=dataset.normalization,
                           start=start, loss=parse_loss(loss), **values)
