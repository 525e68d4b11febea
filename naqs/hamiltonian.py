"""Spin Hamiltonians in the sigma^z basis: diagonal part and sparse off-diagonal
connections for a batch of configurations.

A configuration is a ``[B, N]`` tensor of +1/-1 (int8 canonical). Every off-diagonal
term used here flips one or two spins, so the connections of a sample are described by
the sites they flip:

- ``flips``:    ``[B, M, 2]`` int64, the flipped sites ``(i, j)`` with ``i < j``, or
  ``(i, -1)`` for a single flip; padding rows are ``(-1, -1)``;
- ``elements``: ``[B, M]`` float64, the matrix elements ``<s|H|s'>`` (0 on padding);
- ``counts``:   ``[B]`` int64, the number of valid rows (valid rows come first).

Units (DESIGN.md): Ising is written with Pauli matrices (eq. 7 of the NAQS paper).
Heisenberg takes ``units="S"`` (spin-1/2 operators S = sigma/2, the default and the unit
of Table II) or ``units="pauli"`` (the generalization paper and its clusters); every
result says its unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .lattice import Lattice

__all__ = [
    "Connections",
    "Hamiltonian",
    "TransverseFieldIsing",
    "Heisenberg",
    "exchange_connections_reference",
    "apply_flips",
    "check_spins",
]


@dataclass
class Connections:
    flips: torch.Tensor  # [B, M, 2] int64
    elements: torch.Tensor  # [B, M] float64
    counts: torch.Tensor  # [B] int64

    @property
    def mask(self) -> torch.Tensor:
        """``[B, M]`` bool: which rows are real connections."""
        m = self.flips.shape[1]
        return torch.arange(m, device=self.counts.device)[None, :] < self.counts[:, None]


def check_spins(spins: torch.Tensor, n_sites: int, name: str = "spins") -> torch.Tensor:
    """Validate a batch of configurations and return it as int8 ``[B, N]``."""
    if not isinstance(spins, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(spins).__name__}")
    if spins.dim() != 2 or spins.shape[1] != n_sites:
        raise ValueError(f"{name} must have shape [batch, {n_sites}], got {list(spins.shape)}")
    if spins.is_floating_point() and not torch.isfinite(spins).all():
        raise ValueError(f"{name} contains non-finite values")
    if spins.numel() and not ((spins == 1) | (spins == -1)).all():
        raise ValueError(f"{name} must contain only +1 and -1")
    return spins.to(torch.int8)


def apply_flips(spins: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Connected configurations ``[B, M, N]``: each sample with its row of ``flips``
    applied (padding rows give the sample unchanged)."""
    batch, m, _ = flips.shape
    out = spins[:, None, :].expand(batch, m, spins.shape[1]).clone()
    for k in range(2):
        site = flips[:, :, k]
        valid = site >= 0
        idx = site.clamp(min=0)[..., None]
        current = out.gather(2, idx)
        out.scatter_(2, idx, torch.where(valid[..., None], -current, current))
    return out


def exchange_connections_reference(spins: torch.Tensor, edges: torch.Tensor, exchange: torch.Tensor):
    """Pure-PyTorch reference of ``naqs._C.exchange_connections`` (same layout)."""
    batch, _ = spins.shape
    n_edges = edges.shape[0]
    if n_edges == 0:
        empty = torch.zeros(batch, 0, device=spins.device)
        return (
            torch.full((batch, 0, 2), -1, dtype=torch.int64, device=spins.device),
            empty.double(),
            torch.zeros(batch, dtype=torch.int64, device=spins.device),
        )
    valid = (spins[:, edges[:, 0]] != spins[:, edges[:, 1]]) & (exchange != 0)[None, :]  # [B, E]
    counts = valid.sum(1)
    # stable compaction: valid edges first, in edge order
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    lo = torch.minimum(edges[:, 0], edges[:, 1])
    hi = torch.maximum(edges[:, 0], edges[:, 1])
    pair = torch.stack([lo, hi], dim=1)  # [E, 2]
    flips = pair[order]  # [B, E, 2]
    elements = exchange[None, :].expand(batch, n_edges).gather(1, order).clone()
    keep = torch.arange(n_edges, device=spins.device)[None, :] < counts[:, None]
    flips = torch.where(keep[..., None], flips, torch.full_like(flips, -1))
    elements = torch.where(keep, elements, torch.zeros_like(elements))
    return flips, elements, counts


