"""Exact diagonalization: U(1)-sector bases, matrix-free Heisenberg H, Lanczos ground
states, lattice symmetries, and an on-disk cache of the results.

Conventions (DESIGN.md):

- a basis state is an unsigned 64-bit integer whose bit ``i`` is site ``i``, set = spin
  up (+1); ``basis_to_spins`` / ``spins_to_basis`` convert to the ``[K, N]`` +1/-1
  tensors that the rest of naqs uses;
- a U(1) sector is labelled by ``sz = 2 S^z_total = n_up - n_down``; its basis is the
  sorted list of the ``C(N, n_up)`` words with ``n_up`` set bits. The rank of a word is
  its index in that list, given by the combinatorial number system
  ``rank(s) = sum_j C(p_j, j)`` over its set bits ``p_1 < p_2 < ...`` (colex order is
  numeric order); the kernels evaluate it with two table look-ups (split tables, see
  :func:`sector_tables`);
- energies are in the Hamiltonian's units (``hamiltonian.units``: ``"S"`` or
  ``"pauli"``, E_pauli = 4 E_S); every result and JSON output says which.

Symmetric basis (``ground_state(..., symmetric=True)``): representatives ``r`` (orbit
minima) of the orbits of the lattice's permutation group (``lattice.perms``, acting as
``(T s)[i] = s[perm[i]]``), combined in the ``sz = 0`` sector with the global spin
inversion. The sector is the one-dimensional representation that is trivial for every
permutation (momentum 0, fully symmetric under the point group) and has spin-inversion
character ``flip_parity`` (default ``(-1)^(N/2)``, the parity of a singlet). The basis
vectors are ``|r~> = O_r^{-1/2} sum_g chi(g) |g r>`` summed over the orbit (``O_r``
elements), so ``state`` is normalized over the representatives and the probability of
the whole orbit of ``r`` is ``state[r]^2``; :meth:`EDResult.sample` and
:func:`expand_representatives` go back to full-basis configurations.

The compiled kernels live in ``naqs._C`` (reached through :mod:`naqs.ops`); each has a
numpy reference here (``*_reference``) that the tests hold equal to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from . import ops
from .hamiltonian import Hamiltonian, Heisenberg, TransverseFieldIsing

__all__ = [
    "EDResult",
    "sector_basis",
    "sector_basis_reference",
    "full_basis",
    "sector_rank",
    "rank_states",
    "sector_tables",
    "sector_tables_reference",
    "basis_to_spins",
    "spins_to_basis",
    "hamiltonian_sparse",
    "heisenberg_matvec_reference",
    "SectorOperator",
    "symmetry_group",
    "symmetric_representatives",
    "symmetric_representatives_tensors",
    "TorusGroup",
    "torus_structure",
    "torus_translations",
    "symmetric_representatives_reference",
    "symmetric_matvec_reference",
    "SymmetricOperator",
    "expand_representatives",
    "lanczos_ground_state",
    "ground_state",
    "cache_directory",
    "add_ed_arguments",
    "run_ed_cli",
]

MAX_SITES = 64
CACHE_VERSION = "ed-v1"
# Dense eigh below this dimension: exact, and faster than any iterative method.
DENSE_DIM = 1024


# ====================================================================== utilities
def _popcount(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(a).astype(np.int64)
    count = np.zeros(a.shape, dtype=np.int64)  # numpy < 2.0
    for shift in range(0, 64, 8):
        count += _BYTE_POPCOUNT[((a >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.int64)]
    return count


_BYTE_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)
_BINOMIAL = np.array([[math.comb(n, r) for r in range(65)] for n in range(65)], dtype=np.uint64)


def _check_n_sites(n_sites: int) -> int:
    if not isinstance(n_sites, (int, np.integer)) or isinstance(n_sites, bool):
        raise ValueError(f"n_sites must be an integer, got {n_sites!r}")
    n_sites = int(n_sites)
    if not 1 <= n_sites <= MAX_SITES:
        raise ValueError(f"exact diagonalization supports 1 <= n_sites <= {MAX_SITES} (one uint64 word), got {n_sites}")
    return n_sites


def _n_up_from_sz(n_sites: int, sz: int) -> int:
    """``n_up`` of the sector ``sz = n_up - n_down``; ValueError for impossible sectors."""
    if isinstance(sz, bool) or not isinstance(sz, (int, np.integer)):
        raise ValueError(f"sz must be an integer (2 S^z = n_up - n_down) or None, got {sz!r}")
    sz = int(sz)
    if abs(sz) > n_sites:
        raise ValueError(f"sz = {sz} is impossible for {n_sites} sites: |sz| = |n_up - n_down| <= {n_sites}")
    if (sz + n_sites) % 2:
        raise ValueError(
            f"sz = {sz} has the wrong parity for {n_sites} sites: sz = 2 S^z = n_up - n_down must have the parity "
            f"of N (use sz={n_sites % 2} for the lowest sector)"
        )
    return (n_sites + sz) // 2


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _check_memory(n_bytes: float, what: str, device: str = "cpu") -> None:
    """ValueError when ``what`` would need more than ~80 % of the free memory."""
    if device == "cpu":
        free = _available_memory()
        where = "host memory"
    else:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        where = f"free memory on {device}"
    if n_bytes > 0.8 * free:
        raise ValueError(
            f"{what} needs about {n_bytes / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB of {where} is available; "
            "use a smaller system, a symmetric basis (symmetric=True) or a device with more memory"
        )


# ====================================================================== bases
def sector_basis_reference(n_sites: int, n_up: int) -> np.ndarray:
    """Sorted sector basis by the recursion B(n, k) = B(n-1, k) ++ (B(n-1, k-1) | 2^(n-1))
    (the words without bit n-1 all come before those with it)."""
    n_sites = _check_n_sites(n_sites)
    if not 0 <= n_up <= n_sites:
        raise ValueError(f"n_up must be in [0, {n_sites}], got {n_up}")
    # layer[k] = sorted words of the current width with k set bits (only the k that can still reach n_up)
    layer = {0: np.zeros(1, dtype=np.uint64)}
    for width in range(1, n_sites + 1):
        top = np.uint64(1 << (width - 1))
        lo_k, hi_k = max(0, n_up - (n_sites - width)), min(width, n_up)
        new = {}
        for k in range(lo_k, hi_k + 1):
            parts = []
            if k in layer:
                parts.append(layer[k])
            if k - 1 in layer:
                parts.append(layer[k - 1] | top)
            new[k] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        layer = new
    return layer[n_up]


def sector_basis(n_sites: int, n_up: int) -> np.ndarray:
    """Sorted uint64 basis of the sector of ``n_sites`` spins with ``n_up`` up spins."""
    n_sites = _check_n_sites(n_sites)
    if isinstance(n_up, bool) or not isinstance(n_up, (int, np.integer)) or not 0 <= n_up <= n_sites:
        raise ValueError(f"n_up must be an integer in [0, {n_sites}], got {n_up!r}")
    dim = math.comb(n_sites, int(n_up))
    _check_memory(8.0 * dim, f"the sector basis of {n_sites} sites with {n_up} up spins ({dim} states)")
    if ops.has_op("ed_sector_basis"):
        return ops._C.ed_sector_basis(n_sites, int(n_up)).numpy().view(np.uint64)
    ops.warn_fallback("ed_sector_basis", "naqs._C is not built")
    return sector_basis_reference(n_sites, int(n_up))


def full_basis(n_sites: int) -> np.ndarray:
    """All ``2^N`` configurations, sorted (the index of a word is the word itself)."""
    n_sites = _check_n_sites(n_sites)
    _check_memory(8.0 * 2**n_sites, f"the full basis of {n_sites} sites")
    return np.arange(2**n_sites, dtype=np.uint64)


def sector_rank(n_sites: int, n_up: int, states) -> np.ndarray:
    """Rank of sector words by the combinatorial number system (int64), vectorized.
    Raises ValueError for words outside the sector."""
    states = np.asarray(states, dtype=np.uint64)
    n_sites = _check_n_sites(n_sites)
    if n_sites < 64 and np.any(states >> np.uint64(n_sites)):
        raise ValueError(f"some states have bits set above site {n_sites - 1}")
    if np.any(_popcount(states) != n_up):
        raise ValueError(f"some states do not have n_up = {n_up} up spins")
    rank = np.zeros(states.shape, dtype=np.uint64)
    seen = np.zeros(states.shape, dtype=np.int64)  # set bits below position p
    for p in range(n_sites):
        bit = ((states >> np.uint64(p)) & np.uint64(1)).astype(bool)
        seen += bit
        rank += np.where(bit, _BINOMIAL[p, np.minimum(seen, 64)], np.uint64(0))
    return rank.astype(np.int64)


def rank_states(basis_or_nsites, states) -> np.ndarray:
    """Index of each state in a basis. ``basis_or_nsites``: a sorted uint64 basis array
    (sector, full or representatives; exact lookup, ValueError for states not in it) or
    an int N for the full 2^N basis (index = the word)."""
    states = np.asarray(states, dtype=np.uint64)
    if isinstance(basis_or_nsites, (int, np.integer)) and not isinstance(basis_or_nsites, bool):
        n = _check_n_sites(int(basis_or_nsites))
        if n < 64 and np.any(states >> np.uint64(n)):
            raise ValueError(f"some states have bits set above site {n - 1}")
        return states.astype(np.int64)
    basis = np.asarray(basis_or_nsites, dtype=np.uint64)
    idx = np.searchsorted(basis, states)
    ok = idx < len(basis)
    ok[ok] = basis[idx[ok]] == states[ok]
    if not ok.all():
        raise ValueError(f"{int((~ok).sum())} of {states.size} states are not in the basis")
    return idx.astype(np.int64)


def basis_to_spins(basis, n_sites: int) -> torch.Tensor:
    """``[K, N]`` int8 tensor of +1/-1 from uint64 words (bit i = site i, set = +1)."""
    n_sites = _check_n_sites(n_sites)
    words = np.asarray(basis, dtype=np.uint64).reshape(-1)
    bits = (words[:, None] >> np.arange(n_sites, dtype=np.uint64)[None, :]) & np.uint64(1)
    return torch.from_numpy((bits.astype(np.int8) * 2 - 1).astype(np.int8))


def spins_to_basis(spins) -> np.ndarray:
    """uint64 words from a ``[K, N]`` tensor/array of +1/-1 (inverse of basis_to_spins)."""
    arr = spins.detach().cpu().numpy() if isinstance(spins, torch.Tensor) else np.asarray(spins)
    if arr.ndim != 2:
        raise ValueError(f"spins must have shape [K, N], got {list(arr.shape)}")
    _check_n_sites(arr.shape[1]) if arr.shape[1] else None
    if arr.size and not np.all((arr == 1) | (arr == -1)):
        raise ValueError("spins must contain only +1 and -1")
    up = (arr > 0).astype(np.uint64)
    weights = np.uint64(1) << np.arange(arr.shape[1], dtype=np.uint64)
    return (up * weights[None, :]).sum(axis=1, dtype=np.uint64)


@dataclass(frozen=True)
class SectorTables:
    """Split rank tables: ``rank(s) = hi_offset[s >> lo_bits] + lo_rank[s & (2^lo_bits - 1)]``.

    ``lo_rank[l]`` is the combinatorial rank of ``l`` among ``lo_bits``-bit words with
    the same popcount; ``hi_offset[h]`` counts the sector words whose high part is
    below ``h`` (the sorted sector is sorted by high part, then low part)."""

    n_sites: int
    n_up: int
    lo_bits: int
    lo_rank: np.ndarray  # [2^lo_bits] int32
    hi_offset: np.ndarray  # [2^(N - lo_bits)] int64


def _table_sizes(n_sites: int, n_up: int, lo_bits: int | None) -> tuple[int, int, int]:
    n_sites = _check_n_sites(n_sites)
    if n_sites < 2:
        raise ValueError("split rank tables need at least 2 sites")
    if isinstance(n_up, bool) or not isinstance(n_up, (int, np.integer)) or not 0 <= n_up <= n_sites:
        raise ValueError(f"n_up must be an integer in [0, {n_sites}], got {n_up!r}")
    if lo_bits is None:
        # <= 14 low bits: the int32 low table (<= 64 KiB) fits in GPU shared memory.
        lo_bits = min(14, (n_sites + 1) // 2, n_sites - 1)
    if not 1 <= lo_bits <= min(30, n_sites - 1):
        raise ValueError(f"lo_bits must be in [1, {min(30, n_sites - 1)}], got {lo_bits}")
    hi_bits = n_sites - lo_bits
    if hi_bits > 26:
        raise ValueError(f"{n_sites} sites need a 2^{hi_bits} high table: too large (sector too large for ED anyway)")
    return n_sites, int(n_up), int(lo_bits)


def sector_tables(n_sites: int, n_up: int, lo_bits: int | None = None) -> SectorTables:
    """The split rank tables of the sector (the C++ kernel; sector_tables_reference without it)."""
    n_sites, n_up, lo_bits = _table_sizes(n_sites, n_up, lo_bits)
    if ops.has_op("ed_sector_tables"):
        lo_rank, hi_offset = ops._C.ed_sector_tables(n_sites, n_up, lo_bits)
        return SectorTables(n_sites, n_up, lo_bits, lo_rank.numpy(), hi_offset.numpy())
    ops.warn_fallback("ed_sector_tables", "naqs._C is not built")
    return sector_tables_reference(n_sites, n_up, lo_bits)


def sector_tables_reference(n_sites: int, n_up: int, lo_bits: int | None = None) -> SectorTables:
    """sector_tables in numpy: the combinatorial ranks of the low words bit by bit, the
    offsets of the high words as a cumulative sum of C(lo_bits, n_up - popcount(h))."""
    n_sites, n_up, lo_bits = _table_sizes(n_sites, n_up, lo_bits)
    hi_bits = n_sites - lo_bits
    lo = np.arange(2**lo_bits, dtype=np.uint64)
    lo_rank = np.zeros(lo.shape, dtype=np.uint64)
    seen = np.zeros(lo.shape, dtype=np.int64)
    for p in range(lo_bits):
        bit = ((lo >> np.uint64(p)) & np.uint64(1)).astype(bool)
        seen += bit
        lo_rank += np.where(bit, _BINOMIAL[p, seen], np.uint64(0))
    hi_pop = _popcount(np.arange(2**hi_bits, dtype=np.uint64))
    need = n_up - hi_pop
    valid = (need >= 0) & (need <= lo_bits)
    counts = np.where(valid, _BINOMIAL[lo_bits, np.clip(need, 0, lo_bits)].astype(np.int64), 0)
    hi_offset = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return SectorTables(n_sites, int(n_up), int(lo_bits), lo_rank.astype(np.int32), hi_offset)


# ====================================================================== Hamiltonian pieces
def _heisenberg_terms(hamiltonian: Heisenberg):
    edges = hamiltonian.edges.detach().cpu().to(torch.int64).reshape(-1, 2).contiguous()
    zz = hamiltonian.zz_couplings.detach().cpu().to(torch.float64).contiguous()
    exch = hamiltonian.exchange_couplings.detach().cpu().to(torch.float64).contiguous()
    if not (torch.isfinite(zz).all() and torch.isfinite(exch).all()):
        raise ValueError("Heisenberg couplings must be finite")
    return edges, zz, exch


def _is_heisenberg(hamiltonian) -> bool:
    return all(hasattr(hamiltonian, a) for a in ("edges", "zz_couplings", "exchange_couplings"))


def _is_ising(hamiltonian) -> bool:
    return all(hasattr(hamiltonian, a) for a in ("edges", "j", "gamma")) and not _is_heisenberg(hamiltonian)


def heisenberg_matvec_reference(basis, x, edges, zz, exch) -> np.ndarray:
    """numpy reference of ``ed_heisenberg_matvec``: ``y = H x`` on a sorted basis
    (ranks by binary search, so it is independent of the split tables)."""
    basis = np.asarray(basis, dtype=np.uint64)
    x = np.asarray(x, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    zz, exch = np.asarray(zz, dtype=np.float64), np.asarray(exch, dtype=np.float64)
    y = np.zeros_like(x)
    for (i, j), jz, jx in zip(edges, zz, exch):
        anti = ((basis >> np.uint64(i)) ^ (basis >> np.uint64(j))) & np.uint64(1)
        anti = anti.astype(bool)
        y += np.where(anti, -jz, jz) * x
        if jx != 0:
            flipped = basis[anti] ^ np.uint64((1 << int(i)) | (1 << int(j)))
            y[anti] += jx * x[np.searchsorted(basis, flipped)]
    return y


def hamiltonian_sparse(hamiltonian: Hamiltonian, basis=None, *, progress: bool = False) -> sp.csr_matrix:
    """CSR matrix of a Heisenberg (any sorted basis closed under its exchange terms, e.g.
    a sector or the full basis) or transverse-field Ising Hamiltonian (full basis)."""
    n = _check_n_sites(hamiltonian.n_sites)
    if basis is None:
        basis = full_basis(n)
    basis = np.asarray(basis, dtype=np.uint64)
    dim = len(basis)
    from tqdm.auto import tqdm

    if _is_heisenberg(hamiltonian):
        edges, zz, exch = (t.numpy() for t in _heisenberg_terms(hamiltonian))
        n_conn = len(edges)
    elif _is_ising(hamiltonian):
        if dim != 2**n:
            raise ValueError("the transverse-field Ising model conserves no S^z: it needs the full basis (sz=None)")
        edges = hamiltonian.edges.detach().cpu().numpy().reshape(-1, 2)
        n_conn = n
    else:
        raise ValueError(f"no sparse builder for {type(hamiltonian).__name__}: expected Heisenberg or TransverseFieldIsing")
    # COO triplets (int64 row, col, float64 value) of up to n_conn off-diagonals per row, then CSR.
    _check_memory(dim * (n_conn + 1) * 24 * 1.6, f"the sparse matrix of dimension {dim}")
    rows, cols, vals = [np.arange(dim)], [np.arange(dim)], []
    diag = np.zeros(dim)
    if _is_heisenberg(hamiltonian):
        for (i, j), jz, jx in tqdm(list(zip(edges, zz, exch)), desc="sparse H", disable=not progress, leave=False):
            anti = (((basis >> np.uint64(i)) ^ (basis >> np.uint64(j))) & np.uint64(1)).astype(bool)
            diag += np.where(anti, -jz, jz)
            if jx == 0:
                continue
            src = np.nonzero(anti)[0]
            target = basis[src] ^ np.uint64((1 << int(i)) | (1 << int(j)))
            col = np.searchsorted(basis, target)
            if np.any(col >= dim) or np.any(basis[np.minimum(col, dim - 1)] != target):
                raise ValueError("the basis is not closed under the exchange terms (not a full sector?)")
            rows.append(src)
            cols.append(col)
            vals.append(np.full(len(src), jx))
    else:
        for i, j in edges:
            s = (((basis >> np.uint64(i)) ^ (basis >> np.uint64(j))) & np.uint64(1)).astype(np.float64)
            diag += -hamiltonian.j * (1.0 - 2.0 * s)
        if hamiltonian.gamma != 0:
            for i in range(n):
                rows.append(np.arange(dim))
                cols.append((basis ^ np.uint64(1 << i)).astype(np.int64))
                vals.append(np.full(dim, -hamiltonian.gamma))
    data = np.concatenate([diag] + vals)
    mat = sp.coo_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(dim, dim))
    return mat.tocsr()


class SectorOperator:
    """Matrix-free Heisenberg H on a U(1) sector: ``op(x)`` with x a float64 numpy array
    (CPU) or torch tensor (on the operator's device)."""

    def __init__(self, hamiltonian: Heisenberg, n_up: int, device: str = "cpu", basis: np.ndarray | None = None):
        self.n_sites = _check_n_sites(hamiltonian.n_sites)
        self.n_up = int(n_up)
        self.device = torch.device(device)
        self.edges, self.zz, self.exch = _heisenberg_terms(hamiltonian)
        self.basis_np = sector_basis(self.n_sites, self.n_up) if basis is None else np.asarray(basis, np.uint64)
        self.dim = len(self.basis_np)
        self.kernel = ops.has_op("ed_heisenberg_matvec") and self.n_sites >= 2
        if self.device.type == "cuda" and not ops.cuda_available():
            raise ValueError("device='cuda' needs the CUDA build of naqs._C and a visible GPU (ops.cuda_available())")
        if self.kernel:
            tables = sector_tables(self.n_sites, self.n_up)
            self.lo_bits = tables.lo_bits
            self.lo_rank = torch.from_numpy(tables.lo_rank).to(self.device)
            self.hi_offset = torch.from_numpy(tables.hi_offset).to(self.device)
            self.basis = torch.from_numpy(self.basis_np.view(np.int64)).to(self.device)
        elif self.device.type == "cpu":
            ops.warn_fallback("ed_heisenberg_matvec", "naqs._C is not built")
        self.variant = 0

    def __call__(self, x):
        if isinstance(x, torch.Tensor):
            if self.kernel:
                return ops._C.ed_heisenberg_matvec(
                    self.basis, x.contiguous(), self.edges, self.zz, self.exch, self.lo_rank, self.hi_offset,
                    self.n_sites, self.lo_bits, self.variant,
                )
            y = heisenberg_matvec_reference(self.basis_np, x.cpu().numpy(), self.edges, self.zz, self.exch)
            return torch.from_numpy(y).to(x.device)
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1))
        return self(torch.from_numpy(x)).numpy() if self.device.type == "cpu" else self(
            torch.from_numpy(x).to(self.device)).cpu().numpy()


