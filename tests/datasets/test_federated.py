"""Tests for tff_byz/datasets/federated.py (FederatedDataset, load_federated_dataset)."""

import re

import numpy as np
import pytest

from tff_byz import datasets
from tff_byz.datasets import federated


def all_client_arrays(data):
    return [data.client_arrays(i) for i in range(data.num_clients)]


def test_digits_iid_structure():
    data = datasets.load_federated_dataset("digits", num_clients=10, seed=0)
    assert isinstance(data, datasets.FederatedDataset)
    assert data.name == "digits" and data.num_classes == 10 and data.num_clients == 10
    assert data.client_ids == [f"000{i}" for i in range(10)]
    assert data.client_data.client_ids == data.client_ids
    assert data.input_shape == (8, 8, 1)
    assert data.client_groups is None
    sizes = [data.num_examples(i) for i in range(10)]
    assert sum(sizes) == 1438 and max(sizes) - min(sizes) <= 1
    assert data.test_x.shape == (359, 8, 8, 1) and data.test_y.dtype == np.int32
    assert data.label_histograms.shape == (10, 10) and data.label_histograms.dtype == np.int64
    for i, (x, y) in enumerate(all_client_arrays(data)):
        assert x.dtype == np.float32 and x.shape == (sizes[i], 8, 8, 1)
        np.testing.assert_array_equal(np.bincount(y, minlength=10), data.label_histograms[i])
    # Normalisation from the training pool (population std of all pixels).
    pool = np.concatenate([x for x, _ in all_client_arrays(data)])
    (mean,), (std,) = data.normalization
    assert mean == pytest.approx(pool.mean(dtype=np.float64), rel=1e-6)
    assert std == pytest.approx(pool.std(dtype=np.float64), rel=1e-6)


def test_tf_datasets_match_client_arrays():
    data = datasets.load_federated_dataset("digits", num_clients=4, seed=0)
    x, y = data.client_arrays(2)
    elements = list(data.client_data.create_tf_dataset_for_client(data.client_ids[2]).as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([e["x"] for e in elements]), x)
    np.testing.assert_array_equal([e["y"] for e in elements], y)


def test_arrays_are_read_only():
    data = datasets.load_federated_dataset("digits", num_clients=3, seed=0)
    x, _ = data.client_arrays(0)
    for array in (x, data.test_x, data.label_histograms):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0


def test_same_seed_same_arrays_other_seed_differs():
    a, b, c = (datasets.load_federated_dataset("digits", partition="q", num_clients=20, q=0.6, seed=s)
               for s in (5, 5, 6))
    np.testing.assert_array_equal(a.test_x, b.test_x)
    np.testing.assert_array_equal(a.client_groups, b.client_groups)
    for (xa, ya), (xb, yb) in zip(all_client_arrays(a), all_client_arrays(b)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a.test_x, c.test_x)  # digits' train/test split follows the seed
    assert not np.array_equal(a.label_histograms, c.label_histograms)


def test_digits_q_split():
    data = datasets.load_federated_dataset("digits", partition="q", num_clients=20, q=0.9, seed=0)
    np.testing.assert_array_equal(np.bincount(data.client_groups), [2] * 10)
    own = sum(data.label_histograms[i, g] for i, g in enumerate(data.client_groups))
    # ~0.9 of 1438 examples sit in their label's group (binomial std ~ 0.008).
    assert own / 1438 == pytest.approx(0.9, abs=0.04)
    exact = datasets.load_federated_dataset("digits", partition="q", num_clients=20, q=0.9,
                                            q_mode="exact", seed=0)
    full = exact.label_histograms.sum(axis=0)
    for g in range(10):
        in_group = exact.label_histograms[exact.client_groups == g].sum(axis=0)
        assert in_group[g] == int(np.floor(0.9 * full[g]))


def test_digits_dirichlet_split():
    data = datasets.load_federated_dataset("digits", partition="dirichlet", alpha=0.1,
                                           num_clients=8, seed=0)
    assert data.label_histograms.sum() == 1438 and data.label_histograms.sum(axis=1).min() >= 1
    assert data.client_groups is None


def test_synthetic_natural_and_pooled():
    data = datasets.load_federated_dataset("synthetic", partition="natural", num_clients=None)
    assert data.client_ids == ["synthetic1", "synthetic2"]
    np.testing.assert_array_equal(data.label_histograms, np.ones((2, 10)))
    first = datasets.load_federated_dataset("synthetic", partition="natural", num_clients=1)
    assert first.client_ids == ["synthetic1"]
    pooled = datasets.load_federated_dataset("synthetic", num_clients=10)
    assert [pooled.num_examples(i) for i in range(10)] == [2] * 10
    assert pooled.test_x.shape == (20, 28, 28, 1)


def test_client_index_errors():
    data = datasets.load_federated_dataset("digits", num_clients=3, seed=0)
    with pytest.raises(ValueError, match=r"`index` must be in \[0, 3\); got index=3"):
        data.client_arrays(3)
    with pytest.raises(ValueError, match=r"got index=-1"):
        data.num_examples(-1)
    with pytest.raises(TypeError, match=r"`index` must be an int; got index='0'"):
        data.client_arrays("0")