class Hamiltonian:
    """Base class: a real Hamiltonian in the sigma^z basis with 1- and 2-spin flips."""

    lattice: Lattice
    units: str = "pauli"
    name: str = "hamiltonian"

    @property
    def n_sites(self) -> int:
        return self.lattice.n_sites

    def diagonal(self, spins: torch.Tensor) -> torch.Tensor:
        """``<s|H|s>`` as float64 ``[B]``."""
        raise NotImplementedError

    def connections(self, spins: torch.Tensor, use_extension: bool = True) -> Connections:
        raise NotImplementedError

    @property
    def max_connections(self) -> int:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    # --------------------------------------------------------------- dense reference
    def to_dense(self) -> np.ndarray:
        """Dense matrix in the full 2^N basis; basis index bit i = site i, set = +1.
        For tests and tiny systems only (N <= 14)."""
        n = self.n_sites
        if n > 14:
            raise ValueError(f"to_dense is for N <= 14 sites, this Hamiltonian has {n}")
        dim = 1 << n
        idx = torch.arange(dim)
        spins = (((idx[:, None] >> torch.arange(n)) & 1) * 2 - 1).to(torch.int8)
        mat = np.zeros((dim, dim))
        mat[np.arange(dim), np.arange(dim)] = self.diagonal(spins).numpy()
        conn = self.connections(spins, use_extension=False)
        mask = conn.mask
        for b, m in zip(*torch.nonzero(mask, as_tuple=True)):
            target = spins[b].clone()
            for site in conn.flips[b, m]:
                if site >= 0:
                    target[site] = -target[site]
            col = int((((target.long() + 1) // 2) << torch.arange(n)).sum())
            mat[b, col] += float(conn.elements[b, m])
        return mat


class TransverseFieldIsing(Hamiltonian):
    """``H = -J sum_<ij> sz_i sz_j - Gamma sum_i sx_i`` (Pauli matrices, eq. 7).
    The sum runs over the J1 edges of the lattice."""

    units = "pauli"
    name = "ising"

    def __init__(self, lattice: Lattice, gamma: float, j: float = 1.0):
        if not np.isfinite(gamma) or not np.isfinite(j):
            raise ValueError(f"Ising couplings must be finite, got J={j}, Gamma={gamma}")
        self.lattice = lattice
        self.gamma = float(gamma)
        self.j = float(j)
        self.edges = torch.as_tensor(lattice.j1_edges, dtype=torch.int64)  # [E, 2]

    @property
    def max_connections(self) -> int:
        return self.n_sites if self.gamma != 0 else 0

    def diagonal(self, spins: torch.Tensor) -> torch.Tensor:
        spins = check_spins(spins, self.n_sites)
        e = self.edges.to(spins.device)
        s = spins.to(torch.float64)
        if e.numel() == 0:
            return torch.zeros(spins.shape[0], dtype=torch.float64, device=spins.device)
        return -self.j * (s[:, e[:, 0]] * s[:, e[:, 1]]).sum(1)

    def connections(self, spins: torch.Tensor, use_extension: bool = True) -> Connections:
        spins = check_spins(spins, self.n_sites)
        batch, n = spins.shape
        dev = spins.device
        m = self.max_connections
        sites = torch.arange(m, device=dev)
        flips = torch.stack([sites, torch.full_like(sites, -1)], dim=1)[None].expand(batch, m, 2).contiguous()
        elements = torch.full((batch, m), -self.gamma, dtype=torch.float64, device=dev)
        counts = torch.full((batch,), m, dtype=torch.int64, device=dev)
        return Connections(flips, elements, counts)

    def describe(self) -> dict:
        return {"model": "ising", "J": self.j, "gamma": self.gamma, "units": self.units, "lattice": self.lattice.name}


class Heisenberg(Hamiltonian):
    """``H = J1 sum_<ij> S_i.S_j + J2 sum_<<ij>> S_i.S_j`` over the lattice's J1/J2 edges.

    ``units="S"`` uses spin-1/2 operators (S = sigma/2); ``units="pauli"`` uses Pauli
    matrices, which multiplies every matrix element by 4. ``marshall=True`` applies the
    Marshall rotation (a sign -1 on every J1 exchange element between the two
    sublattices), which makes the unfrustrated model stoquastic; the energies do not
    change, the ground state's signs become positive.
    """

    name = "heisenberg"

    def __init__(self, lattice: Lattice, j1: float = 1.0, j2: float = 0.0, units: str = "S", marshall: bool = False):
        if units not in ("S", "pauli"):
            raise ValueError(f"units must be 'S' or 'pauli', got {units!r}")
        if not (np.isfinite(j1) and np.isfinite(j2)):
            raise ValueError(f"Heisenberg couplings must be finite, got J1={j1}, J2={j2}")
        if marshall and lattice.sublattice is None:
            raise ValueError(f"the Marshall rotation needs a bipartite J1 graph; {lattice.name} is not bipartite")
        self.lattice = lattice
        self.j1, self.j2 = float(j1), float(j2)
        self.units = units
        self.marshall = marshall
        scale = 1.0 if units == "pauli" else 0.25
        edges = np.concatenate([lattice.j1_edges, lattice.j2_edges], axis=0)
        coupling = np.concatenate([np.full(len(lattice.j1_edges), j1), np.full(len(lattice.j2_edges), j2)])
        keep = coupling != 0
        edges, coupling = edges[keep], coupling[keep]
        # sigma.sigma = szsz + 2 (s+s- + s-s+): diagonal J szsz, exchange element 2J (Pauli).
        exchange = 2.0 * coupling * scale
        if marshall:
            sub = lattice.sublattice
            different = sub[edges[:, 0]] != sub[edges[:, 1]]
            exchange = np.where(different, -exchange, exchange)
        self.edges = torch.as_tensor(edges.reshape(-1, 2), dtype=torch.int64)  # [E, 2], J1 then J2
        self.zz_couplings = torch.as_tensor(coupling * scale, dtype=torch.float64)  # [E] diagonal s_i s_j factor
        self.exchange_couplings = torch.as_tensor(exchange, dtype=torch.float64)  # [E] off-diagonal element

    @property
    def max_connections(self) -> int:
        return int(self.edges.shape[0])

    def diagonal(self, spins: torch.Tensor) -> torch.Tensor:
        spins = check_spins(spins, self.n_sites)
        e = self.edges.to(spins.device)
        if e.numel() == 0:
            return torch.zeros(spins.shape[0], dtype=torch.float64, device=spins.device)
        s = spins.to(torch.float64)
        return (s[:, e[:, 0]] * s[:, e[:, 1]] * self.zz_couplings.to(spins.device)).sum(1)

    def connections(self, spins: torch.Tensor, use_extension: bool = True) -> Connections:
        spins = check_spins(spins, self.n_sites)
        edges = self.edges.to(spins.device)
        exchange = self.exchange_couplings.to(spins.device)
        if use_extension:
            from . import ops

            flips, elements, counts = ops.exchange_connections(spins.contiguous(), edges, exchange)
        else:
            flips, elements, counts = exchange_connections_reference(spins, edges, exchange)
        return Connections(flips, elements, counts)

    def describe(self) -> dict:
        return {
            "model": "heisenberg",
            "J1": self.j1,
            "J2": self.j2,
            "units": self.units,
            "marshall": self.marshall,
            "lattice": self.lattice.name,
        }