# ====================================================================== symmetries
def _apply_group_np(states: np.ndarray, perm: np.ndarray, flip: bool, n_sites: int) -> np.ndarray:
    """(T s)[i] = s[perm[i]] on uint64 words, then the spin inversion if ``flip``."""
    out = np.zeros_like(states)
    for i, src in enumerate(perm):
        out |= ((states >> np.uint64(src)) & np.uint64(1)) << np.uint64(i)
    if flip:
        out ^= np.uint64((1 << n_sites) - 1) if n_sites < 64 else np.uint64(2**64 - 1)
    return out


def symmetry_group(lattice, *, spin_flip: bool, hamiltonian: Heisenberg | None = None):
    """``(perms [G, N] int64, flips [G] bool)`` of the lattice (with the spin inversion
    when ``spin_flip``), checked to be a group and, given a Hamiltonian, to commute
    with it (ValueError otherwise)."""
    perms, flips = lattice.symmetry_group(spin_flip=spin_flip)
    perms = np.asarray(perms, dtype=np.int64)
    base = lattice.perms
    keys = {p.tobytes() for p in base}
    # Closure: composition of every pair must be in the set (the orbit sizes |G|/|Stab| rely on it).
    for a in base:
        composed = a[base]  # (T_a T_b s)[i] = s[b[a[i]]] -> rows base[:, a]... any order works for closure
        for row in composed:
            if row.tobytes() not in keys:
                raise ValueError(f"the symmetry list of {lattice.name} is not closed under composition (not a group)")
    if hamiltonian is not None:
        edges, zz, exch = (t.numpy() for t in _heisenberg_terms(hamiltonian))
        terms = {(min(a, b), max(a, b)): (z, x) for (a, b), z, x in zip(edges.tolist(), zz, exch)}
        for p in base:
            inverse = np.argsort(p)
            for (a, b), value in terms.items():
                a2, b2 = int(inverse[a]), int(inverse[b])
                if terms.get((min(a2, b2), max(a2, b2))) != value:
                    raise ValueError(f"a permutation of {lattice.name} does not commute with the Hamiltonian")
    return perms, flips.astype(bool)


