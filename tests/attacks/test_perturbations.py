"""Local update attacks (spec §3): exact values, statistics, bit-level checks, graph mode."""

import numpy as np
import pytest
import tensorflow as tf

from attacks.perturbations import updates as pt

U = np.array([[1.5, -2.0, 0.0], [3.25, -0.5, 100.0]], np.float32)
SEED = tf.constant([7, 11], tf.int64)
OTHER_SEED = tf.constant([7, 12], tf.int64)


def bits_of(x):
    return tf.bitcast(tf.convert_to_tensor(x, tf.float32), tf.uint32).numpy()


# --- sign flip, scaling, constants ------------------------------------------------


def test_sign_flip_values():
    np.testing.assert_array_equal(pt.sign_flip(U), [[-1.5, 2.0, -0.0], [-3.25, 0.5, -100.0]])
    np.testing.assert_array_equal(pt.sign_flip(U, scale=2), [[-3.0, 4.0, 0.0], [-6.5, 1.0, -200.0]])


def test_scaling_values():
    np.testing.assert_array_equal(pt.scaling(U), [[15.0, -20.0, 0.0], [32.5, -5.0, 1000.0]])
    np.testing.assert_array_equal(pt.scaling(U, scale=0.5), U / 2)


@pytest.mark.parametrize("value", [0.0, 1.0, -3.5, np.inf])
def test_constant_values(value):
    out = pt.constant(U, value).numpy()
    assert out.shape == U.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.full(U.shape, value, np.float32))


def test_constant_nan():
    assert np.isnan(pt.constant(U, float("nan")).numpy()).all()


def test_numeric_parameters_checked():
    with pytest.raises(TypeError, match="scale"):
        pt.scaling(U, scale="10")
    with pytest.raises(TypeError, match="value"):
        pt.constant(U, None)


# --- gaussian ---------------------------------------------------------------------


def test_gaussian_replace_statistics_and_shape():
    u = tf.zeros([200, 500])
    out = pt.gaussian(u, SEED, sigma=2.0, mu=3.0).numpy()
    assert out.shape == (200, 500) and out.dtype == np.float32
    assert abs(out.mean() - 3.0) < 0.02 and abs(out.std() - 2.0) < 0.02
    # replace ignores u
    np.testing.assert_array_equal(pt.gaussian(u + 5.0, SEED, sigma=2.0, mu=3.0), out)


def test_gaussian_add_statistics():
    u = tf.fill([100_000], 4.0)
    out = pt.gaussian(u, SEED, sigma=0.5, mode="add").numpy()
    assert abs(out.mean() - 4.0) < 0.01 and abs(out.std() - 0.5) < 0.01
    noise = pt.gaussian(tf.zeros([100_000]), SEED, sigma=0.5, mode="add").numpy()
    np.testing.assert_allclose(out, 4.0 + noise, rtol=1e-6)


def test_gaussian_determinism_and_seed_dependence():
    a = pt.gaussian(U, SEED).numpy()
    np.testing.assert_array_equal(a, pt.gaussian(U, SEED))
    assert not np.array_equal(a, pt.gaussian(U, OTHER_SEED).numpy())


def test_gaussian_parameters_checked():
    with pytest.raises(ValueError, match="mode"):
        pt.gaussian(U, SEED, mode="multiply")
    with pytest.raises(ValueError, match="sigma"):
        pt.gaussian(U, SEED, sigma=-1.0)
    with pytest.raises(ValueError, match="mu"):
        pt.gaussian(U, SEED, mu=1.0, mode="add")


# --- bit flips --------------------------------------------------------------------


def test_bit_flip_changes_exactly_the_mask_bits():
    u = np.random.default_rng(0).normal(size=(50, 40)).astype(np.float32)
    mask = pt.bit_flip_mask(u.shape, SEED, p=0.1).numpy()
    out = pt.bit_flip(u, SEED, p=0.1).numpy()
    assert mask.dtype == np.uint32
    np.testing.assert_array_equal(bits_of(out) ^ bits_of(u), mask)
    # about p of the 32 × 2000 bits are set
    share = np.unpackbits(mask.view(np.uint8)).mean()
    assert 0.09 < share < 0.11


def test_bit_flip_determinism_and_seed_dependence():
    mask = pt.bit_flip_mask([1000], SEED, p=0.05).numpy()
    np.testing.assert_array_equal(mask, pt.bit_flip_mask([1000], SEED, p=0.05))
    assert not np.array_equal(mask, pt.bit_flip_mask([1000], OTHER_SEED, p=0.05).numpy())


def test_bit_flip_sign_only_touches_bit_31():
    mask = pt.bit_flip_mask([5000], SEED, p=0.5, bits="sign").numpy()
    assert (mask & ~np.uint32(1 << 31) == 0).all()
    assert 0 < (mask != 0).sum() < 5000


def test_bit_flip_mantissa_never_touches_sign_or_exponent():
    mask = pt.bit_flip_mask([5000], SEED, p=0.5, bits="mantissa").numpy()
    assert (mask & np.uint32(0xFF800000) == 0).all()
    assert (mask != 0).all()


def test_bit_flip_exponent_and_combination():
    exponent = pt.bit_flip_mask([2000], SEED, p=0.5, bits="exponent").numpy()
    assert (exponent & ~np.uint32(0x7F800000) == 0).all() and exponent.any()
    combined = pt.bit_flip_mask([2000], SEED, p=1.0, bits="sign,exponent").numpy()
    np.testing.assert_array_equal(combined, np.uint32(0xFF800000))


