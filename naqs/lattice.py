"""Lattices: sites, coordinates, J1/J2 edge sets and symmetry permutations.

Conventions (DESIGN.md):
- sites of a grid lattice are numbered row-major, ``site = x + Lx * y``; this is also the
  autoregressive order of the NAQS models, which see a configuration as an ``[Ly, Lx]``
  image;
- a symmetry is a permutation ``perm`` of the sites acting on a configuration as
  ``(T s)[i] = s[perm[i]]`` (``s[..., perm]`` in torch), optionally combined with a global
  spin inversion ``flip`` (``T s -> -T s``). The identity is always element 0.

Named clusters of the generalization study are shipped in ``naqs/data`` and loaded with
:func:`cluster`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = [
    "Lattice",
    "square",
    "triangle",
    "kagome",
    "cluster",
    "cluster_names",
    "parse_size",
    "make_lattice",
]


@dataclass(frozen=True, eq=False)
class Lattice:
    """A finite lattice.

    Attributes:
        name: human-readable name, e.g. ``"square-4x4-obc"`` or ``"kagome-24"``.
        n_sites: number of sites N.
        positions: ``[N, 2]`` float cartesian coordinates.
        j1_edges, j2_edges: ``[E, 2]`` int64 arrays of site pairs ``i < j`` (no duplicates).
        shape: ``(Lx, Ly)`` when the sites fill an Lx x Ly grid in row-major order (the
            NAQS models need this), else ``None``.
        pbc: periodic boundary conditions.
        perms: ``[G, N]`` int64 symmetry permutations (identity first) that map the J1
            edge set onto itself and the J2 edge set onto itself.
        sublattice: ``[N]`` int array of 0/1 for a bipartition of the J1 graph (used by
            the Marshall sign rule), or ``None`` when the J1 graph is not bipartite.
    """

    name: str
    n_sites: int
    positions: np.ndarray
    j1_edges: np.ndarray
    j2_edges: np.ndarray
    shape: tuple[int, int] | None = None
    pbc: bool = False
    perms: np.ndarray = field(default=None)  # type: ignore[assignment]
    sublattice: np.ndarray | None = None

    def __post_init__(self):
        n = self.n_sites
        for label in ("j1_edges", "j2_edges"):
            edges = np.asarray(getattr(self, label), dtype=np.int64).reshape(-1, 2)
            if edges.size and (edges.min() < 0 or edges.max() >= n):
                raise ValueError(f"{label} of {self.name!r} refer to sites outside [0, {n})")
            if edges.size and np.any(edges[:, 0] == edges[:, 1]):
                raise ValueError(f"{label} of {self.name!r} contain a self-loop")
            object.__setattr__(self, label, _canonical_edges(edges))
        if self.shape is not None and self.shape[0] * self.shape[1] != n:
            raise ValueError(f"shape {self.shape} does not hold {n} sites")
        if self.perms is None:
            object.__setattr__(self, "perms", np.arange(n, dtype=np.int64)[None, :])
        perms = np.asarray(self.perms, dtype=np.int64)
        for g, p in enumerate(perms):
            if not self._preserves_edges(p):
                raise ValueError(f"permutation {g} of {self.name!r} is not a symmetry of its edge sets")
        object.__setattr__(self, "perms", perms)
        if self.sublattice is None:
            object.__setattr__(self, "sublattice", _bipartition(n, self.j1_edges))

    # ------------------------------------------------------------------ helpers
    def _preserves_edges(self, perm: np.ndarray) -> bool:
        if sorted(perm.tolist()) != list(range(self.n_sites)):
            return False
        inverse = np.argsort(perm)
        for edges in (self.j1_edges, self.j2_edges):
            if edges.size == 0:
                continue
            # (T s)[i] = s[perm[i]]: an edge (a, b) of s becomes (inv[a], inv[b]) of T s.
            mapped = _canonical_edges(inverse[edges])
            if not np.array_equal(mapped, edges):
                return False
        return True

    @property
    def edges(self) -> np.ndarray:
        """All J1 and J2 edges, J1 first."""
        return np.concatenate([self.j1_edges, self.j2_edges], axis=0)

    @property
    def n_symmetries(self) -> int:
        return int(self.perms.shape[0])

    def symmetry_group(self, spin_flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(perms [G, N], flips [G] bool)``; with ``spin_flip`` each permutation also
        appears combined with a global spin inversion (G doubles)."""
        perms = self.perms
        flips = np.zeros(len(perms), dtype=bool)
        if spin_flip:
            perms = np.concatenate([perms, perms], axis=0)
            flips = np.concatenate([flips, np.ones_like(flips)])
        return perms, flips

    def __repr__(self) -> str:
        return (
            f"Lattice({self.name!r}, n_sites={self.n_sites}, shape={self.shape}, pbc={self.pbc}, "
            f"|J1|={len(self.j1_edges)}, |J2|={len(self.j2_edges)}, symmetries={self.n_symmetries})"
        )