def _flip_characters(flips: np.ndarray, flip_parity: int) -> np.ndarray:
    return np.where(flips, float(flip_parity), 1.0)


def symmetric_representatives_reference(n_sites: int, n_up: int, perms, flips, flip_parity: int = 1):
    """(representatives uint64 sorted, orbit sizes int64) by brute force over the sector:
    a word is a representative when it is the minimum of its orbit and its symmetrized
    state does not vanish (no stabilizer element with character -1)."""
    basis = sector_basis(n_sites, n_up)
    chars = _flip_characters(np.asarray(flips), flip_parity)
    is_min = np.ones(len(basis), dtype=bool)
    stab = np.zeros(len(basis), dtype=np.int64)
    vanish = np.zeros(len(basis), dtype=bool)
    for perm, flip, chi in zip(perms, flips, chars):
        image = _apply_group_np(basis, perm, bool(flip), n_sites)
        is_min &= image >= basis
        fixed = image == basis
        stab += fixed
        vanish |= fixed & (chi < 0)
    keep = is_min & ~vanish
    return basis[keep], (len(perms) // stab[keep]).astype(np.int64)


@dataclass(frozen=True)
class TorusGroup:
    """The group in the form the fast kernels use: all translations of an ``lx x ly``
    torus (row-major sites, ``site = x + lx * y``) times ``point_perms`` (coset
    representatives, the identity first) times, if ``spin_flip``, the spin inversion.
    Translations are applied with bit operations on the configuration word, point
    operations with small tables (csrc/ed/ed_torus.h)."""

    lx: int
    ly: int
    point_perms: np.ndarray  # [P, N] int64, row 0 the identity
    spin_flip: bool

    @property
    def n_group(self) -> int:
        return len(self.point_perms) * self.lx * self.ly * (2 if self.spin_flip else 1)


# Limits of the torus kernels: lane layout of <= 8 rows of <= 8 bits, N <= 63, point tables
# (P * ly * 2^lx * 8 bytes) in one GPU block's shared memory.
_TORUS_MAX_SIDE = 8
_TORUS_MAX_POINT = 16
_TORUS_MAX_TABLE_BYTES = 160 * 1024


def torus_translations(lx: int, ly: int) -> np.ndarray:
    """``[lx * ly, N]`` permutations of the torus translations, ``(T s)[x + lx y] =
    s[(x - dx) % lx + lx ((y - dy) % ly)]`` (the kernels' column and row shifts)."""
    n = lx * ly
    x, y = np.arange(n) % lx, np.arange(n) // lx
    return np.array([((x - dx) % lx) + lx * ((y - dy) % ly) for dy in range(ly) for dx in range(lx)], dtype=np.int64)


def torus_structure(lattice, perms, flips) -> TorusGroup | None:
    """The group ``(perms, flips)`` in torus form when it is one (see :class:`TorusGroup`),
    else None. Purely algebraic: the lattice supplies only ``shape`` and ``pbc``; the
    translations must be elements of the group and the group must be exactly the
    disjoint union of the cosets ``{p[t] : t in translations}`` (the permutation of
    ``T(P s)``) over the point representatives, each with and without the spin inversion
    when ``flips`` has any."""
    shape = getattr(lattice, "shape", None)
    if shape is None or not getattr(lattice, "pbc", False):
        return None
    lx, ly = int(shape[0]), int(shape[1])
    perms = np.asarray(perms, dtype=np.int64)
    flips = np.asarray(flips, dtype=bool)
    n = lx * ly
    if perms.ndim != 2 or perms.shape[1] != n or n > 63 or max(lx, ly) > _TORUS_MAX_SIDE:
        return None
    plain, flipped = perms[~flips], perms[flips]
    keys = {p.tobytes() for p in plain}
    if len(keys) != len(plain):
        return None
    spin_flip = len(flipped) > 0
    if spin_flip and (len(flipped) != len(plain) or {p.tobytes() for p in flipped} != keys):
        return None
    trans = torus_translations(lx, ly)
    if any(t.tobytes() not in keys for t in trans):
        return None
    identity = np.arange(n, dtype=np.int64)
    covered: set[bytes] = set()
    points = []
    for p in [identity] + [q for q in plain if not np.array_equal(q, identity)]:
        if p.tobytes() in covered:
            continue
        coset = {p[t].tobytes() for t in trans}
        if len(coset) != len(trans) or not coset <= keys or coset & covered:
            return None
        covered |= coset
        points.append(p)
    if covered != keys or len(points) > _TORUS_MAX_POINT:
        return None
    if len(points) * ly * 2**lx * 8 > _TORUS_MAX_TABLE_BYTES:
        return None
    return TorusGroup(lx, ly, np.array(points, dtype=np.int64), spin_flip)


def _device_index(device) -> int:
    dev = torch.device(device)
    if dev.type == "cpu":
        return -1
    if dev.type != "cuda":
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda' (or 'cuda:N')")
    return dev.index if dev.index is not None else torch.cuda.current_device()


def symmetric_representatives_tensors(n_sites: int, n_up: int, perms, flips, flip_parity: int = 1, *,
                                      device="cpu", torus: TorusGroup | None = None):
    """(representatives int64 tensor sorted, orbit sizes int64 tensor) on ``device``, by the
    torus kernels when ``torus`` is given, else by the byte-table kernels."""
    if flip_parity not in (1, -1):
        raise ValueError(f"flip_parity must be +1 or -1, got {flip_parity}")
    index = _device_index(device)
    if index >= 0 and not ops.cuda_available():
        raise ValueError("device='cuda' needs the CUDA build of naqs._C and a visible GPU (ops.cuda_available())")
    if torus is not None:
        return ops._C.ed_torus_representatives(n_sites, n_up, torus.lx, torus.ly,
                                               torch.as_tensor(torus.point_perms, dtype=torch.int64),
                                               bool(torus.spin_flip), int(flip_parity), index)
    return ops._C.ed_symmetric_representatives(n_sites, n_up, torch.as_tensor(np.asarray(perms), dtype=torch.int64),
                                               torch.as_tensor(np.asarray(flips), dtype=torch.bool), int(flip_parity),
                                               index)


def symmetric_representatives(n_sites: int, n_up: int, perms, flips, flip_parity: int = 1, *, device="cpu",
                              torus: TorusGroup | None = None):
    """Kernel version of :func:`symmetric_representatives_reference` (same output, numpy
    uint64 / int64). ``device``: where the sector is scanned (CPU threads or a CUDA GPU);
    ``torus``: a :class:`TorusGroup` of the same group for the fast kernels."""
    if flip_parity not in (1, -1):
        raise ValueError(f"flip_parity must be +1 or -1, got {flip_parity}")
    if ops.has_op("ed_symmetric_representatives"):
        reps, orbit = symmetric_representatives_tensors(n_sites, n_up, perms, flips, flip_parity, device=device,
                                                        torus=torus)
        return reps.cpu().numpy().view(np.uint64), orbit.cpu().numpy()
    ops.warn_fallback("ed_symmetric_representatives", "naqs._C is not built")
    return symmetric_representatives_reference(n_sites, n_up, perms, flips, flip_parity)


def _representatives_with_character(states, perms, flips, chars, n_sites):
    """(rep, character of the element that maps each state to its rep, vanishing flag)."""
    best = states.copy()
    sign = np.ones(len(states))
    vanish = np.zeros(len(states), dtype=bool)
    for perm, flip, chi in zip(perms, flips, chars):
        image = _apply_group_np(states, perm, bool(flip), n_sites)
        lower = image < best
        best = np.where(lower, image, best)
        sign = np.where(lower, chi, sign)
        vanish |= (image == states) & (chi < 0)
    return best, sign, vanish


def symmetric_matvec_reference(reps, orbit, x, edges, zz, exch, perms, flips, n_sites, flip_parity: int = 1):
    """numpy reference of the symmetric matvec:
    ``y[r] = diag(r) x[r] + sum_{s' in conn(r)} chi(s') exch sqrt(O_r / O_rep(s')) x[rep(s')]``."""
    reps = np.asarray(reps, dtype=np.uint64)
    x = np.asarray(x, dtype=np.float64)
    orbit = np.asarray(orbit, dtype=np.float64)
    chars = _flip_characters(np.asarray(flips), flip_parity)
    y = np.zeros_like(x)
    for (i, j), jz, jx in zip(np.asarray(edges).reshape(-1, 2), np.asarray(zz), np.asarray(exch)):
        anti = (((reps >> np.uint64(i)) ^ (reps >> np.uint64(j))) & np.uint64(1)).astype(bool)
        y += np.where(anti, -jz, jz) * x
        if jx == 0 or not anti.any():
            continue
        src = np.nonzero(anti)[0]
        target = reps[src] ^ np.uint64((1 << int(i)) | (1 << int(j)))
        rep, sign, vanish = _representatives_with_character(target, perms, flips, chars, n_sites)
        src, rep, sign = src[~vanish], rep[~vanish], sign[~vanish]
        col = rank_states(reps, rep)
        np.add.at(y, src, jx * sign * np.sqrt(orbit[src] / orbit[col]) * x[col])
    return y


class SymmetricOperator:
    """Matrix-free Heisenberg H in the symmetric basis: ``op(x)`` with x a float64 numpy
    array or a torch tensor (returned on the operator's device for tensors). Kernels: the
    torus form when the group has it (``torus="auto"``; pass None to force the byte-table
    form), on the CPU or a CUDA device; numpy reference when naqs._C is missing."""

    def __init__(self, hamiltonian: Heisenberg, reps, orbit, perms, flips, flip_parity: int = 1, *, device="cpu",
                 torus="auto"):
        self.n_sites = hamiltonian.n_sites
        self.edges, self.zz, self.exch = _heisenberg_terms(hamiltonian)
        self.device = torch.device(device)
        self.perms, self.flips, self.flip_parity = np.asarray(perms), np.asarray(flips, bool), flip_parity
        if isinstance(torus, str):
            if torus != "auto":
                raise ValueError(f"torus must be 'auto', None or a TorusGroup, got {torus!r}")
            torus = torus_structure(getattr(hamiltonian, "lattice", None), self.perms, self.flips)
        self.torus = torus
        reps_t = reps if isinstance(reps, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(reps, np.uint64).view(np.int64))
        orbit_t = orbit if isinstance(orbit, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(orbit, np.int64))
        self.dim = int(reps_t.numel())
        self.kernel = ops.has_op("ed_symmetric_matvec") and ops.has_op("ed_torus_matvec")
        if self.device.type == "cuda" and not ops.cuda_available():
            raise ValueError("device='cuda' needs the CUDA build of naqs._C and a visible GPU (ops.cuda_available())")
        if self.kernel:
            self.reps_t = reps_t.to(self.device).contiguous()
            self.orbit_t = orbit_t.to(self.device).contiguous()
            self.perms_t = torch.as_tensor(self.perms, dtype=torch.int64)
            self.flips_t = torch.as_tensor(self.flips, dtype=torch.bool)
            if torus is not None:
                self.points_t = torch.as_tensor(torus.point_perms, dtype=torch.int64)
        else:
            self.reps_np = reps_t.cpu().numpy().view(np.uint64)
            self.orbit_np = orbit_t.cpu().numpy()

    @property
    def form(self) -> str:
        return "torus" if self.torus is not None else "tables"

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.torus is not None:
            t = self.torus
            return ops._C.ed_torus_matvec(self.reps_t, self.orbit_t, x, self.edges, self.zz, self.exch, t.lx, t.ly,
                                          self.points_t, bool(t.spin_flip), int(self.flip_parity))
        return ops._C.ed_symmetric_matvec(self.reps_t, self.orbit_t, x, self.edges, self.zz, self.exch, self.perms_t,
                                          self.flips_t, self.n_sites, int(self.flip_parity))

    def __call__(self, x):
        as_tensor = isinstance(x, torch.Tensor)
        if self.kernel:
            xt = x.detach() if as_tensor else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
            y = self._apply(xt.to(self.device, torch.float64).contiguous())
            return y.to(x.device) if as_tensor else y.cpu().numpy()
        xn = x.detach().cpu().numpy() if as_tensor else np.asarray(x, dtype=np.float64).reshape(-1)
        y = symmetric_matvec_reference(
            self.reps_np, self.orbit_np, xn, self.edges.numpy(), self.zz.numpy(), self.exch.numpy(), self.perms,
            self.flips, self.n_sites, self.flip_parity,
        )
        return torch.from_numpy(y).to(x.device) if as_tensor else y


def expand_representatives(reps, amplitudes, n_sites, perms, flips, flip_parity: int = 1):
    """Full-basis ``(states uint64 sorted, amplitudes float64)`` of a state given on
    representatives: each orbit element ``g r`` gets ``chi(g) c_r / sqrt(O_r)``."""
    reps = np.asarray(reps, dtype=np.uint64)
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    chars = _flip_characters(np.asarray(flips), flip_parity)
    # The expansion holds every group image of every representative (uint64), then sorts them.
    need = 8.0 * 4 * len(perms) * len(reps)
    free = _available_memory()
    if need > 0.8 * free:
        raise ValueError(
            f"the full state has about {len(perms) * len(reps):.3g} amplitudes ({len(reps)} representatives x "
            f"{len(perms)} group elements); expanding it needs about {need / 2**30:.0f} GiB but only "
            f"{free / 2**30:.0f} GiB of host memory is available. Work on the representatives instead (result.basis, "
            "result.state, result.orbit_sizes) or draw configurations with result.sample(n)"
        )
    images = np.stack([_apply_group_np(reps, p, bool(f), n_sites) for p, f in zip(perms, flips)])  # [G, R]
    signs = np.broadcast_to(chars[:, None], images.shape)
    states, first = np.unique(images.reshape(-1), return_index=True)
    owner = np.broadcast_to(np.arange(len(reps))[None, :], images.shape).reshape(-1)[first]
    orbit = np.bincount(owner, minlength=len(reps))
    values = signs.reshape(-1)[first] * amplitudes[owner] / np.sqrt(orbit[owner])
    return states, values


# ====================================================================== solvers
def _vector_budget(device, dim: int, fraction: float = 0.4) -> int:
    """How many float64 vectors of ``dim`` entries fit in ``fraction`` of the free memory."""
    dev = torch.device(device)
    free = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else _available_memory()
    return int(fraction * free // (8 * max(dim, 1)))


def lanczos_ground_state(matvec, dim: int, *, device="cpu", tol: float = 1e-10, max_iter: int = 2000,
                         seed: int = 1234, progress: bool = True, max_restarts: int = 4, v0=None,
                         store_vectors: bool | None = None):
    """Lowest eigenpair by Lanczos in torch (any device).

    The first pass runs the three-term recurrence and watches the Ritz value and the
    residual estimate beta_m |y_m|; the Ritz vector is then assembled from the Lanczos
    vectors, kept in memory when they fit (``store_vectors=None``: while they take less
    than 40 % of the free memory of the device; True/False force it), else regenerated by
    a second pass of the recurrence with the stored coefficients (memory O(5 vectors),
    twice the matvecs). No reorthogonalization is needed
    for the extreme eigenpair when the run stops soon after convergence; the true
    residual ||H v - E v|| is measured at the end and the run is restarted from v when
    it is above target. The target residual sqrt(tol)/10 bounds the energy error by
    about residual^2 / gap = tol / (100 gap).

    Returns (energy, vector [dim] float64 tensor on device, residual, matvec count).
    """
    from scipy.linalg import eigh_tridiagonal
    from tqdm.auto import tqdm

    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = (torch.rand(dim, generator=gen, dtype=torch.float64) - 0.5).to(dev) if v0 is None else v0.to(dev).clone()
    target = 0.1 * math.sqrt(tol)
    if store_vectors is None:
        budget = _vector_budget(dev, dim)
    else:
        budget = max_iter + 1 if store_vectors else 0
    n_matvec = 0
    bar = tqdm(total=None, desc="lanczos", disable=not progress, leave=False, unit="it")
    energy, residual = float("nan"), float("inf")
    for _restart in range(max_restarts + 1):
        v = v / torch.linalg.vector_norm(v)
        start = v.clone()
        alphas: list[float] = []
        betas: list[float] = []
        v_prev = torch.zeros_like(v)
        beta = 0.0
        ritz = None
        stored = [v] if budget > 0 else None  # the Lanczos vectors v_0, v_1, ... while they fit
        for it in range(max_iter):
            w = matvec(v)
            n_matvec += 1
            alpha = float(torch.dot(w, v))
            w.sub_(v, alpha=alpha)
            if beta:
                w.sub_(v_prev, alpha=beta)
            alphas.append(alpha)
            beta = float(torch.linalg.vector_norm(w))
            if it % 5 == 4 or beta < 1e-12 or it == max_iter - 1:
                vals, vecs = eigh_tridiagonal(np.array(alphas), np.array(betas), select="i", select_range=(0, 0))
                ritz = vecs[:, 0]
                estimate = beta * abs(ritz[-1])
                bar.set_postfix(E=f"{vals[0]:.10f}", res=f"{estimate:.1e}")
                if estimate < 0.5 * target or beta < 1e-12:
                    break
            bar.update(1)
            betas.append(beta)
            v_prev, v = v, w / beta
            del w
            if stored is not None:
                if len(stored) < budget:
                    stored.append(v)
                else:
                    stored = None  # out of room: assemble by the second pass
        if ritz is None:
            vals, vecs = eigh_tridiagonal(np.array(alphas), np.array(betas), select="i", select_range=(0, 0))
            ritz = vecs[:, 0]
        m = len(ritz)
        psi = torch.zeros_like(start)
        if stored is not None and len(stored) >= m:  # psi = sum_k ritz[k] v_k from the kept vectors
            for k in range(m):
                psi.add_(stored[k], alpha=float(ritz[k]))
            m = 0  # no second pass
        stored = v_prev = None
        # Else the second pass: psi = sum_k ritz[k] v_k, regenerating v_k from the stored coefficients.
        if m:
            v_prev, v = torch.zeros_like(start), start
        for k in range(m):
            psi.add_(v, alpha=float(ritz[k]))
            if k == m - 1:
                break
            w = matvec(v)
            n_matvec += 1
            w.sub_(v, alpha=alphas[k])
            if k:
                w.sub_(v_prev, alpha=betas[k - 1])
            v_prev, v = v, w / betas[k]
            del w
        psi /= torch.linalg.vector_norm(psi)
        h_psi = matvec(psi)
        n_matvec += 1
        energy = float(torch.dot(psi, h_psi))
        residual = float(torch.linalg.vector_norm(h_psi - energy * psi))
        del h_psi
        v = psi
        if residual < target:
            break
    bar.close()
    return energy, v, residual, n_matvec


def _eigsh_ground_state(matvec_np, dim: int, tol: float, seed: int = 1234):
    op = spla.LinearOperator((dim, dim), matvec=matvec_np, dtype=np.float64)
    v0 = np.random.default_rng(seed).random(dim) - 0.5
    vals, vecs = spla.eigsh(op, k=1, which="SA", tol=tol, v0=v0, ncv=min(dim, 24), maxiter=10000)
    return float(vals[0]), vecs[:, 0]


# ====================================================================== results + cache
@dataclass
class EDResult:
    """Ground state of a Hamiltonian in one sector (see module docstring)."""

    energy: float
    energy_per_site: float
    units: str
    dim: int
    state: np.ndarray  # [dim] float64, normalized
    basis: np.ndarray  # [dim] uint64 (representatives when symmetric)
    residual: float
    seconds: float
    solver: str
    n_sites: int
    sz: int | None
    symmetric: bool = False
    orbit_sizes: np.ndarray | None = None  # [dim] int64 (symmetric only)
    group_perms: np.ndarray | None = None  # [G, N] int64 (symmetric only)
    group_flips: np.ndarray | None = None  # [G] bool (symmetric only)
    flip_parity: int = 1
    hamiltonian_info: dict = field(default_factory=dict)
    matvecs: int = 0
    cache_key: str = ""
    from_cache: bool = False

    def to_json_dict(self) -> dict:
        out = dict(self.hamiltonian_info)
        out.update(
            energy=self.energy,
            energy_per_site=self.energy_per_site,
            units=self.units,
            dim=self.dim,
            residual=self.residual,
            seconds=self.seconds,
            solver=self.solver,
            sz=self.sz,
            n_sites=self.n_sites,
            symmetric=self.symmetric,
            sector=self.sector_label(),
            matvecs=self.matvecs,
            cache_key=self.cache_key,
            from_cache=self.from_cache,
        )
        return out

    def sector_label(self) -> str:
        sz = "full" if self.sz is None else f"sz={self.sz}"
        if not self.symmetric:
            return sz
        flip = f", spin-flip {'+' if self.flip_parity > 0 else '-'}1" if self.group_flips is not None and self.group_flips.any() else ""
        return f"{sz}, trivial representation of {len(self.group_perms) if self.group_perms is not None else 1} elements{flip}"

    def full_state(self):
        """``(states uint64, amplitudes float64)`` over the full sector (expands
        representatives; the plain result is returned as is)."""
        if not self.symmetric:
            return self.basis, self.state
        return expand_representatives(self.basis, self.state, self.n_sites, self.group_perms, self.group_flips,
                                      self.flip_parity)

    def sample(self, n_samples: int, generator: np.random.Generator | int | None = None):
        """i.i.d. configurations from |psi|^2: ``(states uint64 [n], amplitudes [n])``.
        Symmetric: an orbit r with probability c_r^2, then a uniform group element applied
        to r (uniform over the orbit, each element being hit |Stab| times)."""
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        prob = self.state**2
        prob = prob / prob.sum()
        idx = rng.choice(self.dim, size=int(n_samples), p=prob)
        if not self.symmetric:
            return self.basis[idx], self.state[idx]
        g = rng.integers(0, len(self.group_perms), size=len(idx))
        states = np.empty(len(idx), dtype=np.uint64)
        chars = _flip_characters(self.group_flips, self.flip_parity)
        for gi in np.unique(g):
            sel = g == gi
            states[sel] = _apply_group_np(self.basis[idx[sel]], self.group_perms[gi], bool(self.group_flips[gi]), self.n_sites)
        amps = chars[g] * self.state[idx] / np.sqrt(self.orbit_sizes[idx])
        return states, amps


def cache_directory(cache_dir=None) -> Path:
    """``cache_dir``, else ``$NAQS_CACHE_DIR``, else ``~/.cache/naqs/ed``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("NAQS_CACHE_DIR")
    return Path(env) / "ed" if env else Path.home() / ".cache" / "naqs" / "ed"


def _cache_key(hamiltonian, sz, symmetric, perms, flips, flip_parity) -> str:
    h = hashlib.sha256()
    h.update(CACHE_VERSION.encode())
    h.update(json.dumps({"n": hamiltonian.n_sites, "sz": sz, "symmetric": symmetric, "units": hamiltonian.units,
                         "flip_parity": flip_parity if symmetric else None}).encode())
    if _is_heisenberg(hamiltonian):
        edges, zz, exch = _heisenberg_terms(hamiltonian)
        h.update(b"heisenberg")
        for t in (edges, zz, exch):
            h.update(t.numpy().tobytes())
    else:
        h.update(b"ising")
        h.update(np.asarray(hamiltonian.edges.cpu().numpy(), dtype=np.int64).tobytes())
        h.update(np.array([hamiltonian.j, hamiltonian.gamma], dtype=np.float64).tobytes())
    if symmetric:
        h.update(np.ascontiguousarray(perms, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(flips, dtype=bool).tobytes())
    return h.hexdigest()[:24]


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save(result: EDResult, directory: Path) -> None:
    arrays = {"state": result.state, "basis": result.basis}
    if result.symmetric:
        arrays.update(orbit_sizes=result.orbit_sizes, group_perms=result.group_perms, group_flips=result.group_flips)

    def write_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _atomic_write(directory / f"{result.cache_key}.npz", write_npz)
    meta = result.to_json_dict()
    meta.update(flip_parity=result.flip_parity, cache_version=CACHE_VERSION)
    _atomic_write(directory / f"{result.cache_key}.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


def _load(key: str, directory: Path) -> EDResult | None:
    npz_path, json_path = directory / f"{key}.npz", directory / f"{key}.json"
    if not (npz_path.exists() and json_path.exists()):
        return None
    try:
        meta = json.loads(json_path.read_text())
        with np.load(npz_path) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, json.JSONDecodeError):
        return None  # a damaged entry is recomputed and overwritten
    info_keys = set(meta) - {"energy", "energy_per_site", "units", "dim", "residual", "seconds", "solver", "sz",
                             "n_sites", "symmetric", "sector", "matvecs", "cache_key", "from_cache", "flip_parity",
                             "cache_version"}
    return EDResult(
        energy=meta["energy"], energy_per_site=meta["energy_per_site"], units=meta["units"], dim=meta["dim"],
        state=arrays["state"], basis=arrays["basis"], residual=meta["residual"], seconds=meta["seconds"],
        solver=meta["solver"], n_sites=meta["n_sites"], sz=meta["sz"], symmetric=meta["symmetric"],
        orbit_sizes=arrays.get("orbit_sizes"), group_perms=arrays.get("group_perms"),
        group_flips=arrays.get("group_flips"), flip_parity=meta.get("flip_parity", 1),
        hamiltonian_info={k: meta[k] for k in info_keys}, matvecs=meta.get("matvecs", 0), cache_key=key,
        from_cache=True,
    )


# ====================================================================== driver
def ground_state(hamiltonian: Hamiltonian, *, sz: int | None = 0, symmetric: bool = False, device: str = "cpu",
                 tol: float = 1e-10, cache: bool = True, cache_dir=None, progress: bool = True,
                 solver: str = "auto", flip_parity: int | None = None, spin_flip: bool | None = None) -> EDResult:
    """Ground state of ``hamiltonian`` in the sector ``sz = n_up - n_down`` (None: the
    full 2^N basis, required for the transverse-field Ising model).

    ``symmetric``: work in the trivial representation of the lattice's permutation group
    (with the spin inversion of parity ``flip_parity`` when ``sz == 0`` and ``spin_flip``
    is not False); it is the lowest state of that symmetry sector. ``solver``: ``auto``
    (dense below 1024 states, eigsh on the CPU - the two-pass Lanczos where eigsh's vectors
    do not fit in memory -, Lanczos on CUDA), ``dense``, ``eigsh``,
    ``lanczos`` or ``sparse`` (the scipy reference matrix + eigsh).
    """
    if not isinstance(hamiltonian, Hamiltonian) and not (_is_heisenberg(hamiltonian) or _is_ising(hamiltonian)):
        raise ValueError(f"ground_state needs a naqs Hamiltonian, got {type(hamiltonian).__name__}")
    n = _check_n_sites(hamiltonian.n_sites)
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 < tol < 1):
        raise ValueError(f"tol must be a number in (0, 1), got {tol!r}")
    dev = str(device)
    if dev not in ("cpu", "cuda") and not dev.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda' (or 'cuda:N')")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    if solver not in ("auto", "dense", "eigsh", "lanczos", "sparse"):
        raise ValueError(f"unknown solver {solver!r}: use auto, dense, eigsh, lanczos or sparse")
    ising = _is_ising(hamiltonian)
    if not ising and not _is_heisenberg(hamiltonian):
        raise ValueError(f"no ED path for {type(hamiltonian).__name__}")
    if ising and sz is not None:
        raise ValueError("the transverse-field Ising model conserves no S^z: call ground_state(..., sz=None)")
    if ising and symmetric:
        raise ValueError("symmetric=True is implemented for the Heisenberg model only")
    n_up = None if sz is None else _n_up_from_sz(n, sz)
    if symmetric and sz is None:
        raise ValueError("symmetric=True needs a U(1) sector (sz=0, ...), not the full basis")

    perms = flips = None
    parity = 1
    if symmetric:
        use_flip = (sz == 0) if spin_flip is None else bool(spin_flip)
        if use_flip and sz != 0:
            raise ValueError("the spin inversion maps sz to -sz: spin_flip=True needs sz=0")
        parity = (-1) ** (n // 2) if flip_parity is None else int(flip_parity)
        if parity not in (1, -1):
            raise ValueError(f"flip_parity must be +1 or -1, got {flip_parity!r}")
        perms, flips = symmetry_group(hamiltonian.lattice, spin_flip=use_flip, hamiltonian=hamiltonian)
        if not use_flip:
            parity = 1

    key = _cache_key(hamiltonian, sz, symmetric, perms, flips, parity)
    directory = cache_directory(cache_dir)
    if cache:
        loaded = _load(key, directory)
        if loaded is not None:
            return loaded

    t0 = time.perf_counter()
    info = dict(hamiltonian.describe())
    matvecs = 0
    orbit = None
    if symmetric:
        torus = torus_structure(getattr(hamiltonian, "lattice", None), perms, flips)
        full_dim = math.comb(n, n_up)
        estimate = full_dim / len(perms)  # representatives, about one per orbit of |G| states
        # reps, orbits, the state and the Lanczos/ARPACK work vectors on the host
        _check_memory(estimate * 8.0 * (6 + (24 if dev == "cpu" else 2)), f"ED in the symmetric sector of about "
                      f"{estimate:.3g} representatives", "cpu")
        if ops.has_op("ed_torus_representatives"):
            if dev != "cpu":
                if not ops.cuda_available():
                    raise ValueError("device='cuda' needs the CUDA build of naqs._C and a visible GPU "
                                     "(ops.cuda_available())")
                _check_memory(estimate * 8.0 * 10, f"device Lanczos in the symmetric sector of about {estimate:.3g} "
                              "representatives", dev)
            t_reps = time.perf_counter()
            reps_t, orbit_t = symmetric_representatives_tensors(n, n_up, perms, flips, parity, device=dev, torus=torus)
            info["enumeration_seconds"] = round(time.perf_counter() - t_reps, 3)
            op = SymmetricOperator(hamiltonian, reps_t, orbit_t, perms, flips, parity, device=dev, torus=torus)
            reps, orbit = reps_t.cpu().numpy().view(np.uint64), orbit_t.cpu().numpy()
        else:
            if dev != "cpu":
                raise ValueError("the symmetric CUDA path needs naqs._C (not built)")
            reps, orbit = symmetric_representatives(n, n_up, perms, flips, parity)
            op = SymmetricOperator(hamiltonian, reps, orbit, perms, flips, parity)
        info["group_form"] = op.form if op.kernel else "reference"
        basis = reps
        dim = len(basis)
        matvec_np, kind = op, "symmetric"
    else:
        dim = 2**n if n_up is None else math.comb(n, n_up)
        vectors = 24 if dev == "cpu" else 6  # eigsh keeps ncv vectors; the device Lanczos about 6
        if dev == "cpu" and solver == "auto" and dim > DENSE_DIM and dim * 8.0 * (vectors + 2) > 0.8 * _available_memory():
            # ARPACK's vectors do not fit but the two-pass torch Lanczos (O(5 vectors)) may
            solver, vectors = "lanczos", 6
        _check_memory(dim * 8.0 * (vectors + 2), f"ED in a space of {dim} states ({vectors + 2} vectors)", "cpu")
        if dev != "cpu":
            _check_memory(dim * 8.0 * 7, f"device Lanczos in a space of {dim} states", dev)
        if ising or n_up is None or solver == "sparse" or n < 2:
            basis = full_basis(n) if n_up is None else sector_basis(n, n_up)
            op = None
        else:
            op = SectorOperator(hamiltonian, n_up, device=dev)
            basis = op.basis_np
        kind = "matvec" if op is not None and op.kernel else "sparse"
        matvec_np = op

    choice = solver
    if choice == "auto":
        choice = "dense" if dim <= DENSE_DIM else ("lanczos" if dev != "cpu" else "eigsh")
    if choice == "lanczos" and dev != "cpu" and kind not in ("matvec", "symmetric"):
        raise ValueError("the CUDA Lanczos path needs a CUDA matvec (Heisenberg in a sector, plain or symmetric)")
    if choice == "sparse" and symmetric:
        raise ValueError("solver='sparse' builds the reference matrix of a plain basis; with symmetric=True use 'eigsh'")
    mat = None
    if matvec_np is None:  # reference path: the scipy sparse matrix
        mat = hamiltonian_sparse(hamiltonian, basis, progress=progress)
        matvec_np = lambda v: mat @ v  # noqa: E731
        kind = "sparse"
    on_device = kind in ("matvec", "symmetric") and dev != "cpu" and getattr(op, "kernel", False)

    def matvec_torch(v: torch.Tensor) -> torch.Tensor:
        if on_device:
            return op(v)
        return torch.from_numpy(np.asarray(matvec_np(v.cpu().numpy()), dtype=np.float64))

    if choice == "dense":
        if dim > 8192:
            raise ValueError(f"a dense solve of dimension {dim} needs {dim * dim * 8 / 2**30:.1f} GiB; use solver='auto'")
        if mat is None and not symmetric:  # the vectorized reference matrix: one call, no thread-pool round trips
            mat = hamiltonian_sparse(hamiltonian, basis)
        if mat is not None:
            dense = mat.toarray()
        else:  # symmetric: apply the operator to the unit vectors (small dim only)
            dense = np.column_stack([matvec_np(col) for col in np.eye(dim)])
        vals, vecs = np.linalg.eigh(dense)
        energy, state = float(vals[0]), vecs[:, 0]
        solver_name = f"dense[{kind}]"
    elif choice == "lanczos":
        energy, vt, _, matvecs = lanczos_ground_state(matvec_torch, dim, device=dev if on_device else "cpu", tol=tol,
                                                      progress=progress)
        state = vt.cpu().numpy()
        solver_name = f"lanczos[{kind}:{dev if on_device else 'cpu'}]"
    else:  # eigsh (ARPACK) over the operator
        counter = {"n": 0}

        def counted(v):
            counter["n"] += 1
            return matvec_np(v)

        energy, state = _eigsh_ground_state(counted, dim, tol)
        matvecs = counter["n"]
        solver_name = f"eigsh[{kind}:cpu]"
    state = np.ascontiguousarray(state, dtype=np.float64)
    state /= np.linalg.norm(state)
    h_state = matvec_torch(torch.from_numpy(state).to(dev if on_device else "cpu")).cpu().numpy()
    energy = float(state @ h_state)
    residual = float(np.linalg.norm(h_state - energy * state))
    # A fixed sign convention makes cached and recomputed states comparable.
    pivot = int(np.argmax(np.abs(state)))
    if state[pivot] < 0:
        state = -state
    seconds = time.perf_counter() - t0
    result = EDResult(
        energy=energy, energy_per_site=energy / n, units=hamiltonian.units, dim=int(dim), state=state,
        basis=np.asarray(basis, dtype=np.uint64), residual=residual, seconds=seconds, solver=solver_name, n_sites=n,
        sz=sz, symmetric=symmetric, orbit_sizes=None if orbit is None else np.asarray(orbit, np.int64),
        group_perms=perms, group_flips=flips, flip_parity=parity, hamiltonian_info=info, matvecs=matvecs,
        cache_key=key,
    )
    if cache:
        _save(result, directory)
    return result


# ====================================================================== CLI
def add_ed_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``naqs ed``."""
    parser.add_argument("--lattice", choices=["square", "triangle", "kagome"], default="square",
                        help="lattice kind (ignored with --cluster)")
    parser.add_argument("--size", default="4x4", help="Lx x Ly sites (kagome: unit cells), e.g. 4x4")
    parser.add_argument("--pbc", action="store_true", help="periodic boundary conditions")
    parser.add_argument("--cluster", default=None, help="a shipped cluster of the generalization study, e.g. square-24")
    parser.add_argument("--model", choices=["heisenberg", "ising"], default="heisenberg")
    parser.add_argument("--j1", type=float, default=1.0, help="Heisenberg J1")
    parser.add_argument("--j2", type=float, default=0.0, help="Heisenberg J2")
    parser.add_argument("--gamma", type=float, default=1.0, help="Ising transverse field Gamma")
    parser.add_argument("--units", choices=["S", "pauli"], default=None,
                        help="Heisenberg units (default: S for --lattice, pauli for --cluster)")
    parser.add_argument("--sz", default="0", help="sector 2 S^z = n_up - n_down, or 'none' for the full basis "
                        "(Ising always uses the full basis)")
    parser.add_argument("--symmetric", action="store_true", help="use the fully symmetric sector of the lattice group")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    parser.add_argument("--cache-dir", default=None, help="cache folder (default $NAQS_CACHE_DIR/ed or ~/.cache/naqs/ed)")
    return parser


def _hamiltonian_from_args(args):
    from .lattice import cluster, make_lattice

    if args.cluster:
        lattice = cluster(args.cluster)
        default_units = "pauli"
    else:
        lattice = make_lattice(args.lattice, args.size, args.pbc)
        default_units = "S"
    if args.model == "ising":
        return TransverseFieldIsing(lattice, args.gamma)
    return Heisenberg(lattice, args.j1, args.j2, units=args.units or default_units)


def run_ed_cli(args) -> dict:
    """Run ``naqs ed`` from parsed arguments; prints JSON (``--json``) or a table and
    returns the result's JSON dict."""
    hamiltonian = _hamiltonian_from_args(args)
    sz_text = str(args.sz).strip().lower()
    if hamiltonian.name == "ising" or sz_text in ("none", "full", ""):
        sz = None
    else:
        try:
            sz = int(sz_text)
        except ValueError as err:
            raise ValueError(f"--sz must be an integer or 'none', got {args.sz!r}") from err
    result = ground_state(hamiltonian, sz=sz, symmetric=args.symmetric, device=args.device, cache=not args.no_cache,
                          cache_dir=args.cache_dir, progress=not args.json)
    out = result.to_json_dict()
    if args.json:
        print(json.dumps(out))
    else:
        width = max(len(k) for k in out)
        for k, v in out.items():
            print(f"{k:<{width}}  {v}")
        sys.stdout.flush()
    return out