def test_bit_flip_p1_flips_every_allowed_bit():
    for bits, expected in [("all", 0xFFFFFFFF), ("sign", 0x80000000),
                           ("exponent", 0x7F800000), ("mantissa", 0x007FFFFF)]:
        mask = pt.bit_flip_mask([3, 4], SEED, p=1, bits=bits)
        np.testing.assert_array_equal(mask, np.uint32(expected))
    np.testing.assert_array_equal(bits_of(pt.bit_flip(U, SEED, p=1.0)), ~bits_of(U))


def test_bit_flip_p0_is_identity():
    np.testing.assert_array_equal(bits_of(pt.bit_flip(U, SEED, p=0.0)), bits_of(U))


def test_bit_flip_sign_p1_equals_sign_flip():
    u = np.array([1.5, -2.0, 0.0, -0.0, 1e-40, np.inf, -np.inf, 3.4e38], np.float32)
    flipped = pt.bit_flip(u, SEED, p=1, bits="sign")
    np.testing.assert_array_equal(bits_of(flipped), bits_of(pt.sign_flip(u)))


def test_bit_flip_exponent_creates_non_finite_values():
    out = pt.bit_flip(np.ones(1000, np.float32), SEED, p=0.5, bits="exponent").numpy()
    assert np.isinf(out).any() or np.isnan(out).any() or np.abs(out).max() > 1e30


def test_bit_flip_parameters_checked():
    with pytest.raises(ValueError, match="bits"):
        pt.bit_flip(U, SEED, bits="fraction")
    with pytest.raises(ValueError, match="bits"):
        pt.bit_flip(U, SEED, bits="sign,")
    with pytest.raises(ValueError, match="p"):
        pt.bit_flip(U, SEED, p=1.5)
    with pytest.raises(TypeError, match="float32"):
        pt.bit_flip(U.astype(np.float64), SEED)


# --- random_params ----------------------------------------------------------------


def test_random_params_noise_statistics():
    # θ = [1, 2, 3, 4] and [[6, 8]] concatenated: μ = 24/6 = 4; deviations -3, -2, -1, 0, 2, 4
    # → squares sum to 34 → population σ = sqrt(34/6).
    theta = [np.array([1, 2, 3, 4], np.float32), np.array([[6, 8]], np.float32)]
    mu, sigma = 4.0, np.sqrt(34 / 6)
    # a large draw: broadcast θ's statistics to big leaves with the same mean and σ
    big = [np.tile(theta[0], 25_000), np.tile(theta[1], (25_000, 1))]
    noise = pt.random_params_noise(big, SEED)
    assert [n.shape for n in noise] == [(100_000,), (25_000, 2)]
    flat = np.concatenate([np.ravel(n) for n in noise])
    assert abs(flat.mean() - (-5.0 * mu)) < 0.05
    assert abs(flat.std() - 1.5 * sigma) < 0.05
    small = pt.random_params_noise(theta, SEED, nu1=2.0, nu2=0.0)
    np.testing.assert_allclose(small[0], np.full(4, 8.0))
    np.testing.assert_allclose(small[1], np.full((1, 2), 8.0))


def test_random_params_noise_structure_determinism_and_independent_leaves():
    theta = {"kernel": np.ones((3, 2), np.float32), "bias": np.zeros(2, np.float32)}
    a = pt.random_params_noise(theta, SEED)
    b = pt.random_params_noise(theta, SEED)
    assert set(a) == {"kernel", "bias"} and a["kernel"].shape == (3, 2)
    for key in theta:
        np.testing.assert_array_equal(a[key], b[key])
    c = pt.random_params_noise(theta, OTHER_SEED)
    assert not np.array_equal(a["kernel"], c["kernel"])
    # two equally shaped leaves do not repeat the same draw
    same = pt.random_params_noise([np.arange(4.0, dtype=np.float32)] * 2, SEED)
    assert not np.array_equal(same[0], same[1])


def test_structure_seeds():
    seeds = pt.structure_seeds(SEED, {"a": 1, "b": [2, 3]})
    assert len(seeds) == 3
    assert len({tuple(s.numpy()) for s in seeds}) == 3
    np.testing.assert_array_equal(seeds[1], tf.random.experimental.stateless_fold_in(SEED, 1))


# --- graph mode ------------------------------------------------------------------


def test_graph_mode_with_unknown_shapes_equals_eager():
    spec = tf.TensorSpec([None, None], tf.float32)
    seed_spec = tf.TensorSpec([2], tf.int64)
    functions = {
        "sign_flip": lambda u, s: pt.sign_flip(u),
        "scaling": lambda u, s: pt.scaling(u, 3.0),
        "gaussian_replace": lambda u, s: pt.gaussian(u, s, sigma=2.0, mu=1.0),
        "gaussian_add": lambda u, s: pt.gaussian(u, s, mode="add"),
        "bit_flip": lambda u, s: pt.bit_flip(u, s, p=0.2, bits="sign,mantissa"),
        "constant": lambda u, s: pt.constant(u, 2.0),
        "random_params": lambda u, s: pt.random_params_noise([u, 2 * u], s)[1],
    }
    for name, function in functions.items():
        graph = tf.function(function, input_signature=[spec, seed_spec])
        np.testing.assert_array_equal(
            bits_of(graph(U, SEED)), bits_of(function(tf.constant(U), SEED)), err_msg=name)