def _canonical_edges(edges: np.ndarray) -> np.ndarray:
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if edges.size == 0:
        return edges
    edges = np.sort(edges, axis=1)
    edges = np.unique(edges, axis=0)
    return edges


def _bipartition(n: int, edges: np.ndarray) -> np.ndarray | None:
    color = -np.ones(n, dtype=np.int64)
    adjacency: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        adjacency[a].append(b)
        adjacency[b].append(a)
    for start in range(n):
        if color[start] >= 0:
            continue
        color[start] = 0
        stack = [start]
        while stack:
            a = stack.pop()
            for b in adjacency[a]:
                if color[b] < 0:
                    color[b] = 1 - color[a]
                    stack.append(b)
                elif color[b] == color[a]:
                    return None
    return color


def parse_size(text: str) -> tuple[int, int]:
    """``"4x6"`` -> ``(4, 6)`` (Lx, Ly); ``"5"`` -> ``(5, 5)``."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as err:
        raise ValueError(f"lattice size must look like 4x4 or 6x4, got {text!r}") from err
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"lattice size must be two positive integers like 4x4, got {text!r}")
    return values[0], values[1]


# ------------------------------------------------------------------ grid lattices
def _grid_edges(lx: int, ly: int, pbc: bool, offsets: list[tuple[int, int]]) -> np.ndarray:
    edges = []
    for y in range(ly):
        for x in range(lx):
            for dx, dy in offsets:
                xx, yy = x + dx, y + dy
                if pbc:
                    xx, yy = xx % lx, yy % ly
                elif not (0 <= xx < lx and 0 <= yy < ly):
                    continue
                a, b = x + lx * y, xx + lx * yy
                if a != b:
                    edges.append((a, b))
    return _canonical_edges(np.array(edges, dtype=np.int64).reshape(-1, 2))


def _grid_symmetries(lx: int, ly: int, pbc: bool, point_ops: list) -> np.ndarray:
    """Permutations generated by translations (if periodic) and the given point
    operations, each a function (x, y) -> (x', y') on the grid."""
    n = lx * ly
    coords = [(i % lx, i // lx) for i in range(n)]
    perms = []
    shifts = [(tx, ty) for ty in range(ly) for tx in range(lx)] if pbc else [(0, 0)]
    for op in point_ops:
        for tx, ty in shifts:
            perm = np.empty(n, dtype=np.int64)
            ok = True
            for i, (x, y) in enumerate(coords):
                xx, yy = op(x, y)
                xx, yy = xx + tx, yy + ty
                if pbc:
                    xx, yy = xx % lx, yy % ly
                if not (0 <= xx < lx and 0 <= yy < ly):
                    ok = False
                    break
                perm[i] = xx + lx * yy
            if ok and len(set(perm.tolist())) == n:
                perms.append(perm)
    perms_arr = np.unique(np.array(perms), axis=0)
    identity = np.arange(n)
    others = [p for p in perms_arr if not np.array_equal(p, identity)]
    return np.array([identity] + others, dtype=np.int64)


def _filter_symmetries(n, j1, j2, perms):
    probe = Lattice("probe", n, np.zeros((n, 2)), j1, j2)
    return np.array([p for p in perms if probe._preserves_edges(p)], dtype=np.int64)


def square(lx: int, ly: int | None = None, pbc: bool = False) -> Lattice:
    """Lx x Ly square lattice; J1 = nearest neighbours, J2 = diagonal neighbours.
    Symmetries: translations (periodic) and the point group of the rectangle
    (D4 when Lx == Ly, D2 otherwise)."""
    ly = lx if ly is None else ly
    if lx < 1 or ly < 1:
        raise ValueError(f"square lattice needs Lx, Ly >= 1, got {lx}x{ly}")
    j1 = _grid_edges(lx, ly, pbc, [(1, 0), (0, 1)])
    j2 = _grid_edges(lx, ly, pbc, [(1, 1), (1, -1)])
    ops = [
        lambda x, y: (x, y),
        lambda x, y: (lx - 1 - x, y),
        lambda x, y: (x, ly - 1 - y),
        lambda x, y: (lx - 1 - x, ly - 1 - y),
    ]
    if lx == ly:
        ops += [
            lambda x, y: (y, x),
            lambda x, y: (lx - 1 - y, x),
            lambda x, y: (y, lx - 1 - x),
            lambda x, y: (lx - 1 - y, lx - 1 - x),
        ]
    perms = _filter_symmetries(lx * ly, j1, j2, _grid_symmetries(lx, ly, pbc, ops))
    positions = np.array([(i % lx, i // lx) for i in range(lx * ly)], dtype=float)
    bc = "pbc" if pbc else "obc"
    return Lattice(f"square-{lx}x{ly}-{bc}", lx * ly, positions, j1, j2, (lx, ly), pbc, perms)


def triangle(lx: int, ly: int | None = None, pbc: bool = True) -> Lattice:
    """Anisotropic triangular lattice on an Lx x Ly grid (site = x + Lx*y): J1 on the x
    and y bonds, J2 on the (x+1, y-1) diagonal, so J2 = J1 is the isotropic triangular
    lattice and J2 = 0 the square one (as in the generalization study)."""
    ly = lx if ly is None else ly
    if lx < 1 or ly < 1:
        raise ValueError(f"triangle lattice needs Lx, Ly >= 1, got {lx}x{ly}")
    j1 = _grid_edges(lx, ly, pbc, [(1, 0), (0, 1)])
    j2 = _grid_edges(lx, ly, pbc, [(1, -1)])
    # The diagonal is kept by the inversion (x, y) -> (-x, -y) and by exchanging x, y.
    ops = [lambda x, y: (x, y), lambda x, y: (lx - 1 - x, ly - 1 - y)]
    if lx == ly:
        ops += [lambda x, y: (y, x), lambda x, y: (lx - 1 - y, lx - 1 - x)]
    perms = _filter_symmetries(lx * ly, j1, j2, _grid_symmetries(lx, ly, pbc, ops))
    positions = np.array([(i % lx + 0.5 * (i // lx), (i // lx) * np.sqrt(3) / 2) for i in range(lx * ly)])
    bc = "pbc" if pbc else "obc"
    return Lattice(f"triangle-{lx}x{ly}-{bc}", lx * ly, positions, j1, j2, (lx, ly), pbc, perms)


def kagome(nx: int, ny: int | None = None, pbc: bool = True) -> Lattice:
    """Kagome lattice of nx x ny unit cells (3 sites each, N = 3 nx ny). Sites of a cell
    are A (0,0), B (1,0), C (0,1) in units of half the lattice vectors a1 = (2,0),
    a2 = (0,2) of a triangular Bravais lattice. J1 are the bonds along a1 and the
    diagonal, J2 the bonds along a2 (J2 = 1 is the isotropic kagome lattice)."""
    ny = nx if ny is None else ny
    if nx < 1 or ny < 1:
        raise ValueError(f"kagome lattice needs at least 1x1 cells, got {nx}x{ny}")
    n = 3 * nx * ny

    def site(cx, cy, sub):
        if pbc:
            cx, cy = cx % nx, cy % ny
        elif not (0 <= cx < nx and 0 <= cy < ny):
            return None
        return 3 * (cx + nx * cy) + sub

    j1, j2 = [], []
    for cy in range(ny):
        for cx in range(nx):
            a, b, c = site(cx, cy, 0), site(cx, cy, 1), site(cx, cy, 2)
            # up triangle inside the cell: A-B (along a1), B-C (diagonal), A-C (along a2)
            j1 += [(a, b), (b, c)]
            j2 += [(a, c)]
            # down triangle with the neighbouring cells
            right, up = site(cx + 1, cy, 0), site(cx, cy + 1, 0)
            upleft = site(cx - 1, cy + 1, 1)
            if right is not None:
                j1.append((b, right))
            if upleft is not None:
                j1.append((c, upleft))
            if up is not None:
                j2.append((c, up))
    j1 = [e for e in j1 if e[0] != e[1]]
    j2 = [e for e in j2 if e[0] != e[1]]
    positions = np.zeros((n, 2))
    for cy in range(ny):
        for cx in range(nx):
            base = np.array([2 * cx + cy, np.sqrt(3) * cy], dtype=float)
            positions[3 * (cx + nx * cy) + 0] = base
            positions[3 * (cx + nx * cy) + 1] = base + (1.0, 0.0)
            positions[3 * (cx + nx * cy) + 2] = base + (0.5, np.sqrt(3) / 2)
    j1a = _canonical_edges(np.array(j1).reshape(-1, 2))
    j2a = _canonical_edges(np.array(j2).reshape(-1, 2))
    perms = [np.arange(n)]
    if pbc:
        for ty in range(ny):
            for tx in range(nx):
                if tx == ty == 0:
                    continue
                perm = np.array([site(cx + tx, cy + ty, s) for cy in range(ny) for cx in range(nx) for s in range(3)])
                perms.append(perm)
    perms_arr = _filter_symmetries(n, j1a, j2a, np.array(perms))
    bc = "pbc" if pbc else "obc"
    return Lattice(f"kagome-{nx}x{ny}-{bc}", n, positions, j1a, j2a, None, pbc, perms_arr)


# ------------------------------------------------------------------ named clusters
@lru_cache(maxsize=1)
def _cluster_data() -> dict:
    text = resources.files("naqs").joinpath("data/clusters-generalization-2020.json").read_text()
    return json.loads(text)


def cluster_names() -> list[str]:
    """Names of the shipped clusters (square-24, triangle-24, kagome-24, the 30-site
    ones and square-36)."""
    return sorted(k for k in _cluster_data() if not k.startswith("_"))


def _automorphisms(n: int, j1: np.ndarray, j2: np.ndarray, limit: int = 4096) -> np.ndarray:
    """Permutations of the sites that map J1 edges to J1 edges and J2 edges to J2
    edges (graph automorphisms with coloured edges), found by networkx's VF2."""
    import networkx as nx
    from networkx.algorithms import isomorphism

    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((int(a), int(b), {"kind": 1}) for a, b in j1)
    graph.add_edges_from((int(a), int(b), {"kind": 2}) for a, b in j2)
    matcher = isomorphism.GraphMatcher(graph, graph, edge_match=lambda e1, e2: e1["kind"] == e2["kind"])
    perms = []
    for mapping in matcher.isomorphisms_iter():
        # mapping: site a of s -> site mapping[a] of T s, i.e. (T s)[mapping[a]] = s[a].
        perm = np.empty(n, dtype=np.int64)
        for a, b in mapping.items():
            perm[b] = a
        perms.append(perm)
        if len(perms) >= limit:
            break
    identity = np.arange(n)
    others = [p for p in perms if not np.array_equal(p, identity)]
    return np.array([identity] + others, dtype=np.int64)


