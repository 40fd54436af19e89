"""Communication graphs for decentralized PDMM (pdmm.md §3): complete, ring, random geometric.

A graph is a `Graph` of `num_nodes` nodes and sorted undirected edges (i < j).
`neighbours[i]` lists node i's neighbours in increasing order; PDMM keeps one
dual z_{i|j} per (node, neighbour) in that order (the neighbour's *slot*).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

__all__ = ["Graph", "TOPOLOGIES", "build_graph", "complete_graph", "ring_graph",
           "random_geometric_graph", "GraphError"]

TOPOLOGIES = ("star", "complete", "ring", "rgg")
_RGG_TRIES = 1000  # pdmm.md §3: redraw up to 1000 times until connected


class GraphError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Graph:
    num_nodes: int
    edges: tuple[tuple[int, int], ...]  # (i, j) with i < j, sorted

    @property
    def neighbours(self) -> list[list[int]]:
        result = [[] for _ in range(self.num_nodes)]
        for i, j in self.edges:
            result[i].append(j)
            result[j].append(i)
        return [sorted(n) for n in result]

    @property
    def degrees(self) -> np.ndarray:
        return np.array([len(n) for n in self.neighbours], np.int64)

    @property
    def max_degree(self) -> int:
        return int(self.degrees.max()) if self.num_nodes else 0

    def adjacency(self) -> scipy.sparse.csr_matrix:
        rows = [i for i, _ in self.edges] + [j for _, j in self.edges]
        cols = [j for _, j in self.edges] + [i for i, _ in self.edges]
        return scipy.sparse.csr_matrix((np.ones(len(rows)), (rows, cols)),
                                       shape=(self.num_nodes, self.num_nodes))

    def is_connected(self) -> bool:
        if self.num_nodes <= 1:
            return True
        count, _ = scipy.sparse.csgraph.connected_components(self.adjacency(), directed=False)
        return count == 1

    def slot_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Routing tables, each `[num_nodes, max_degree]` int32, padded with −1 / 0.

        - `neighbour[i, k]`: node i's k-th neighbour j (−1 = padding);
        - `reverse_slot[i, k]`: the slot of i in j's neighbour list, so the
          message j sends to i is j's message number `reverse_slot[i, k]`;
        - `sign[i, k]`: B_{i|j} = +1 if i < j else −1 (0 for padding).
        """
        neighbours = self.neighbours
        width = max(self.max_degree, 1)
        neighbour = np.full((self.num_nodes, width), -1, np.int32)
        reverse = np.zeros((self.num_nodes, width), np.int32)
        sign = np.zeros((self.num_nodes, width), np.float32)
        for i, adjacent in enumerate(neighbours):
            for k, j in enumerate(adjacent):
                neighbour[i, k] = j
                reverse[i, k] = neighbours[j].index(i)
                sign[i, k] = 1.0 if i < j else -1.0
        return neighbour, reverse, sign


def _check_nodes(num_nodes: int, minimum: int, name: str) -> None:
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)):
        raise TypeError(f"{name} graph: num_nodes must be an integer; got {num_nodes!r}.")
    if num_nodes < minimum:
        raise GraphError(f"{name} graph needs at least {minimum} nodes; got {num_nodes}.")


def complete_graph(num_nodes: int) -> Graph:
    _check_nodes(num_nodes, 2, "complete")
    return Graph(num_nodes, tuple((i, j) for i in range(num_nodes)
                                  for j in range(i + 1, num_nodes)))


def ring_graph(num_nodes: int) -> Graph:
    _check_nodes(num_nodes, 3, "ring")
    edges = {tuple(sorted((i, (i + 1) % num_nodes))) for i in range(num_nodes)}
    return Graph(num_nodes, tuple(sorted(edges)))


def random_geometric_graph(num_nodes: int, seed: int, radius: float | None = None) -> Graph:
    """N points uniform on the unit square, an edge iff distance ≤ r (default sqrt(log N / N)).

    Redrawn (seeded) until connected, at most 1000 times; otherwise GraphError
    naming N and r.
    """
    _check_nodes(num_nodes, 2, "rgg")
    radius = math.sqrt(math.log(num_nodes) / num_nodes) if radius is None else float(radius)
    rng = np.random.default_rng([seed, 0x6EA9])
    upper = np.triu_indices(num_nodes, k=1)
    for _ in range(_RGG_TRIES):
        points = rng.random((num_nodes, 2))
        distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
        close = distances[upper] <= radius
        graph = Graph(num_nodes, tuple(zip(upper[0][close].tolist(), upper[1][close].tolist())))
        if graph.is_connected():
            return graph
    raise GraphError(f"rgg graph: no connected draw in {_RGG_TRIES} tries for N={num_nodes}, "
                     f"r={radius:.4g}; use more nodes or another --topology.")


def build_graph(topology: str, num_nodes: int, seed: int) -> Graph:
    """The decentralized graph for `--topology` (not `star`, which is centralized PDMM)."""
    if topology == "complete":
        return complete_graph(num_nodes)
    if topology == "ring":
        return ring_graph(num_nodes)
    if topology == "rgg":
        return random_geometric_graph(num_nodes, seed)
    raise GraphError(f"--topology: invalid value {topology!r} for a decentralized graph; valid "
                     f"choices: complete, ring, rgg (star is centralized PDMM).")
