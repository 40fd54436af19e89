"""Tests for tff_byz/datasets/partition.py (pure NumPy partitioners)."""

import math

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from tff_byz.datasets import partition

NUM_CLASSES = 10


def balanced_labels(per_class: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def assert_exact_cover(parts, num_examples):
    everything = np.concatenate(parts)
    assert everything.dtype == np.int64
    assert everything.size == num_examples  # disjoint ...
    np.testing.assert_array_equal(np.sort(everything), np.arange(num_examples))  # ... and complete
    for p in parts:
        np.testing.assert_array_equal(p, np.sort(p))


def assert_same_parts(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def differs(a, b) -> bool:
    return any(x.shape != y.shape or np.any(x != y) for x, y in zip(a, b))


# --- iid ------------------------------------------------------------------------------


def test_iid_counts_and_cover():
    labels = balanced_labels(103)  # 1030 examples over 7 clients: 147 or 148 each.
    parts = partition.iid_partition(labels, 7, rng=0)
    assert len(parts) == 7
    assert_exact_cover(parts, 1030)
    assert sorted(p.size for p in parts) == [147] * 6 + [148]


def test_iid_deterministic_and_seed_dependent():
    labels = balanced_labels(50)
    assert_same_parts(partition.iid_partition(labels, 5, rng=3), partition.iid_partition(labels, 5, rng=3))
    assert differs(partition.iid_partition(labels, 5, rng=3), partition.iid_partition(labels, 5, rng=4))
    # A Generator is used as given (and advanced).
    rng = np.random.default_rng(3)
    assert_same_parts(partition.iid_partition(labels, 5, rng=rng), partition.iid_partition(labels, 5, rng=3))


def test_iid_one_client_per_example():
    parts = partition.iid_partition(balanced_labels(1), 10, rng=0)
    assert [p.size for p in parts] == [1] * 10
    assert_exact_cover(parts, 10)


# --- label groups -----------------------------------------------------------------------


def test_label_groups_round_robin_sizes():
    groups = partition.label_groups(200, 10, rng=0)
    np.testing.assert_array_equal(np.bincount(groups), [20] * 10)
    groups = partition.label_groups(23, 10, rng=0)
    # 23 = 2 * 10 + 3: the first three groups dealt get a third client.
    np.testing.assert_array_equal(np.bincount(groups), [3, 3, 3] + [2] * 7)
    assert groups.dtype == np.int64 and groups.shape == (23,)


def test_label_groups_are_shuffled():
    groups = partition.label_groups(200, 10, rng=0)
    assert np.any(groups != np.arange(200) % 10)
    assert np.any(groups != partition.label_groups(200, 10, rng=1))


def test_q_error_fewer_clients_than_groups():
    with pytest.raises(ValueError, match=r"num_clients=9 < num_classes=10"):
        partition.q_partition(balanced_labels(10), 9, q=0.5, num_classes=10, rng=0)


# --- q split, sample mode -----------------------------------------------------------------


def own_label_share(labels, parts, groups, num_classes=NUM_CLASSES):
    """Per group: share of its examples whose label equals the group id."""
    shares = []
    for g in range(num_classes):
        idx = np.concatenate([p for p, grp in zip(parts, groups) if grp == g])
        shares.append(np.mean(labels[idx] == g))
    return np.array(shares)


def test_q_sample_label_distribution():
    labels = balanced_labels(2000)
    parts, groups = partition.q_partition(labels, 100, q=0.9, num_classes=10, rng=0)
    assert len(parts) == 100
    assert_exact_cover(parts, labels.size)
    # Each group receives 0.9 * 2000 own-label examples and 9 * (0.1 / 9) * 2000
    # others: share 0.9; binomial std ~ 0.007, so 0.03 is > 4 sigma.
    np.testing.assert_allclose(own_label_share(labels, parts, groups), 0.9, atol=0.03)
    # Off-label examples are spread uniformly over the other 9 groups:
    # expected 2000 * 0.1 / 9 ~ 22 of each other label per group.
    for g in range(10):
        idx = np.concatenate([p for p, grp in zip(parts, groups) if grp == g])
        counts = np.bincount(labels[idx], minlength=10)
        others = np.delete(counts, g)
        assert others.sum() == pytest.approx(200, abs=45)
        assert np.all(others < 50)
    # Within a group clients are uniform: ~ 200 examples each (Poisson-ish, std ~ 14).
    sizes = np.array([p.size for p in parts])
    assert sizes.min() > 120 and sizes.max() < 280


def test_q_one_over_l_is_iid_like():
    labels = balanced_labels(2000)
    parts, groups = partition.q_partition(labels, 10, q=0.1, num_classes=10, rng=1)
    histograms = partition.label_histograms(labels, parts, 10)
    shares = histograms / histograms.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shares, 0.1, atol=0.025)


def test_q_one_gives_pure_groups():
    labels = balanced_labels(300)
    for mode in partition.Q_MODES:
        parts, groups = partition.q_partition(labels, 20, q=1, num_classes=10, rng=2, mode=mode)
        for p, g in zip(parts, groups):
            np.testing.assert_array_equal(labels[p], g)


def test_q_zero_never_own_label():
    labels = balanced_labels(300)
    parts, groups = partition.q_partition(labels, 20, q=0.0, num_classes=10, rng=2)
    for p, g in zip(parts, groups):
        assert not np.any(labels[p] == g)


def test_q_deterministic_and_seed_dependent():
    labels = balanced_labels(200)
    for mode in partition.Q_MODES:
        a, ga = partition.q_partition(labels, 30, q=0.6, num_classes=10, rng=7, mode=mode)
        b, gb = partition.q_partition(labels, 30, q=0.6, num_classes=10, rng=7, mode=mode)
        c, gc = partition.q_partition(labels, 30, q=0.6, num_classes=10, rng=8, mode=mode)
        assert_same_parts(a, b)
        np.testing.assert_array_equal(ga, gb)
        assert differs(a, c) and np.any(ga != gc)


# --- q split, exact mode -----------------------------------------------------------------


def test_q_exact_counts():
    # Unequal classes: N_l = 100 + 17 l.
    labels = np.concatenate([np.full(100 + 17 * l, l) for l in range(10)])
    q = 0.9
    parts, groups = partition.q_partition(labels, 40, q=q, num_classes=10, rng=0, mode="exact")
    assert_exact_cover(parts, labels.size)
    for g in range(10):
        members = [p for p, grp in zip(parts, groups) if grp == g]
        idx = np.concatenate(members)
        counts = np.bincount(labels[idx], minlength=10)
        n_own = math.floor(q * (100 + 17 * g))
        assert counts[g] == n_own
        # Label l's leftover N_l - floor(q N_l) is cut into 9 near-equal chunks.
        for l in range(10):
            if l != g:
                rest = (100 + 17 * l) - math.floor(q * (100 + 17 * l))
                assert counts[l] in (rest // 9, -(-rest // 9))
        sizes = [p.size for p in members]
        assert max(sizes) - min(sizes) <= 1  # near-equal chunks over the group's clients


def test_q_exact_floor_is_decimal_exact():
    # 0.29 * 100 == 28.999999999999996 in floating point; the split must use 29.
    labels = balanced_labels(100)
    parts, groups = partition.q_partition(labels, 10, q=0.29, num_classes=10, rng=0, mode="exact")
    for p, g in zip(parts, groups):
        assert np.sum(labels[p] == g) == 29


# --- dirichlet -------------------------------------------------------------------------


def test_dirichlet_cover_and_determinism():
    labels = balanced_labels(500)
    parts = partition.dirichlet_partition(labels, 12, alpha=0.5, num_classes=10, rng=0)
    assert len(parts) == 12
    assert_exact_cover(parts, labels.size)
    assert min(p.size for p in parts) >= 1
    assert_same_parts(parts, partition.dirichlet_partition(labels, 12, alpha=0.5, num_classes=10, rng=0))
    assert differs(parts, partition.dirichlet_partition(labels, 12, alpha=0.5, num_classes=10, rng=1))


def test_dirichlet_large_alpha_is_near_uniform():
    labels = balanced_labels(1000)
    parts = partition.dirichlet_partition(labels, 10, alpha=1e3, num_classes=10, rng=0)
    histograms = partition.label_histograms(labels, parts, 10)
    # Proportions ~ 0.1 +- 0.003 per class, so each client holds ~100 of each label.
    np.testing.assert_allclose(histograms, 100, atol=20)


def test_dirichlet_small_alpha_is_dominated_by_one_label():
    labels = balanced_labels(1000)
    parts = partition.dirichlet_partition(labels, 10, alpha=0.01, num_classes=10, rng=0)
    histograms = partition.label_histograms(labels, parts, 10)
    # Dir(0.01) puts (almost) each whole class on a single client ...
    class_top_share = histograms.max(axis=0) / histograms.sum(axis=0)
    assert class_top_share.mean() > 0.8
    # ... so clients hold one or two labels: the top label's share averages
    # well above the 0.1 of an iid split (0.87 here; over seeds 0.64-0.92,
    # since a client often owns two whole classes, share 0.5), and most
    # clients are > 90 % one label.
    client_top_share = histograms.max(axis=1) / histograms.sum(axis=1)
    assert client_top_share.mean() > 0.6
    assert np.mean(client_top_share > 0.9) >= 0.5
    uniform = partition.label_histograms(
        labels, partition.dirichlet_partition(labels, 10, alpha=1e3, num_classes=10, rng=0), 10)
    assert (uniform.max(axis=1) / uniform.sum(axis=1)).mean() < 0.15


def test_dirichlet_infeasible_raises():
    labels = balanced_labels(100)
    with pytest.raises(ValueError, match=r"alpha=0\.01, num_clients=50") as info:
        partition.dirichlet_partition(labels, 50, alpha=0.01, num_classes=10, rng=0, max_tries=5)
    assert "in 5 draws" in str(info.value)


# --- natural ---------------------------------------------------------------------------


def test_natural_takes_first_writers():
    writers = np.array([2, 0, 1, 2, 0, 0, 3], dtype=np.int32)
    parts = partition.natural_partition(writers, 4, 2)
    assert_same_parts(parts, [np.array([1, 4, 5]), np.array([2])])
    for all_clients in (None, 0):
        parts = partition.natural_partition(writers, 4, all_clients)
        assert len(parts) == 4
        assert_exact_cover(parts, writers.size)


def test_natural_errors():
    writers = np.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"\[1, 2\] \(the number of writers\); got num_clients=3"):
        partition.natural_partition(writers, 2, 3)
    with pytest.raises(ValueError, match="num_clients=-1"):
        partition.natural_partition(writers, 2, -1)
    with pytest.raises(TypeError, match=r"num_clients='2'"):
        partition.natural_partition(writers, 2, "2")


# --- histograms and validation -------------------------------------------------------------


def test_label_histograms():
    labels = np.array([0, 1, 1, 2, 2, 2])
    histograms = partition.label_histograms(labels, [np.array([0, 3]), np.array([1, 2, 4, 5])], 4)
    np.testing.assert_array_equal(histograms, [[1, 0, 1, 0], [0, 2, 2, 0]])
    assert histograms.dtype == np.int64


@pytest.mark.parametrize("num_clients, error, message", [
    (0, ValueError, r"`num_clients` must be >= 1; got num_clients=0\."),
    (-3, ValueError, r"got num_clients=-3"),
    (11, ValueError, r"must not exceed the number of training examples; got num_clients=11, num_examples=10"),
    (2.0, TypeError, r"`num_clients` must be an int; got num_clients=2\.0"),
    (True, TypeError, r"got num_clients=True"),
])
def test_num_clients_validation(num_clients, error, message):
    labels = balanced_labels(1)
    with pytest.raises(error, match=message):
        partition.iid_partition(labels, num_clients, rng=0)
    with pytest.raises(error, match=message):
        partition.dirichlet_partition(labels, num_clients, alpha=1.0, num_classes=10, rng=0)


@pytest.mark.parametrize("q, error, message", [
    (-0.1, ValueError, r"`q` must be in \[0, 1\]; got q=-0.1"),
    (1.5, ValueError, r"got q=1.5"),
    (float("nan"), ValueError, r"got q=nan"),
    ("0.5", TypeError, r"`q` must be a float in \[0, 1\]; got q='0.5'"),
])
def test_q_validation(q, error, message):
    with pytest.raises(error, match=message):
        partition.q_partition(balanced_labels(10), 10, q=q, num_classes=10, rng=0)


def test_q_accepts_int_q_and_checks_mode():
    partition.q_partition(balanced_labels(10), 10, q=1, num_classes=10, rng=0)
    with pytest.raises(ValueError,
                       match=r"`q_mode` must be one of \('sample', 'exact'\); got q_mode='paper'"):
        partition.q_partition(balanced_labels(10), 10, q=0.5, num_classes=10, rng=0, mode="paper")
    with pytest.raises(ValueError, match=r"num_classes >= 2; got num_classes=1"):
        partition.q_partition(np.zeros(5, int), 2, q=0.5, num_classes=1, rng=0)


@pytest.mark.parametrize("alpha, error, message", [
    (0.0, ValueError, r"`alpha` must be finite and > 0; got alpha=0.0"),
    (-1, ValueError, r"got alpha=-1"),
    (float("inf"), ValueError, r"got alpha=inf"),
    (None, TypeError, r"`alpha` must be a positive float; got alpha=None"),
])
def test_alpha_validation(alpha, error, message):
    with pytest.raises(error, match=message):
        partition.dirichlet_partition(balanced_labels(10), 5, alpha=alpha, num_classes=10, rng=0)


def test_labels_and_rng_validation():
    with pytest.raises(ValueError, match=r"labels in \[0, 10\] with num_classes=10"):
        partition.q_partition(np.arange(11), 10, q=0.5, num_classes=10, rng=0)
    with pytest.raises(TypeError, match="`labels` must be a 1-D integer array"):
        partition.iid_partition(np.zeros(5, np.float32), 2, rng=0)
    with pytest.raises(TypeError, match=r"`rng` must be a numpy.random.Generator or an int seed; got 0.5"):
        partition.iid_partition(balanced_labels(1), 2, rng=0.5)
    with pytest.raises(ValueError, match=r"non-negative int seed; got rng=-1"):
        partition.iid_partition(balanced_labels(1), 2, rng=-1)


# --- properties --------------------------------------------------------------------------


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
    num_examples=st.integers(10, 300),
    num_clients=st.integers(10, 30),
    q=st.floats(0.0, 1.0),
    mode=st.sampled_from(partition.Q_MODES),
    seed=st.integers(0, 2**32 - 1),
)
def test_partitions_always_cover_disjointly(num_examples, num_clients, q, mode, seed):
    hypothesis.assume(num_clients <= num_examples)
    labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, num_examples)
    parts, groups = partition.q_partition(labels, num_clients, q=q, num_classes=10, rng=seed, mode=mode)
    assert len(parts) == num_clients and groups.shape == (num_clients,)
    assert_exact_cover(parts, num_examples)
    parts = partition.iid_partition(labels, num_clients, rng=seed)
    assert_exact_cover(parts, num_examples)
    assert max(p.size for p in parts) - min(p.size for p in parts) <= 1
