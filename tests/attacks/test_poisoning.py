"""Data poisoning (spec §2): label flips, backdoor geometry and poisoning, ASR."""

import numpy as np
import pytest

from attacks.poisoning import transforms as ps

# --- label flips -----------------------------------------------------------------


def test_flip_labels_default():
    y = np.array([0, 1, 2, 9, 5], np.int32)
    out = ps.flip_labels(y, 10)
    np.testing.assert_array_equal(out, [9, 8, 7, 0, 4])
    assert out.dtype == np.int32
    np.testing.assert_array_equal(y, [0, 1, 2, 9, 5])  # input untouched


def test_parse_label_map_and_flip_with_map():
    label_map = ps.parse_label_map("0:1, 1:0,3:3 ,4:2", 5)
    np.testing.assert_array_equal(label_map, [1, 0, 2, 3, 2])
    np.testing.assert_array_equal(ps.flip_labels([0, 1, 2, 3, 4, 0], 5, label_map), [1, 0, 2, 3, 2, 1])


@pytest.mark.parametrize("text, bad", [
    ("0:1,1-0", "'1-0'"), ("0:1,a:2", "'a:2'"), ("0:10", "'0:10'"), ("-1:2", "'-1:2'"),
    ("0:1,0:2", "'0:2'"), ("", "''"), ("1:2:3", "'1:2:3'"),
])
def test_parse_label_map_errors_name_the_item_and_range(text, bad):
    with pytest.raises(ValueError, match="0..9") as error:
        ps.parse_label_map(text, 10)
    assert bad in str(error.value) and "\n" not in str(error.value)


def test_flip_labels_checks():
    with pytest.raises(ValueError, match="0..9"):
        ps.flip_labels([0, 10], 10)
    with pytest.raises(ValueError, match="length 10"):
        ps.flip_labels([0, 1], 10, label_map=[1, 0])
    with pytest.raises(TypeError, match="num_classes"):
        ps.flip_labels([0, 1], 10.0)


# --- backdoor geometry and stamping ------------------------------------------------


def test_backdoor_geometry_auto_size_and_centre():
    assert ps.backdoor_geometry((28, 28, 1)) == (8, 10, 10)
    assert ps.backdoor_geometry((8, 8, 1)) == (4, 2, 2)
    assert ps.backdoor_geometry((32, 32, 3)) == (8, 12, 12)
    assert ps.backdoor_geometry((28, 28), size=5) == (5, 11, 11)  # floor((28-5)/2) = 11
    assert ps.backdoor_geometry((7, 9), size=2) == (2, 2, 3)


def test_backdoor_geometry_corner_and_does_not_fit():
    assert ps.backdoor_geometry((28, 28, 1), size=10, corner=(9, 9)) == (10, 9, 9)
    assert ps.backdoor_geometry((28, 28, 1), size=10, corner=(18, 0)) == (10, 18, 0)
    with pytest.raises(ValueError, match="does not fit"):
        ps.backdoor_geometry((28, 28, 1), size=10, corner=(19, 0))
    with pytest.raises(ValueError, match="does not fit"):
        ps.backdoor_geometry((8, 8, 1), size=10)
    with pytest.raises(ValueError, match="does not fit"):
        ps.backdoor_geometry((8, 8, 1), size=2, corner=(-1, 0))
    with pytest.raises(ValueError, match="size"):
        ps.backdoor_geometry((8, 8, 1), size=0)
    with pytest.raises(TypeError, match="size"):
        ps.backdoor_geometry((8, 8, 1), size=2.0)
    with pytest.raises(TypeError, match="corner"):
        ps.backdoor_geometry((8, 8, 1), corner=(1,))


def test_stamp_trigger_sets_patch_on_all_channels():
    x = np.full((2, 6, 5, 3), 0.5, np.float32)
    out = ps.stamp_trigger(x, size=2, corner=(1, 3), value=1.0)
    expected = x.copy()
    expected[:, 1:3, 3:5, :] = 1.0
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32
    assert (x == 0.5).all()  # a copy
    centre = ps.stamp_trigger(x, size=2)  # corner (2, 1), value 0
    assert (centre[:, 2:4, 1:3, :] == 0).all() and (centre == 0).sum() == 2 * 4 * 3


def test_stamp_trigger_per_channel_value():
    x = np.ones((1, 4, 4, 3), np.float32)
    out = ps.stamp_trigger(x, size=2, corner=(0, 0), value=[0.1, 0.2, 0.3])
    np.testing.assert_allclose(out[0, :2, :2], np.broadcast_to([0.1, 0.2, 0.3], (2, 2, 3)))
    assert (out[0, 2:] == 1).all() and (out[0, :, 2:] == 1).all()
    with pytest.raises(ValueError, match="per-channel"):
        ps.stamp_trigger(x, value=[0.1, 0.2])
    with pytest.raises(ValueError, match="N, H, W, C"):
        ps.stamp_trigger(x[0])


def test_triggered_test_set_stamps_everything():
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    out = ps.triggered_test_set(x)
    assert (out[:, 2:6, 2:6] == 0).all()
    mask = np.ones((8, 8), bool)
    mask[2:6, 2:6] = False
    np.testing.assert_array_equal(out[:, mask], x[:, mask])