def test_client_id_width_grows_past_9999():
    assert federated._client_id_width(10) == 4
    assert federated._client_id_width(10000) == 4
    assert federated._client_id_width(10001) == 5


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(name="svhn"), ValueError,
     r"`name` must be one of \('digits', 'mnist', 'fashion_mnist', 'cifar10', 'emnist', 'olivetti', "
     r"'synthetic'\); got name='svhn'"),
    (dict(name=3), TypeError, r"`name` must be a str"),
    (dict(name="digits", partition="pathological"), ValueError,
     r"`partition` must be one of \('iid', 'q', 'dirichlet', 'natural'\); got partition='pathological'"),
    (dict(name="digits", partition="natural"), ValueError,
     r"partition='natural' needs a naturally federated dataset \('emnist', 'synthetic'\); got name='digits'"),
    (dict(name="digits", q=1.5), ValueError, r"`q` must be in \[0, 1\]; got q=1.5"),
    (dict(name="digits", alpha=0), ValueError, r"`alpha` must be finite and > 0; got alpha=0"),
    (dict(name="digits", q_mode="code"), ValueError, r"got q_mode='code'"),
    (dict(name="digits", seed=-1), ValueError, r"`seed` must be a non-negative int; got seed=-1"),
    (dict(name="digits", seed=1.0), TypeError, r"`seed` must be a non-negative int; got seed=1.0"),
    (dict(name="digits", num_clients=0), ValueError, r"`num_clients` must be >= 1; got num_clients=0"),
    (dict(name="digits", num_clients=None), TypeError, r"`num_clients` must be an int; got num_clients=None"),
    (dict(name="digits", num_clients=2000), ValueError,
     r"must not exceed the number of training examples; got num_clients=2000, num_examples=1438"),
    (dict(name="synthetic", partition="natural", num_clients=3), ValueError,
     r"\[1, 2\] \(the number of writers\); got num_clients=3"),
    (dict(name="synthetic", partition="natural", num_clients=-2), ValueError,
     r"must be >= 0 \(0: all writers\); got num_clients=-2"),
    (dict(name="digits", only_digits="yes"), TypeError, r"`only_digits` must be a bool"),
    (dict(name="synthetic", partition="q", num_clients=20), ValueError,
     r"partition='q' left \d+ of 20 clients without examples .* synthetic with 20 training examples"),
])
def test_argument_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        datasets.load_federated_dataset(**kwargs)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "emnist", "olivetti"])
def test_file_datasets_need_data_dir(name, tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match=f"^{name}: --data_dir is required"):
        datasets.load_federated_dataset(name)
    with pytest.raises(datasets.DatasetNotFoundError,
                       match=f"^{name}: .* not found in {re.escape(str(tmp_path))} "):
        datasets.load_federated_dataset(name, data_dir=tmp_path)


def test_real_mnist_fedlaw_protocol(require_data):
    data = datasets.load_federated_dataset(
        "mnist", data_dir=require_data("mnist/MNIST/raw"), partition="q", q=0.9,
        num_clients=200, seed=0)
    assert data.normalization == ((0.1307,), (0.3081,))
    assert data.client_ids[0] == "0000" and data.client_ids[-1] == "0199"
    np.testing.assert_array_equal(np.bincount(data.client_groups), [20] * 10)
    np.testing.assert_array_equal(data.label_histograms.sum(axis=0),
                                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    own = sum(data.label_histograms[i, g] for i, g in enumerate(data.client_groups))
    assert own / 60000 == pytest.approx(0.9, abs=0.005)
    assert data.test_x.shape == (10000, 28, 28, 1)


def test_real_emnist_natural(require_data):
    data_dir = require_data("femnist_leaf")
    data = datasets.load_federated_dataset("emnist", data_dir=data_dir, partition="natural",
                                           num_clients=10)
    every = datasets.load_federated_dataset("emnist", data_dir=data_dir, partition="natural",
                                            num_clients=0)
    assert every.num_clients == 104 and every.label_histograms.sum() == 10596
    assert data.client_ids == every.client_ids[:10] == sorted(data.client_ids)
    np.testing.assert_array_equal(data.label_histograms, every.label_histograms[:10])
    assert data.test_y.size == 1180  # the kept writers' test union, whatever num_clients
    (mean,), (std,) = data.normalization
    assert 0.9 < mean < 1.0 and 0.1 < std < 0.3  # white background
    pooled = datasets.load_federated_dataset("emnist", data_dir=data_dir, partition="iid",
                                             num_clients=50)
    assert pooled.client_ids[0] == "0000" and pooled.label_histograms.sum() == 10596


def test_a_sample_of_the_training_pool():
    full = datasets.load_federated_dataset("digits", partition="iid", num_clients=5, seed=3)
    sample = datasets.load_federated_dataset("digits", partition="iid", num_clients=5, seed=3,
                                    train_examples=300)
    again = datasets.load_federated_dataset("digits", partition="iid", num_clients=5, seed=3,
                                   train_examples=300)
    assert sum(int(h.sum()) for h in sample.label_histograms) == 300
    pooled = lambda d: np.concatenate([d.client_arrays(i)[0] for i in range(5)])
    np.testing.assert_array_equal(pooled(sample), pooled(again))  # seeded
    # Every sampled example is one of the pool's, and the test set is untouched.
    pool = {row.tobytes() for row in pooled(full)}
    assert all(row.tobytes() in pool for row in pooled(sample))
    np.testing.assert_array_equal(sample.test_x, full.test_x)
    with pytest.raises(ValueError, match="`train_examples` must be <= the 1438 training "
                                         "examples of digits; got train_examples=1439"):
        datasets.load_federated_dataset("digits", train_examples=1439)
