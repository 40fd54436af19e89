"""PDMM's update rules and graphs against hand-computed values, and the
centralized/decentralized algorithms of pdmm.md against NumPy references on
least squares (exact prox): convergence to the optimum, equivalence of the
scaled star form with generic PDMM and with FedSplit."""

import numpy as np
import pytest

from pdmm import graphs
from pdmm import math as pdmm_math


# --- update rules ---------------------------------------------------------

def test_update_rules_by_hand():
    w, v, u, g = np.array([1.0, -2.0]), np.array([0.5, 1.0]), np.array([3.0, 0.0]), \
        np.array([0.25, 0.5])
    np.testing.assert_allclose(pdmm_math.prox_gradient(g, w, v, c=0.4), [0.45, -0.7])
    np.testing.assert_allclose(pdmm_math.uplink_message(w, v), [1.5, -5.0])
    np.testing.assert_allclose(pdmm_math.relax(u, w, theta=0.5), [2.0, -1.0])
    np.testing.assert_allclose(pdmm_math.relax(u, w, theta=1.0), w)
    np.testing.assert_allclose(pdmm_math.server_reply(w, u), [-1.0, -4.0])
    np.testing.assert_allclose(pdmm_math.node_gradient(g, w, v, c=0.5, degree=2),
                               [0.25 + 0.5 + 1.0, 0.5 + 1.0 - 2.0])
    np.testing.assert_allclose(pdmm_math.edge_message(u, w, c=0.5, sign=-1.0), [2.0, 2.0])
    assert float(pdmm_math.squared_distance([w, u], [v, u])) == pytest.approx(0.25 + 9.0)


def test_rules_map_over_structures():
    w = [np.ones([2, 2], np.float32), np.zeros([3], np.float32)]
    v = [np.full([2, 2], 3.0, np.float32), np.ones([3], np.float32)]
    y = pdmm_math.uplink_message(w, v)
    np.testing.assert_allclose(y[0], np.full([2, 2], -1.0))
    np.testing.assert_allclose(y[1], np.full([3], -1.0))


# --- graphs ---------------------------------------------------------------

def test_complete_and_ring_graphs():
    complete = graphs.complete_graph(4)
    assert complete.edges == ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
    assert complete.degrees.tolist() == [3, 3, 3, 3]
    ring = graphs.ring_graph(5)
    assert ring.edges == ((0, 1), (0, 4), (1, 2), (2, 3), (3, 4))
    assert ring.neighbours[0] == [1, 4] and ring.neighbours[4] == [0, 3]
    assert ring.is_connected() and complete.is_connected()


def test_slot_tables_route_each_message_to_its_receiver():
    ring = graphs.ring_graph(4)
    neighbour, reverse, sign = ring.slot_tables()
    # node 0's neighbours are 1 and 3; 0 is slot 0 in 1's list [0, 2] and slot 0 in 3's [0, 2].
    assert neighbour[0].tolist() == [1, 3] and reverse[0].tolist() == [0, 0]
    assert sign[0].tolist() == [1.0, 1.0] and sign[3].tolist() == [-1.0, -1.0]
    lists = ring.neighbours
    for i in range(4):
        for k, j in enumerate(lists[i]):
            assert lists[j][reverse[i, k]] == i


def test_rgg_is_connected_seeded_and_fails_clearly():
    first, second = graphs.random_geometric_graph(20, seed=3), graphs.random_geometric_graph(20, 3)
    assert first == second and first.is_connected()
    assert graphs.random_geometric_graph(20, seed=4) != first
    with pytest.raises(graphs.GraphError, match=r"N=6, r=0\.01"):
        graphs.random_geometric_graph(6, seed=0, radius=0.01)
    with pytest.raises(graphs.GraphError, match="'star'"):
        graphs.build_graph("star", 5, 0)
    with pytest.raises(graphs.GraphError, match="at least 3 nodes"):
        graphs.ring_graph(2)