# --- backdoor poisoning ----------------------------------------------------------


def data(n=10, num_classes=10):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.2, 1.0, size=(n, 8, 8, 1)).astype(np.float32)
    y = (np.arange(n) % num_classes).astype(np.int32)
    return x, y


@pytest.mark.parametrize("fraction, count", [(1.0, 10), (0.3, 3), (0.25, 2), (0.0, 0), (1, 10)])
def test_backdoor_poison_fraction_fixed_target(fraction, count):
    x, y = data()
    x_new, y_new, mask = ps.backdoor_poison(x, y, np.random.default_rng(0), num_classes=10,
                                            fraction=fraction, target=7)
    assert mask.sum() == count  # round(p·N): 0.25·10 = 2.5 → 2
    stamped = ps.stamp_trigger(x[mask])
    np.testing.assert_array_equal(x_new[mask], stamped)
    np.testing.assert_array_equal(y_new[mask], 7)
    np.testing.assert_array_equal(x_new[~mask], x[~mask])  # untouched
    np.testing.assert_array_equal(y_new[~mask], y[~mask])
    assert y_new.dtype == np.int32
    assert (x >= 0.2).all() and (y == np.arange(10)).all()  # inputs not modified


def test_backdoor_poison_is_determined_by_the_generator():
    x, y = data(n=50)
    a = ps.backdoor_poison(x, y, np.random.default_rng(3), num_classes=10, fraction=0.5)
    b = ps.backdoor_poison(x, y, np.random.default_rng(3), num_classes=10, fraction=0.5)
    c = ps.backdoor_poison(x, y, np.random.default_rng(4), num_classes=10, fraction=0.5)
    for first, second in zip(a, b):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(a[2], c[2])


def test_backdoor_poison_random_target_draws_per_example():
    x, y = data(n=2000)
    rng = np.random.default_rng(5)
    _, y_new, mask = ps.backdoor_poison(x, y, rng, num_classes=10, fraction=0.5)
    # the documented draw order: choice of the examples, then one integers() call
    replay = np.random.default_rng(5)
    indices = np.sort(replay.choice(2000, size=1000, replace=False))
    np.testing.assert_array_equal(np.flatnonzero(mask), indices)
    np.testing.assert_array_equal(y_new[indices], replay.integers(0, 10, size=1000))
    counts = np.bincount(y_new[mask], minlength=10)
    assert counts.min() > 60  # uniform over all 10 labels


def test_backdoor_poison_target_classes():
    x, y = data(n=1000)
    _, y_new, mask = ps.backdoor_poison(x, y, np.random.default_rng(0), num_classes=10,
                                        target="random", target_classes=range(9))
    assert set(np.unique(y_new[mask])) == set(range(9))


def test_backdoor_poison_checks():
    x, y = data()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="fraction"):
        ps.backdoor_poison(x, y, rng, num_classes=10, fraction=1.5)
    with pytest.raises(ValueError, match="target"):
        ps.backdoor_poison(x, y, rng, num_classes=10, target=10)
    with pytest.raises(ValueError, match="target"):
        ps.backdoor_poison(x, y, rng, num_classes=10, target="fixed")
    with pytest.raises(ValueError, match="target_classes"):
        ps.backdoor_poison(x, y, rng, num_classes=10, target_classes=[3, 10])
    with pytest.raises(ValueError, match="target_classes"):
        ps.backdoor_poison(x, y, rng, num_classes=10, target=1, target_classes=[3])
    with pytest.raises(ValueError, match="does not fit"):
        ps.backdoor_poison(x, y, rng, num_classes=10, fraction=0.0, size=9)


def test_fedlaw_code_preset():
    preset = ps.fedlaw_code_preset(((0.1307,), (0.3081,)))
    assert preset == dict(size=10, corner=(9, 9), value=pytest.approx(0.1307), target="random",
                          target_classes=tuple(range(9)))
    x = np.ones((200, 28, 28, 1), np.float32)
    y = np.zeros(200, np.int32)
    x_new, y_new, mask = ps.backdoor_poison(x, y, np.random.default_rng(0), num_classes=10, **preset)
    assert mask.all() and set(np.unique(y_new)) == set(range(9))
    np.testing.assert_allclose(x_new[:, 9:19, 9:19], 0.1307)
    assert (x_new[:, :9] == 1).all() and (x_new[:, 19:] == 1).all()
    # value 0 after normalisation
    np.testing.assert_allclose((x_new[:, 9:19, 9:19] - 0.1307) / 0.3081, 0.0, atol=1e-6)


def test_fedlaw_code_preset_per_channel():
    mean = (0.4914, 0.4822, 0.4465)
    preset = ps.fedlaw_code_preset((mean, (0.247, 0.243, 0.261)))
    np.testing.assert_allclose(preset["value"], mean)
    out = ps.stamp_trigger(np.ones((1, 32, 32, 3), np.float32), preset["size"], preset["corner"],
                           preset["value"])
    np.testing.assert_allclose(out[0, 9:19, 9:19], np.broadcast_to(mean, (10, 10, 3)))


