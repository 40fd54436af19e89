"""Pure-NumPy partitioners that split a pool of training examples over clients.

Every partitioner takes the training labels (an int array of shape [N]), the
number of clients and an explicit random source (`np.random.Generator` or an
int seed; global NumPy random state is never touched). It returns a list of
`num_clients` int64 index arrays into the pool. Each client's indices are
sorted: the order inside a client carries no meaning (training shuffles), and
sorted arrays make splits easy to compare.

* `iid_partition`: shuffle and deal; sizes differ by at most one.
* `q_partition`: the label-group split of Cao et al. (FLTrust) used by FedLAW,
    see `shared/specs/fedlaw.md` §10; also returns each client's label group.
* `dirichlet_partition`: per-class Dirichlet(alpha) proportions over clients.
* `natural_partition`: one client per writer, for naturally federated data.

`iid_partition` and `dirichlet_partition` cover every example with disjoint
parts. `q_partition` does too, but may leave a client empty when there are few
examples per client (callers that need non-empty clients check, see
`federated.load_federated_dataset`). `natural_partition` keeps only the first
`num_clients` writers' examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import numpy as np

RandomSource = Union[np.random.Generator, int, np.integer]

Q_MODES = ("sample", "exact")

# How often `dirichlet_partition` redraws all proportions before giving up on
# giving every client at least one example. A redraw is cheap (one Dirichlet
# draw per class); if 100 draws all leave a client empty the setting is
# effectively infeasible (tiny alpha with more clients than classes).
DIRICHLET_MAX_TRIES = 100

# q * N_l is computed in floating point; this slack makes floor(q * N_l) agree
# with exact decimal arithmetic (0.29 * 100 = 28.999999999999996 -> 29, not 28).
_FLOOR_SLACK = 1e-9


def as_generator(rng: RandomSource, *, name: str = "rng") -> np.random.Generator:
    """Returns `rng` if it is a Generator, else a new Generator seeded with it."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"`{name}` must be a non-negative int seed; got {name}={rng}.")
        return np.random.default_rng(int(rng))
    raise TypeError(
            f"`{name}` must be a numpy.random.Generator or an int seed; got {rng!r}."
    )


def check_num_clients(num_clients: int, num_examples: int) -> None:
    """Raises unless 1 <= num_clients <= num_examples."""
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise TypeError(f"`num_clients` must be an int; got num_clients={num_clients!r}.")
    if num_clients < 1:
        raise ValueError(f"`num_clients` must be >= 1; got num_clients={num_clients}.")
    if num_clients > num_examples:
        raise ValueError(
                "`num_clients` must not exceed the number of training examples; got "
                f"num_clients={num_clients}, num_examples={num_examples}."
        )


def check_q(q: float) -> float:
    """Returns `q` as a float after checking 0 <= q <= 1 (an int is accepted)."""
    if isinstance(q, bool) or not isinstance(q, (int, float, np.integer, np.floating)):
        raise TypeError(f"`q` must be a float in [0, 1]; got q={q!r}.")
    if not 0.0 <= float(q) <= 1.0:  # Also rejects NaN.
        raise ValueError(f"`q` must be in [0, 1]; got q={q}.")
    return float(q)


def check_alpha(alpha: float) -> float:
    """Returns `alpha` as a float after checking it is finite and > 0."""
    if isinstance(alpha, bool) or not isinstance(
            alpha, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"`alpha` must be a positive float; got alpha={alpha!r}.")
    if not (math.isfinite(float(alpha)) and float(alpha) > 0.0):
        raise ValueError(f"`alpha` must be finite and > 0; got alpha={alpha}.")
    return float(alpha)


def check_q_mode(q_mode: str) -> str:
    if q_mode not in Q_MODES:
        raise ValueError(f"`q_mode` must be one of {Q_MODES}; got q_mode={q_mode!r}.")
    return q_mode


def _check_labels(labels: np.ndarray, num_classes: int | None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
                "`labels` must be a 1-D integer array; got dtype="
                f"{labels.dtype}, shape={labels.shape}."
        )
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
            raise TypeError(f"`num_classes` must be an int; got num_classes={num_classes!r}.")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                    f"`labels` must lie in [0, num_classes); got labels in "
                    f"[{labels.min()}, {labels.max()}] with num_classes={num_classes}."
            )
    return labels


def _sorted_parts(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _indices_by_owner(owner: np.ndarray, num_owners: int) -> list[np.ndarray]:
    """Splits example indices by owner id; each part comes out sorted."""
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=num_owners)[:num_owners]
    return [p.astype(np.int64) for p in np.split(order, np.cumsum(counts)[:-1])]