def test_disconnected_graph_is_detected():
    assert not graphs.Graph(4, ((0, 1), (2, 3))).is_connected()


# --- NumPy references on least squares (exact prox) -------------------------

def least_squares_problem(num_clients=5, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    problems = []
    for i in range(num_clients):
        a = rng.normal(size=(8, dim)) + i * 0.3
        b = rng.normal(size=8) + i
        problems.append((a, b))
    # f_i(w) = ½‖A_i w − b_i‖²; optimum of Σ f_i.
    optimum = np.linalg.solve(sum(a.T @ a for a, _ in problems),
                              sum(a.T @ b for a, b in problems))
    return problems, optimum


def prox(a, b, v, c):
    """argmin_w ½‖Aw − b‖² + (c/2)‖w − v‖²."""
    return np.linalg.solve(a.T @ a + c * np.eye(a.shape[1]), a.T @ b + c * v)


def centralized_scaled(problems, *, c, theta, rounds, init="consensus"):
    """pdmm.md §2 in the scaled variables, built from the library's update rules."""
    dim = problems[0][0].shape[1]
    start = np.zeros(dim) if init == "zero" else np.full(dim, 0.5)
    w0 = np.full(dim, 0.5)
    v = [start.copy() for _ in problems]
    u = [start.copy() for _ in problems]
    w_s, history = start.copy(), []
    for _ in range(rounds):
        ys = []
        for i, (a, b) in enumerate(problems):
            w_i = prox(a, b, v[i], c)
            y = pdmm_math.uplink_message(w_i, v[i])
            u[i] = pdmm_math.relax(u[i], y, theta=theta)
            ys.append(y)
        w_s = pdmm_math.relax(w_s, np.mean(ys, axis=0), theta=theta)
        for i in range(len(problems)):
            v[i] = pdmm_math.relax(v[i], pdmm_math.server_reply(w_s, u[i]), theta=theta)
        history.append(np.array(w_s))
    del w0
    return history


def generic_star(problems, *, c, theta, rounds):
    """Generic PDMM (pdmm.md §1) on the star graph, server node s with f_s = 0, the clients
    updating first and the server second in each round (the order of the scaled form).

    Node ids: server 0, clients 1..N, so B_{s|i} = +I and B_{i|s} = −I (s < i)."""
    n, dim = len(problems), problems[0][0].shape[1]
    w0 = np.full(dim, 0.5)
    # Consensus init in generic variables: z_{i|s} = −c B_{i|s} w0 = c w0, z_{s|i} = −c w0.
    z_client = [c * w0 for _ in range(n)]      # z_{i|s}
    z_server = [-c * w0 for _ in range(n)]     # z_{s|i}
    history = []
    for _ in range(rounds):
        # Clients: argmin f_i(w) + z_{i|s}ᵀ(−w) + (c/2)‖w‖²  (d_i = 1), then y_{i|s}.
        w = [prox(a, b, z_client[i] / c, c) for i, (a, b) in enumerate(problems)]
        y_to_server = [z_client[i] - 2 * c * w[i] for i in range(n)]
        z_server = [(1 - theta) * z_server[i] + theta * y_to_server[i] for i in range(n)]
        # Server: argmin Σ_i z_{s|i}ᵀ w + (c·n/2)‖w‖², then y_{s|i}.
        w_s = -sum(z_server) / (c * n)
        y_to_client = [z_server[i] + 2 * c * w_s for i in range(n)]
        z_client = [(1 - theta) * z_client[i] + theta * y_to_client[i] for i in range(n)]
        history.append(w_s)
    return history


def fedsplit(problems, *, step, rounds):
    """FedSplit (Pathak & Wainwright 2020) with exact proxes of step s."""
    dim = problems[0][0].shape[1]
    z = [np.full(dim, 0.5) for _ in problems]
    x = np.mean(z, axis=0)
    history = []
    for _ in range(rounds):
        for i, (a, b) in enumerate(problems):
            half = prox(a, b, 2 * x - z[i], 1.0 / step)
            z[i] = z[i] + 2 * (half - x)
        x = np.mean(z, axis=0)
        history.append(x)
    return history


@pytest.mark.parametrize("theta", [1.0, 0.5])
@pytest.mark.parametrize("init", ["consensus", "zero"])
def test_centralized_pdmm_reaches_the_optimum(theta, init):
    problems, optimum = least_squares_problem()
    history = centralized_scaled(problems, c=2.0, theta=theta, rounds=1500, init=init)
    np.testing.assert_allclose(history[-1], optimum, atol=1e-8)
    # It is a fixed point: one more round does not move it.
    np.testing.assert_allclose(history[-1], history[-2], atol=1e-10)


def test_the_fixed_point_does_not_depend_on_c():
    problems, optimum = least_squares_problem(seed=1)
    for c in (0.5, 2.0, 8.0):
        np.testing.assert_allclose(
            centralized_scaled(problems, c=c, theta=1.0, rounds=600)[-1], optimum, atol=1e-7)


@pytest.mark.parametrize("theta", [1.0, 0.5])
def test_scaled_star_form_equals_generic_pdmm(theta):
    problems, _ = least_squares_problem(seed=2)
    scaled = centralized_scaled(problems, c=1.5, theta=theta, rounds=30)
    generic = generic_star(problems, c=1.5, theta=theta, rounds=30)
    np.testing.assert_allclose(np.array(scaled), np.array(generic), rtol=1e-9, atol=1e-10)


def test_theta_one_is_fedsplit_with_step_one_over_c():
    problems, optimum = least_squares_problem(seed=3)
    c = 1.25
    pdmm = centralized_scaled(problems, c=c, theta=1.0, rounds=300)
    split = fedsplit(problems, step=1.0 / c, rounds=300)
    np.testing.assert_allclose(np.array(pdmm), np.array(split), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(split[-1], optimum, atol=1e-6)


def decentralized(problems, graph, *, c, theta, rounds):
    """pdmm.md §1 on a graph with exact primal steps, from the library's rules."""
    n, dim = len(problems), problems[0][0].shape[1]
    neighbours = graph.neighbours
    z = {(i, j): np.zeros(dim) for i in range(n) for j in neighbours[i]}
    w = [np.zeros(dim)] * n
    # argmin ½‖Aw − b‖² + dualᵀw + (c d/2)‖w‖² = (AᵀA + c d I)⁻¹ (Aᵀb − dual)
    inverses = [np.linalg.inv(a.T @ a + c * len(neighbours[i]) * np.eye(dim))
                for i, (a, _) in enumerate(problems)]
    for _ in range(rounds):
        for i, (a, b) in enumerate(problems):
            dual = sum((1.0 if i < j else -1.0) * z[i, j] for j in neighbours[i])
            w[i] = inverses[i] @ (a.T @ b - dual)
        messages = {(i, j): pdmm_math.edge_message(z[i, j], w[i], c=c,
                                                   sign=1.0 if i < j else -1.0)
                    for (i, j) in z}
        z = {(i, j): pdmm_math.relax(z[i, j], messages[j, i], theta=theta) for (i, j) in z}
    return w


@pytest.mark.parametrize("topology,theta", [("ring", 1.0), ("complete", 1.0), ("rgg", 1.0),
                                            ("ring", 0.5)])
def test_decentralized_pdmm_reaches_consensus_at_the_optimum(topology, theta):
    problems, optimum = least_squares_problem(num_clients=6, seed=4)
    graph = graphs.build_graph(topology, 6, seed=0)
    w = decentralized(problems, graph, c=1.0, theta=theta, rounds=1500)
    for w_i in w:
        np.testing.assert_allclose(w_i, optimum, atol=1e-6)