@lru_cache(maxsize=None)
def cluster(name: str) -> Lattice:
    """A shipped periodic cluster by name (see :func:`cluster_names`). Its symmetry
    group is the automorphism group of its coloured J1/J2 graph."""
    data = _cluster_data()
    if name.startswith("_") or name not in data:
        raise ValueError(f"unknown cluster {name!r}; known clusters: {', '.join(cluster_names())}")
    entry = data[name]
    n = int(entry["n_sites"])
    j1 = np.array(entry["j1_edges"], dtype=np.int64)
    j2 = np.array(entry["j2_edges"], dtype=np.int64)
    shape = tuple(entry["shape"]) if "shape" in entry else None
    if "positions" in entry:
        ab = np.array(entry["positions"], dtype=float)
        positions = np.stack([ab[:, 0] + ab[:, 1] / 2, np.sqrt(3) * ab[:, 1] / 2], axis=1)
    elif shape is not None:
        positions = np.array([(i % shape[0], i // shape[0]) for i in range(n)], dtype=float)
    else:
        angle = 2 * np.pi * np.arange(n) / n
        positions = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    perms = _automorphisms(n, _canonical_edges(j1), _canonical_edges(j2))
    return Lattice(name, n, positions, j1, j2, shape, True, perms)


def make_lattice(kind: str, size: str | tuple[int, int] | None = None, pbc: bool = False) -> Lattice:
    """Build a lattice from command-line words: ``kind`` in square/triangle/kagome or a
    cluster name; ``size`` like ``"4x4"`` (kagome: unit cells)."""
    if kind in _cluster_data() and not kind.startswith("_"):
        return cluster(kind)
    if size is None:
        raise ValueError(f"lattice {kind!r} needs a size like 4x4")
    lx, ly = parse_size(size) if isinstance(size, str) else size
    if kind == "square":
        return square(lx, ly, pbc)
    if kind == "triangle":
        return triangle(lx, ly, pbc)
    if kind == "kagome":
        return kagome(lx, ly, pbc)
    raise ValueError(f"unknown lattice {kind!r}; use square, triangle, kagome or one of {', '.join(cluster_names())}")
