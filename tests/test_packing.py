"""tff_byz.packing: leaves ↔ one float32 vector, leaf by leaf, each row-major."""

import numpy as np
import pytest

from tff_byz.packing import Packing, pack_numpy, unpack_numpy

# Leaves of several shapes, a scalar among them; values 1..11 in packed order.
LEAVES = [
    np.array([[1, 2, 3], [4, 5, 6]], np.float32),  # (2, 3)
    np.float32(7),  # ()
    np.array([[[8], [9]]], np.float32),  # (1, 2, 1)
    np.array([10, 11], np.float32),  # (2,)
]
PACKED = np.arange(1, 12, dtype=np.float32)


def _assert_leaves_equal(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_pack_numpy_is_leaf_by_leaf_row_major():
    packed = pack_numpy(LEAVES)
    assert packed.dtype == np.float32
    assert packed.shape == (11,)
    np.testing.assert_array_equal(packed, PACKED)


def test_pack_numpy_of_a_3d_leaf_is_row_major():
    leaf = np.arange(24).reshape(2, 3, 4)
    np.testing.assert_array_equal(pack_numpy([leaf]), np.arange(24, dtype=np.float32))
    # element [i, j, k] sits at 12 i + 4 j + k
    assert pack_numpy([leaf])[12 * 1 + 4 * 2 + 3] == leaf[1, 2, 3]


def test_pack_numpy_ignores_memory_layout():
    fortran = np.asfortranarray(np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(pack_numpy([fortran]), [1.0, 2.0, 3.0, 4.0])
    transposed = np.array([[1.0, 2.0], [3.0, 4.0]]).T  # logical [[1, 3], [2, 4]]
    np.testing.assert_array_equal(pack_numpy([transposed]), [1.0, 3.0, 2.0, 4.0])


def test_pack_numpy_casts_to_float32():
    packed = pack_numpy([np.array([1, 2], np.int64), np.array([0.5], np.float64), [3.25]])
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(packed, [1.0, 2.0, 0.5, 3.25])


def test_unpack_numpy_inverts_the_hand_built_vector():
    _assert_leaves_equal(unpack_numpy(PACKED, LEAVES), LEAVES)


@pytest.mark.parametrize("shapes", [
    [()],
    [(), ()],
    [(5,)],
    [(3, 4)],
    [(2, 3, 4), (), (1,), (4, 1)],
    [(1, 1, 1, 1), (7,), ()],
])
def test_round_trip(shapes):
    rng = np.random.default_rng(len(shapes))
    leaves = [rng.normal(size=s).astype(np.float32) for s in shapes]
    packed = pack_numpy(leaves)
    assert packed.shape == (sum(int(np.prod(s)) for s in shapes),)
    _assert_leaves_equal(unpack_numpy(packed, leaves), leaves)
    np.testing.assert_array_equal(pack_numpy(unpack_numpy(packed, leaves)), packed)


def test_unpack_numpy_takes_only_the_shapes_of_like():
    like = [np.zeros((2, 2)), np.zeros(())]
    leaves = unpack_numpy(np.array([4.0, 3.0, 2.0, 1.0, 0.0]), like)
    _assert_leaves_equal(leaves, [np.array([[4.0, 3.0], [2.0, 1.0]]), np.array(0.0)])


def test_unpack_numpy_keeps_leading_client_axis():
    rows = np.stack([PACKED, PACKED + 100, PACKED + 200])  # [3 clients, 11]
    leaves = unpack_numpy(rows, LEAVES)
    assert [leaf.shape for leaf in leaves] == [(3, 2, 3), (3,), (3, 1, 2, 1), (3, 2)]
    for client in range(3):
        _assert_leaves_equal([leaf[client] for leaf in leaves],
                             [np.asarray(t) + 100 * client for t in LEAVES])
    np.testing.assert_array_equal(leaves[1], [7, 107, 207])  # the scalar leaf of each client
    np.testing.assert_array_equal(leaves[3][2], [210, 211])


def test_unpack_numpy_keeps_two_leading_axes():
    rows = np.arange(2 * 3 * 11, dtype=np.float32).reshape(2, 3, 11)
    leaves = unpack_numpy(rows, LEAVES)
    assert [leaf.shape for leaf in leaves] == [(2, 3, 2, 3), (2, 3), (2, 3, 1, 2, 1), (2, 3, 2)]
    assert leaves[1][1, 2] == rows[1, 2, 6]
    np.testing.assert_array_equal(leaves[3][0, 1], rows[0, 1, 9:11])


def test_packing_shapes_sizes_dimension():
    packing = Packing(LEAVES)
    assert packing.shapes == [(2, 3), (), (1, 2, 1), (2,)]
    assert packing.sizes == [6, 1, 2, 2]
    assert packing.dimension == 11
    assert all(isinstance(s, int) for s in packing.sizes)
    assert isinstance(packing.dimension, int)
    assert Packing([np.zeros(())]).dimension == 1
    assert Packing([np.zeros((0, 3)), np.zeros(2)]).sizes == [0, 2]


def test_packing_tf_pack_and_unpack_match_numpy():
    packing = Packing(LEAVES)
    packed = packing.pack(LEAVES)
    np.testing.assert_array_equal(packed.numpy(), PACKED)
    _assert_leaves_equal([t.numpy() for t in packing.unpack(packed)], LEAVES)


def test_packing_tf_single_scalar_leaf():
    packing = Packing([np.float32(3)])
    packed = packing.pack([np.float32(3)])
    np.testing.assert_array_equal(packed.numpy(), [3.0])
    (leaf,) = packing.unpack(packed)
    assert leaf.shape == ()
    assert leaf.numpy() == 3.0


def test_packing_tf_unpack_rows_matches_unpack_numpy():
    rows = np.stack([PACKED, -PACKED])
    packing = Packing(LEAVES)
    leaves = [t.numpy() for t in packing.unpack_rows(rows, 2)]
    _assert_leaves_equal(leaves, unpack_numpy(rows, LEAVES))
    np.testing.assert_array_equal(leaves[0][1], -LEAVES[0])
    np.testing.assert_array_equal(leaves[1], [7.0, -7.0])


def test_packing_tf_unpack_rows_single_leaf():
    packing = Packing([np.zeros((2, 2))])
    (leaf,) = packing.unpack_rows(np.arange(12, dtype=np.float32).reshape(3, 4), 3)
    np.testing.assert_array_equal(leaf.numpy()[2], [[8, 9], [10, 11]])