def iid_partition(
        labels: np.ndarray, num_clients: int, *, rng: RandomSource
) -> list[np.ndarray]:
    """Shuffles the examples and deals them into near-equal parts.

    Args:
        labels: int array [N]; only its length is used (kept for a uniform
            signature across partitioners).
        num_clients: number of parts, 1 <= num_clients <= N.
        rng: Generator or int seed.

    Returns:
        `num_clients` sorted int64 index arrays whose sizes differ by at most one.
    """
    labels = _check_labels(labels, None)
    check_num_clients(num_clients, labels.size)
    permutation = as_generator(rng).permutation(labels.size)
    return _sorted_parts(np.array_split(permutation, num_clients))


def label_groups(num_clients: int, num_groups: int, *, rng: RandomSource) -> np.ndarray:
    """Deals shuffled client ids round-robin into `num_groups` label groups.

    Returns:
        int64 array [num_clients]: the group of each client. Group sizes differ by
        at most one.
    """
    if num_clients < num_groups:
        raise ValueError(
                "the q split needs at least one client per label group; got "
                f"num_clients={num_clients} < num_classes={num_groups}."
        )
    order = as_generator(rng).permutation(num_clients)
    groups = np.empty(num_clients, dtype=np.int64)
    # The client dealt j-th joins group j mod L.
    groups[order] = np.arange(num_clients) % num_groups
    return groups


def _group_members(groups: np.ndarray, num_groups: int) -> list[np.ndarray]:
    return [np.flatnonzero(groups == g) for g in range(num_groups)]


def q_partition(
        labels: np.ndarray,
        num_clients: int,
        *,
        q: float,
        num_classes: int,
        rng: RandomSource,
        mode: str = "sample",
) -> tuple[list[np.ndarray], np.ndarray]:
    """The label-group ("q") split of Cao et al. 2021, as in fedlaw.md §10.

    Clients are shuffled and dealt round-robin into L = `num_classes` groups
    (`label_groups`). Then, with `mode="sample"` (the paper's description),
    each example with label l independently goes to group l with probability
    q, otherwise to a group drawn uniformly from the other L - 1 groups, and
    within its group to a client drawn uniformly. With `mode="exact"` (the
    authors' code), per class the shuffled examples are cut: the first
    floor(q * N_l) go to group l, the rest in L - 1 near-equal chunks to the
    other groups in increasing group order (earlier groups get the larger
    chunks); each group's pool is then shuffled and cut into near-equal chunks
    over its clients (in dealing order).

    q = 1/L gives an iid-like split; q = 1 gives each group only its own label.
    Clients can end up empty when examples are scarce; this function reports
    that through the sizes rather than moving examples around.

    Args:
        labels: int array [N] with values in [0, num_classes).
        num_clients: number of clients, num_classes <= num_clients <= N.
        q: probability (share, in exact mode) of an example going to the group of
            its own label, in [0, 1].
        num_classes: L, the number of label groups (>= 2).
        rng: Generator or int seed.
        mode: "sample" or "exact".

    Returns:
        (parts, groups): `num_clients` sorted int64 index arrays, disjoint and
        covering all N examples, and the int64 label group of each client.
    """
    labels = _check_labels(labels, num_classes)
    check_num_clients(num_clients, labels.size)
    q = check_q(q)
    check_q_mode(mode)
    if num_classes < 2:
        raise ValueError(f"the q split needs num_classes >= 2; got num_classes={num_classes}.")
    rng = as_generator(rng)
    groups = label_groups(num_clients, num_classes, rng=rng)
    members = _group_members(groups, num_classes)
    if mode == "sample":
        parts = _q_sample(labels, q, num_classes, members, rng)
    else:
        parts = _q_exact(labels, q, num_classes, members, rng)
    return parts, groups


def _q_sample(labels, q, num_groups, members, rng) -> list[np.ndarray]:
    n = labels.size
    own = rng.random(n) < q
    # Uniform over the other L - 1 groups: draw from [0, L-1) and skip l.
    other = rng.integers(0, num_groups - 1, size=n)
    other += other >= labels
    group = np.where(own, labels, other)
    sizes = np.array([m.size for m in members])
    slot = rng.integers(0, sizes[group])
    table = np.full((num_groups, sizes.max()), -1, dtype=np.int64)
    for g, m in enumerate(members):
        table[g, : m.size] = m
    client = table[group, slot]
    num_clients = int(sizes.sum())
    return _indices_by_owner(client, num_clients)