# --- attack success rate ----------------------------------------------------------


def test_attack_success_rate_hand_made():
    true = np.array([0, 1, 2, 3, 3, 5])
    pred = np.array([3, 3, 2, 3, 1, 3])
    # target 3: eligible true ≠ 3 → indices 0, 1, 2, 5; predicted 3 at 0, 1, 5 → 3/4
    assert ps.attack_success_rate(pred, true, 3) == 0.75
    # logits reduce by argmax
    logits = np.eye(6)[pred]
    assert ps.attack_success_rate(logits, true, 3) == 0.75
    assert ps.attack_success_rate(pred, true, 4) == 0.0


def test_attack_success_rate_nan_when_no_eligible_image():
    assert np.isnan(ps.attack_success_rate([1, 2], [3, 3], 3))
    assert np.isnan(ps.attack_success_rate(np.zeros(0, int), np.zeros(0, int), 3))
    with pytest.raises(ValueError, match="predictions"):
        ps.attack_success_rate([1, 2, 3], [1, 2], 3)


# --- the TF forms, per example (what the TFF worker runs) -------------------------

SEED = np.array([7, 11], np.int64)


def test_flip_labels_tf_equals_numpy():
    y = np.array([0, 1, 2, 9, 5], np.int32)
    np.testing.assert_array_equal(ps.flip_labels_tf(y, 10).numpy(), ps.flip_labels(y, 10))
    label_map = ps.parse_label_map("0:1,1:0,4:2", 5)
    y = np.array([0, 1, 2, 3, 4, 0], np.int32)
    np.testing.assert_array_equal(ps.flip_labels_tf(y, 5, label_map).numpy(),
                                  ps.flip_labels(y, 5, label_map))


def _images(n, shape=(10, 10, 3), seed=0):
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("fraction, count", [(1.0, 11), (0.5, 6), (0.25, 3), (0.0, 0)])
def test_backdoor_tf_stamps_round_p_n_examples_like_the_numpy_stamp(fraction, count):
    """round(p·N) examples (Python's rounding: 5.5 → 6), each stamped as `stamp_trigger`
    does and relabelled to the target; the others untouched."""
    n = 11
    x, y = _images(n), np.arange(n, dtype=np.int32) % 10
    positions = np.arange(n, dtype=np.int32)
    x_new, y_new = (t.numpy() for t in ps.backdoor_tf(
        x, y, positions, n, SEED, num_classes=10, fraction=fraction, size=3, corner=(2, 4),
        value=0.25, target=7))
    changed = np.flatnonzero(np.any(x_new != x, axis=(1, 2, 3)))
    assert len(changed) == count
    np.testing.assert_array_equal(x_new[changed], ps.stamp_trigger(x[changed], 3, (2, 4), 0.25))
    unchanged = np.setdiff1d(positions, changed)
    np.testing.assert_array_equal(x_new[unchanged], x[unchanged])
    np.testing.assert_array_equal(y_new[changed], 7)
    np.testing.assert_array_equal(y_new[unchanged], y[unchanged])


def test_backdoor_tf_depends_only_on_the_seed_and_the_row():
    """Reading a subset of the rows, in any order, gives the subset of the poisoned data;
    the chosen rows and random targets change with the seed."""
    n = 40
    x, y = _images(n, (6, 6, 1)), np.zeros(n, np.int32)
    options = dict(num_classes=10, fraction=0.3, size=2, target="random", target_classes=(2, 5))
    everything = np.arange(n, dtype=np.int32)
    full_x, full_y = (t.numpy() for t in ps.backdoor_tf(x, y, everything, n, SEED, **options))
    subset = np.array([33, 2, 17, 2, 0], np.int32)
    part_x, part_y = (t.numpy() for t in ps.backdoor_tf(x[subset], y[subset], subset, n, SEED,
                                                         **options))
    np.testing.assert_array_equal(part_x, full_x[subset])
    np.testing.assert_array_equal(part_y, full_y[subset])
    chosen = np.any(full_x != x, axis=(1, 2, 3))
    assert chosen.sum() == 12
    assert set(full_y[chosen]) <= {2, 5} and set(full_y[chosen]) == {2, 5}
    np.testing.assert_array_equal(full_y[~chosen], 0)
    other_x, _ = ps.backdoor_tf(x, y, everything, n, np.array([7, 12], np.int64), **options)
    assert not np.array_equal(np.any(other_x.numpy() != x, axis=(1, 2, 3)), chosen)


def test_backdoor_tf_per_channel_value():
    x = np.zeros((2, 6, 6, 3), np.float32)
    x_new, _ = ps.backdoor_tf(x, np.zeros(2, np.int32), np.arange(2, dtype=np.int32), 2, SEED,
                              num_classes=10, size=2, corner=(0, 0), value=[0.1, 0.2, 0.3],
                              target=1)
    np.testing.assert_array_equal(x_new.numpy(), ps.stamp_trigger(x, 2, (0, 0), [0.1, 0.2, 0.3]))
