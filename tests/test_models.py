"""Model builders: parameter counts and the PyTorch-style initialisation of `mlp_torch`."""

import numpy as np
import pytest

from tff_byz import models

MNIST = ((28, 28, 1), 10, ((0.1307,), (0.3081,)))


@pytest.mark.parametrize("name", ["mlp", "mlp_torch"])
def test_fedlaw_mlps_have_the_papers_parameter_count(name):
    # 784·128 + 128 + 128·64 + 64 + 64·10 + 10
    assert models.count_parameters(models.build_keras_model(name, *MNIST, seed=0)) == 109_386


def test_mlp_torch_draws_weights_and_biases_like_torch_linear():
    kernels_and_biases = models.build_keras_model("mlp_torch", *MNIST, seed=0).get_weights()
    for fan_in, kernel, bias in zip((784, 128, 64), kernels_and_biases[::2],
                                    kernels_and_biases[1::2]):
        bound = 1 / np.sqrt(fan_in)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both
        assert kernel.shape[0] == fan_in
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)
        assert bias.std() > bound / 4  # not zero-initialised


def test_keras_mlp_is_glorot_with_zero_biases_for_comparison():
    weights = models.build_keras_model("mlp", *MNIST, seed=0).get_weights()
    assert np.abs(weights[0]).max() <= np.sqrt(6 / (784 + 128))
    assert np.abs(weights[0]).max() > 2 / 28  # ~2.3x the torch bound 1/28
    assert not any(b.any() for b in weights[1::2])


def test_the_seed_and_only_the_seed_fixes_the_initial_model():
    first, second, other = (models.build_keras_model("mlp_torch", *MNIST, seed=seed).get_weights()
                            for seed in (4, 4, 5))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], other[0])  # a builder ignoring the seed fails here


CIFAR = ((32, 32, 3), 10, ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)))


def test_cifar_cnn_has_the_papers_parameter_count_and_normalises_per_channel():
    model = models.build_keras_model("cifar_cnn", *CIFAR, seed=0)
    assert models.count_parameters(model) == 2_492_170
    normalize = model.layers[0]
    pixel = np.array([[[[0.4914, 0.4822 + 0.2435, 0.4465 - 2 * 0.2616]]]], np.float32)
    np.testing.assert_allclose(normalize(pixel).numpy().ravel(), [0.0, 1.0, -2.0], atol=1e-5)


def test_one_value_normalisation_broadcasts_over_channels():
    model = models.build_keras_model("lenet", (32, 32, 3), 10, ((0.5,), (0.25,)), seed=0)
    pixel = np.array([[[[0.5, 0.75, 0.0]]]], np.float32)
    np.testing.assert_allclose(model.layers[0](pixel).numpy().ravel(), [0.0, 1.0, -2.0],
                               atol=1e-6)