def _q_exact(labels, q, num_groups, members, rng) -> list[np.ndarray]:
    pools: list[list[np.ndarray]] = [[] for _ in range(num_groups)]
    for label in range(num_groups):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_own = math.floor(q * idx.size + _FLOOR_SLACK)
        pools[label].append(idx[:n_own])
        others = [g for g in range(num_groups) if g != label]
        for g, chunk in zip(others, np.array_split(idx[n_own:], num_groups - 1)):
            pools[g].append(chunk)
    num_clients = sum(m.size for m in members)
    parts: list[np.ndarray] = [np.empty(0, np.int64)] * num_clients
    for g, m in enumerate(members):
        pool = rng.permutation(np.concatenate(pools[g]))
        for client, chunk in zip(m, np.array_split(pool, m.size)):
            parts[client] = chunk
    return _sorted_parts(parts)


def dirichlet_partition(
        labels: np.ndarray,
        num_clients: int,
        *,
        alpha: float,
        num_classes: int,
        rng: RandomSource,
        max_tries: int = DIRICHLET_MAX_TRIES,
) -> list[np.ndarray]:
    """Per class, splits the shuffled examples by proportions ~ Dir(alpha * 1).

    Client i receives the slice [floor(c_{i-1} N_c), floor(c_i N_c)) of class c,
    where c_i are the cumulative proportions. Small alpha makes clients
    dominated by few labels; large alpha approaches an iid split.

    Empty clients: the whole draw (all classes) is repeated, from the same
    generator, until every client has at least one example, at most
    `max_tries` times; then a ValueError names alpha and num_clients.
    Examples are never moved by hand, so the split stays an exact draw
    conditioned on "no client empty". With tiny alpha each class goes almost
    entirely to one client, so num_clients much larger than num_classes is
    infeasible and raises.

    Returns:
        `num_clients` sorted int64 index arrays, disjoint and covering all N
        examples, none empty.
    """
    labels = _check_labels(labels, num_classes)
    check_num_clients(num_clients, labels.size)
    alpha = check_alpha(alpha)
    rng = as_generator(rng)
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    for _ in range(max_tries):
        owner = np.empty(labels.size, dtype=np.int64)
        for idx in by_class:
            if idx.size == 0:
                continue
            idx = rng.permutation(idx)
            proportions = rng.dirichlet(np.full(num_clients, alpha))
            cuts = np.minimum(
                    (np.cumsum(proportions)[:-1] * idx.size).astype(np.int64), idx.size
            )
            for client, chunk in enumerate(np.split(idx, cuts)):
                owner[chunk] = client
        parts = _indices_by_owner(owner, num_clients)
        if min(p.size for p in parts) > 0:
            return parts
    raise ValueError(
            f"dirichlet split left some client without examples in {max_tries} draws "
            f"(alpha={alpha}, num_clients={num_clients}, num_examples={labels.size}, "
            f"num_classes={num_classes}); increase alpha or reduce num_clients."
    )


def natural_partition(
        writers: np.ndarray, num_writers: int, num_clients: int | None = None
) -> list[np.ndarray]:
    """One client per writer, for naturally federated data such as EMNIST.

    Args:
        writers: int array [N], the writer index of each example; writer indices
            follow the sorted writer ids.
        num_writers: total number of writers W (each is expected to own examples).
        num_clients: take the first `num_clients` writers in sorted-id order;
            None or 0 takes all W.

    Returns:
        `num_clients` (or W) sorted int64 index arrays, one per writer in order.
    """
    writers = _check_labels(writers, num_writers)
    if num_clients is None or (
            isinstance(num_clients, (int, np.integer))
            and not isinstance(num_clients, bool)
            and num_clients == 0
    ):
        num_clients = num_writers
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
        raise TypeError(f"`num_clients` must be an int or None; got num_clients={num_clients!r}.")
    if not 1 <= num_clients <= num_writers:
        raise ValueError(
                "with partition='natural', `num_clients` must be 0 (all writers) or in "
                f"[1, {num_writers}] (the number of writers); got num_clients={num_clients}."
        )
    return _indices_by_owner(writers, num_writers)[:num_clients]


def label_histograms(
        labels: np.ndarray, parts: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
    """Returns int64 [num_clients, num_classes]: label counts of each part."""
    labels = np.asarray(labels)
    return np.stack(
            [np.bincount(labels[p], minlength=num_classes) for p in parts]
    ).astype(np.int64)
