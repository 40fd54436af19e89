"""FedLAW's math as pure functions (spec fedlaw.md §2, §5, §6, §7, §9); no TFF imports.

The TF functions are graph-mode safe: the number of rows n and the model size D may be
unknown until run time (they are called inside a `tf.function` inside a TFF
computation). Client rows are sorted by client id, so "lower index" means "lower id".

Sign convention: the project's clients send model deltas Δ_i = ψ_i − θ, so the paper's
pseudo-gradients are g_i = −Δ_i/α (§3) and the model step θ − α Σ w_i g_i is
θ + Σ w_i Δ_i (`weighted_delta`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import tensorflow as tf

__all__ = [
    "capped_simplex_projection",
    "project_sparse_capped_simplex",
    "check_feasible",
    "weight_step",
    "alignment_step",
    "weighted_delta",
    "s_final",
    "sparsity",
    "sparsity_tensor",
    "default_cap",
    "participant_weights",
    "write_back",
    "participant_sparsity",
    "clip_by_median_norm",
    "mad_loss_filter",
    "detection_metrics",
    "DETECTION_THRESHOLD",
]

# Columns per float64 block (as aggregators/distances.py): with n = 200 rows a block
# is 200 · 65 536 · 8 B ≈ 100 MB, small next to an [n, D] float32 input at
# D = 2.5e6 (2 GB), which therefore never gets an [n, D] float64 companion.
_BLOCK_COLUMNS = 1 << 16

# s·t within this of 1 counts as s·t = 1 (float rounding of e.g. 110 · (1/110)).
_FEASIBILITY_TOLERANCE = 1e-12

# §7: a client counts as excluded ("flagged") when its weight is at most 1e-4. Learned
# weights of kept clients are of order 1/s (≥ 1/n = 5e-3 at n = 200) and the
# projection sets excluded ones to exactly 0, so any threshold far below 1/n and above
# rounding noise separates them; 1e-4 is the paper's choice.
DETECTION_THRESHOLD = 1e-4

# §6 loss_filter: 1.4826 · MAD estimates the standard deviation of normal data, and
# 3 standard deviations below the median is the usual outlier cut.
_MAD_NORMAL_CONSISTENCY = 1.4826
_MAD_CUTOFF = 3.0


def _f64(value) -> tf.Tensor:
    """float64 tensor of a number, array or tensor.

    Not `tf.cast(0.6, tf.float64)`: that makes a float32 tensor of 0.6 first.
    """
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return tf.cast(value, tf.float64)
    return tf.convert_to_tensor(np.asarray(value, np.float64))


# --- Projection (§5) ------------------------------------------------------------


def capped_simplex_projection(y, t) -> tf.Tensor:
    """`[k] -> [k]` float64: Euclidean projection of y onto {x : Σx = 1, 0 ≤ x ≤ t} (§5 step 3).

    x_i = clip(y_i − τ, 0, t) with the one τ solving g(τ) = Σ_i clip(y_i − τ, 0, t) = 1.
    g is non-increasing and piecewise linear with breakpoints {y_i, y_i − t}: the 2k
    breakpoints are sorted, g is evaluated at each in closed form (sorted y and prefix
    sums, O(k log k)), and τ is interpolated linearly on the segment where g crosses 1
    (exact up to rounding). If k·t = 1 the set is the single point x = t·1.
    Assumes k ≥ 1, k·t ≥ 1 and finite y.
    """
    y = _f64(y)
    t = _f64(t)
    k = tf.size(y)
    # Only differences between the y_i matter; shifting by the maximum keeps the
    # prefix sums small (no cancellation when h carries a large common offset).
    y = y - tf.reduce_max(y)
    y_sorted = tf.sort(y)
    prefix = tf.concat([tf.zeros([1], tf.float64), tf.cumsum(y_sorted)], axis=0)
    breaks = tf.sort(tf.concat([y - t, y], axis=0))

    # g(τ) = t·#{y_i ≥ τ + t} + Σ_{τ < y_i < τ + t} (y_i − τ), for every breakpoint at once.
    below = tf.searchsorted(y_sorted, breaks, side="right")  # y_i ≤ τ: contribute 0
    unsaturated = tf.maximum(tf.searchsorted(y_sorted, breaks + t, side="left"), below)
    g = (t * tf.cast(k - unsaturated, tf.float64)
         + tf.gather(prefix, unsaturated) - tf.gather(prefix, below)
         - breaks * tf.cast(unsaturated - below, tf.float64))

    # g(breaks[0]) = k·t ≥ 1 and g(breaks[-1]) = 0: the last breakpoint with g ≥ 1
    # starts the crossing segment.
    j = tf.reduce_sum(tf.cast(g >= 1.0, tf.int32)) - 1
    j = tf.clip_by_value(j, 0, 2 * k - 2)
    lo, hi = breaks[j], breaks[j + 1]
    g_lo, g_hi = g[j], g[j + 1]
    tau = lo + tf.math.divide_no_nan((g_lo - 1.0) * (hi - lo), g_lo - g_hi)
    x = tf.clip_by_value(y - tau, tf.zeros([], tf.float64), t)
    single_point = tf.cast(k, tf.float64) * t <= 1.0 + _FEASIBILITY_TOLERANCE
    return tf.where(single_point, t * tf.ones_like(y), x)


def project_sparse_capped_simplex(h, s, t) -> tf.Tensor:
    """`[n] -> [n]` float64: projection of h onto Δ = {Σw = 1, 0 ≤ w ≤ t, ||w||_0 ≤ s} (§5).

    Theorem 1: keep the s largest *signed* values of h (ties → lower index = lower
    client id), project them with `capped_simplex_projection`, zeros elsewhere.
    Invariant to adding a constant to h. s: int or int32 scalar tensor (clamped to n);
    t: float. Assumes s ≥ 1 and s·t ≥ 1 (`check_feasible`).

    Excluded clients may enter as h_i = −inf (NaN counts as −inf): they get weight 0
    whenever at least ⌈1/t⌉ finite entries exist (they are projected as if at
    min(finite) − t − 1, the limit as h_i → −inf). A +inf entry is projected as if at
    max(finite) + t + 1, i.e. it gets the cap t (its limit).
    """
    h = _f64(h)
    t = _f64(t)
    n = tf.size(h)
    s = tf.minimum(tf.cast(s, tf.int32), n)
    h = tf.where(tf.math.is_nan(h), tf.constant(-np.inf, tf.float64), h)
    values, indices = tf.math.top_k(h, k=s, sorted=True)  # stable: ties → lower index

    finite = tf.math.is_finite(values)
    any_finite = tf.reduce_any(finite)
    zero = tf.zeros([], tf.float64)
    lowest = tf.where(any_finite, tf.reduce_min(tf.where(finite, values, np.inf)), zero)
    highest = tf.where(any_finite, tf.reduce_max(tf.where(finite, values, -np.inf)), zero)
    infinite = tf.math.is_inf(values)
    values = tf.where(infinite & (values < 0), lowest - t - 1.0, values)
    values = tf.where(infinite & (values > 0), highest + t + 1.0, values)

    x = capped_simplex_projection(values, t)
    return tf.scatter_nd(indices[:, tf.newaxis], x, tf.expand_dims(n, 0))


def check_feasible(s, t) -> None:
    """Raises ValueError when Δ is empty, i.e. s·t < 1 (§5 feasibility; rounding-tolerant)."""
    if s * t < 1.0 - _FEASIBILITY_TOLERANCE:
        raise ValueError(f"FedLAW: empty weight set: s*t = {s * t:.6g} < 1 "
                         f"(s={s}, t={t:.6g}); raise cap or s")


# --- Weight step (§2, §4) ---------------------------------------------------------


def _as_rows(values) -> tf.Tensor:
    values = tf.convert_to_tensor(values)
    return tf.reshape(values, [tf.shape(values)[0], -1])


def _num_blocks(dim):
    return tf.maximum((dim + _BLOCK_COLUMNS - 1) // _BLOCK_COLUMNS, 1)


def weight_step(delta_a, delta_b, weights, losses_b, *, alpha, beta, mode="full") -> tf.Tensor:
    """`[n]` float64: the gradient step h = w − β ∇Φ_k(w) before projection (§2, §4).

    ∇Φ_k(w) = f̃ − α Gᵀ G̃ w, so h_i = w_i + αβ⟨g_i, z⟩ − β f̃_i with z = Σ_j w_j g̃_j.
    With deltas (g = −Δ/α): h_i = w_i + (β/α)⟨Δ_i, Z⟩ − β f̃_i, Z = Σ_j w_j Δ̃_j.

    delta_a, delta_b: `[n, ...]` float32 (or float64) deltas of pass A (at θ_k) and
    pass B (at θ̃); weights: `[n]` ŵ (sum 1); losses_b: `[n]` f̃. Z (`weighted_delta`
    in float64) and the n dot products (`alignment_step`) go one block of columns at a
    time: neither an `[n, D]` float64 copy nor an n×n matrix is formed.
    mode="bsum": loss-only ablation h = w − β f̃ (§6); the deltas are ignored (may be None).
    """
    if mode not in ("full", "bsum"):
        raise ValueError(f"`mode` must be 'full' or 'bsum'; got mode={mode!r}.")
    if mode == "bsum":
        return _f64(weights) - _f64(beta) * _f64(losses_b)
    consensus = weighted_delta(_as_rows(delta_b), weights, dtype=tf.float64)
    return alignment_step(delta_a, consensus, weights, losses_b, alpha=alpha, beta=beta)


def alignment_step(delta_a, consensus, weights, losses_b, *, alpha, beta) -> tf.Tensor:
    """`[n]` float64: h_i = w_i + (β/α)⟨Δ_i, Z⟩ − β f̃_i for a given Z = Σ_j w_j Δ̃_j.

    The weight step (`weight_step`) when Z arrives already summed, e.g. streamed from
    the clients of pass B (`fedlaw.look_ahead_pass`), so pass B is never stacked.
    delta_a: `[n, ...]` pass-A deltas; consensus: Z, `[D]` (any float dtype, D the
    size of one flattened delta). The n dot products run in float64 by column blocks.
    """
    weights = _f64(weights)
    beta64 = _f64(beta)
    h = weights - beta64 * _f64(losses_b)
    delta_a = _as_rows(delta_a)
    consensus = tf.reshape(_f64(consensus), [-1])
    block = _BLOCK_COLUMNS

    def body(index, dots):
        start = index * block
        pass_a = tf.cast(delta_a[:, start:start + block], tf.float64)
        return index + 1, dots + tf.linalg.matvec(pass_a, consensus[start:start + block])

    num_blocks = _num_blocks(tf.shape(delta_a)[1])
    _, dots = tf.while_loop(lambda index, _: index < num_blocks, body,
                            (tf.constant(0), tf.zeros_like(weights)), parallel_iterations=1)
    return h + beta64 / _f64(alpha) * dots


def weighted_delta(delta, weights, dtype=None) -> tf.Tensor:
    """`[n, ...] -> [...]`: Σ_i w_i Δ_i (the θ step θ + Σ w_i Δ_i and the look-ahead θ̃, §4).

    Accumulated in float64 one block of columns at a time, returned in `dtype`
    (default: the dtype of `delta`, float32 for the project's deltas).
    """
    delta = tf.convert_to_tensor(delta)
    dtype = delta.dtype if dtype is None else tf.as_dtype(dtype)
    rows = _as_rows(delta)
    weights = _f64(weights)
    block = _BLOCK_COLUMNS
    num_blocks = _num_blocks(tf.shape(rows)[1])

    def body(index, parts):
        start = index * block
        columns = tf.cast(rows[:, start:start + block], tf.float64)
        part = tf.linalg.matvec(columns, weights, transpose_a=True)
        return index + 1, parts.write(index, tf.cast(part, dtype))

    parts = tf.TensorArray(dtype, size=num_blocks, infer_shape=False,
                           element_shape=tf.TensorShape([None]))
    _, parts = tf.while_loop(lambda index, _: index < num_blocks, body,
                             (tf.constant(0), parts), parallel_iterations=1)
    result = tf.reshape(parts.concat(), tf.shape(delta)[1:])
    result.set_shape(delta.shape[1:])
    return result


# --- Schedules and defaults (§6) ----------------------------------------------------


def _ceil(value: float) -> int:
    """⌈value⌉ ignoring float noise on integers (0.3 · 10 = 3.0000000000000004 → 3)."""
    return math.ceil(round(value, 9))


def s_final(n: int, declared_f: float) -> int:
    """s_final = n − ⌈f·n⌉ (§6): the sparsity once the schedule has ended."""
    if not 0.0 <= declared_f < 1.0:
        raise ValueError(f"`declared_f` must satisfy 0 <= f < 1; got f={declared_f}.")
    result = n - _ceil(declared_f * n)
    if result < 1:
        raise ValueError(f"FedLAW: s_final = n - ceil(f*n) must be >= 1; got s_final={result} "
                         f"(n={n}, f={declared_f}).")
    return result


def sparsity(k: int, n: int, declared_f: float, s_start: int, s_end: int) -> int:
    """s_k of the §6 schedule: s_final for k ≥ s_end; else n for k ≤ s_start; else
    ⌈n − (n − s_final)(k − s_start)/(s_end − s_start)⌉ (exact integer arithmetic).
    s_start = s_end = 0: fixed s_final.
    """
    if not 0 <= s_start <= s_end:
        raise ValueError(f"FedLAW schedule needs 0 <= s_start <= s_end; got s_start={s_start}, "
                         f"s_end={s_end}.")
    final = s_final(n, declared_f)
    if k >= s_end:
        return final
    if k <= s_start:
        return n
    # ⌈n − a/b⌉ = n − ⌊a/b⌋ for integers a ≥ 0, b > 0.
    return n - (n - final) * (k - s_start) // (s_end - s_start)


def sparsity_tensor(k, n, s_final_value, s_start, s_end) -> tf.Tensor:
    """int32 scalar: `sparsity` for a round index tensor k (int64), with s_final given."""
    k = tf.cast(k, tf.int64)
    n, final, s_start, s_end = (tf.cast(v, tf.int64) for v in (n, s_final_value, s_start, s_end))
    span = tf.maximum(s_end - s_start, 1)  # only used when s_start < k < s_end
    middle = n - (n - final) * (k - s_start) // span
    s = tf.where(k >= s_end, final, tf.where(k <= s_start, n, middle))
    return tf.cast(s, tf.int32)


def default_cap(n: int, s_final_value: int) -> float:
    """t = 1/(s_final − ⌈0.05n⌉) (§6, §12.10; = 1/(s_final − 10) at n = 200)."""
    offset = _ceil(0.05 * n)
    denominator = s_final_value - offset
    if denominator < 1:
        raise ValueError(f"FedLAW: default cap 1/(s_final - ceil(0.05*n)) needs a positive "
                         f"denominator; got n={n}, s_final={s_final_value}, offset={offset}; "
                         f"pass an explicit cap.")
    return 1.0 / denominator


# --- Partial participation (§9) -------------------------------------------------------


def participant_weights(w_all, ids):
    """§9 step 1: (ŵ `[m]` float64, mass Σ_P w float64). ŵ = w_P / Σ_P w, uniform 1/m if Σ_P w = 0.

    ids: int32 `[m]` client ids indexing w_all `[N]`.
    """
    w_all = _f64(w_all)
    w_p = tf.gather(w_all, tf.cast(ids, tf.int32))
    mass = tf.reduce_sum(w_p)
    uniform = tf.ones_like(w_p) / tf.cast(tf.size(w_p), tf.float64)
    positive = mass > 0.0
    w_hat = tf.where(positive, w_p / tf.where(positive, mass, 1.0), uniform)
    return w_hat, mass


def write_back(w_all, ids, w_new, mass) -> tf.Tensor:
    """§9 step 3: w_P ← ŵ'·M with M = mass (or m/N if mass = 0), then w / Σw. `[N]` float64."""
    w_all = _f64(w_all)
    ids = tf.cast(ids, tf.int32)
    mass = _f64(mass)
    share = tf.cast(tf.size(ids), tf.float64) / tf.cast(tf.size(w_all), tf.float64)
    scale = tf.where(mass > 0.0, mass, share)
    updated = tf.tensor_scatter_nd_update(w_all, ids[:, tf.newaxis],
                                          _f64(w_new) * scale)
    return updated / tf.reduce_sum(updated)


def participant_sparsity(s_k, t, m, num_clients):
    """§9 step 2: (s_P, t_P) = (⌈s_k·m/N⌉, min(1, t·N/m)); s_P·t_P ≥ s_k·t.

    Python numbers give (int, float); otherwise (int32, float64) tensors.
    """
    if all(isinstance(v, numbers.Number) for v in (s_k, t, m, num_clients)):
        return -(-int(s_k) * int(m) // int(num_clients)), min(1.0, t * (num_clients / m))
    s_k, m64, n64 = (tf.cast(v, tf.int64) for v in (s_k, m, num_clients))
    s_p = tf.cast((s_k * m64 + n64 - 1) // n64, tf.int32)
    ratio = tf.cast(n64, tf.float64) / tf.cast(m64, tf.float64)  # exactly 1 when m = N
    t_p = tf.minimum(tf.constant(1.0, tf.float64), _f64(t) * ratio)
    return s_p, t_p


# --- Ablations (§6) -------------------------------------------------------------------


def _median(values, valid=None) -> tf.Tensor:
    """Median of a `[n]` vector (mean of the two middle values for even n), over the
    entries where the bool mask `valid` holds if given; 0 when no entry is valid."""
    if valid is not None:
        values = tf.boolean_mask(values, valid)
    n = tf.size(values)
    # One zero appended so the indices stay in range when n = 0 (no tf.cond: an untaken
    # branch may still run in graph mode).
    ordered = tf.concat([tf.sort(values), tf.zeros([1], values.dtype)], axis=0)
    return (ordered[tf.maximum((n - 1) // 2, 0)] + ordered[n // 2]) / 2.0


def _row_norms64(rows) -> tf.Tensor:
    """`[n, D] -> [n]` float64 Euclidean row norms (float64 squares: no float32 overflow)."""
    block = _BLOCK_COLUMNS

    def body(index, squares):
        columns = tf.cast(rows[:, index * block:(index + 1) * block], tf.float64)
        return index + 1, squares + tf.reduce_sum(tf.square(columns), axis=1)

    num_blocks = _num_blocks(tf.shape(rows)[1])
    _, squares = tf.while_loop(lambda index, _: index < num_blocks, body,
                               (tf.constant(0), tf.zeros([tf.shape(rows)[0]], tf.float64)))
    return tf.sqrt(squares)


def clip_by_median_norm(delta, kappa=1.0, valid=None):
    """§6 `clip` ablation: rows scaled to norm ≤ C = κ·median_i ||Δ_i||.

    The spec clips g_i = −Δ_i/α; the common factor 1/α scales every norm and the
    median alike, so clipping the deltas is the same rule. Rows must be finite.
    `valid` (bool `[n]`): the median runs over these rows only (the process passes
    the finite clients, whose excluded rows it has zeroed).
    Returns (clipped `[n, ...]` in delta's dtype, radius C float64, clipped count int32).
    """
    delta = tf.convert_to_tensor(delta)
    norms = _row_norms64(_as_rows(delta))
    radius = _f64(kappa) * _median(norms, valid)
    over = norms > radius
    scale = tf.where(over, radius / tf.where(over, norms, 1.0), 1.0)
    shape = tf.concat([tf.shape(scale), tf.ones([tf.rank(delta) - 1], tf.int32)], axis=0)
    clipped = delta * tf.reshape(tf.cast(scale, delta.dtype), shape)
    return clipped, radius, tf.reduce_sum(tf.cast(over, tf.int32))


def mad_loss_filter(losses, min_keep, valid=None):
    """§6 `loss_filter` ablation: flag f̃_i < med − 3·1.4826·MAD (only if MAD > 0).

    `valid` (bool `[n]`, default all): the clients still in the round (the process
    passes the finite ones); med and MAD are taken over them, only they can be
    flagged, and only they count as remaining. Returns (keep_mask `[n]` bool,
    flagged int32 = number of clients the test flags, skipped bool). If fewer than
    `min_keep` (⌈1/t⌉) valid clients would remain, the filter is skipped
    (skipped = True) and every client is kept.
    """
    losses = _f64(losses)
    if valid is None:
        valid = tf.ones(tf.shape(losses), tf.bool)
    med = _median(losses, valid)
    mad = _median(tf.abs(losses - med), valid)
    flagged_mask = valid & (mad > 0.0) & (
        losses < med - _MAD_CUTOFF * _MAD_NORMAL_CONSISTENCY * mad)
    flagged = tf.reduce_sum(tf.cast(flagged_mask, tf.int32))
    remaining = tf.reduce_sum(tf.cast(valid, tf.int32)) - flagged
    skipped = (flagged > 0) & (remaining < tf.cast(min_keep, tf.int32))
    keep = tf.logical_not(flagged_mask) | skipped
    return keep, flagged, skipped


# --- Detection (§7) ---------------------------------------------------------------------


def detection_metrics(weights, byzantine, threshold=DETECTION_THRESHOLD) -> dict:
    """§7: client i is flagged iff w_i ≤ threshold; scores against the true Byzantine set.

    byzantine: bool mask `[n]`, or an iterable of Byzantine client ids (0 … n−1).
    Returns precision TP/(TP+FP) (NaN when nothing is flagged), recall TP/(TP+FN)
    (NaN when there is no Byzantine client), f1 = 2PR/(P+R) (NaN if P or R is NaN,
    0 if P = R = 0), accuracy (TP+TN)/n, and the counts tp, fp, fn, tn.
    """
    weights = np.asarray(weights, np.float64)
    byzantine = np.asarray(byzantine)
    if byzantine.dtype == bool:
        if byzantine.shape != weights.shape:
            raise ValueError(f"`byzantine` mask must have shape {weights.shape}; "
                             f"got {byzantine.shape}.")
        is_byzantine = byzantine
    else:
        is_byzantine = np.zeros(weights.shape, bool)
        is_byzantine[byzantine.astype(np.int64).reshape(-1)] = True
    flagged = weights <= threshold
    tp = int(np.sum(flagged & is_byzantine))
    fp = int(np.sum(flagged & ~is_byzantine))
    fn = int(np.sum(~flagged & is_byzantine))
    tn = int(np.sum(~flagged & ~is_byzantine))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    if math.isnan(precision) or math.isnan(recall):
        f1 = float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = (tp + tn) / weights.size if weights.size else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}
