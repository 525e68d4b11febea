"""Exact diagonalization: bases and ranks, kernels against independent sparse matrices,
ground-state energies against published numbers, symmetric sectors, cache, errors.

Tolerances: the matvec kernels and the references sum the same float64 terms in a
different order, so they agree to a few ulps of |y| (1e-12 relative is generous);
energies are converged to tol=1e-10 and compared to published values at the precision
they are quoted with.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from naqs import ed, ops
from naqs.hamiltonian import Heisenberg, TransverseFieldIsing
from naqs.lattice import cluster, square, triangle


# ---------------------------------------------------------------- independent references
def brute_force_sector(n: int, n_up: int) -> np.ndarray:
    """Sector basis from itertools (independent of naqs.ed)."""
    words = [sum(1 << p for p in combo) for combo in itertools.combinations(range(n), n_up)]
    return np.array(sorted(words), dtype=np.uint64)


def brute_force_sparse(n: int, basis: np.ndarray, edges, zz, exch) -> sp.csr_matrix:
    """H from the edge list: spins as +1/-1 arrays, flips by explicit bit tests, columns
    by a dict from word to index (independent of the ranks and kernels under test)."""
    index = {int(w): k for k, w in enumerate(basis)}
    spins = ((basis[:, None] >> np.arange(n, dtype=np.uint64)) & np.uint64(1)).astype(np.int64) * 2 - 1
    rows, cols, vals = [], [], []
    diag = np.zeros(len(basis))
    for (i, j), jz, jx in zip(np.asarray(edges), np.asarray(zz), np.asarray(exch)):
        diag += jz * spins[:, i] * spins[:, j]
        for k in np.nonzero(spins[:, i] != spins[:, j])[0]:
            rows.append(k)
            cols.append(index[int(basis[k]) ^ (1 << int(i)) ^ (1 << int(j))])
            vals.append(jx)
    mat = sp.coo_matrix((vals, (rows, cols)), shape=(len(basis),) * 2).tocsr()
    return mat + sp.diags(diag)


def terms(h):
    return h.edges.numpy(), h.zz_couplings.numpy(), h.exchange_couplings.numpy()


def kagome_piece():
    """A 16-site connected piece of the kagome-24 cluster (open edges), renumbered."""
    lat = cluster("kagome-24")
    keep = np.arange(16)
    e = lat.edges
    j1 = lat.j1_edges[np.all(np.isin(lat.j1_edges, keep), axis=1)]
    j2 = lat.j2_edges[np.all(np.isin(lat.j2_edges, keep), axis=1)]
    from naqs.lattice import Lattice

    assert len(e)
    return Lattice("kagome-24-piece", 16, lat.positions[:16], j1, j2)


# ---------------------------------------------------------------- basis and rank
@pytest.mark.parametrize("n,n_up", [(1, 0), (1, 1), (6, 3), (10, 2), (16, 8), (13, 13)])
def test_sector_basis_matches_itertools(n, n_up):
    expected = brute_force_sector(n, n_up)
    assert np.array_equal(ed.sector_basis(n, n_up), expected)
    assert np.array_equal(ed.sector_basis_reference(n, n_up), expected)


@pytest.mark.parametrize("n,n_up", [(16, 8), (20, 10), (21, 5), (12, 1)])
def test_rank_unrank_round_trip(n, n_up):
    basis = ed.sector_basis(n, n_up)
    assert len(basis) == math.comb(n, n_up)
    ranks = np.arange(len(basis))
    assert np.array_equal(ed.sector_rank(n, n_up, basis), ranks)
    assert np.array_equal(ed.rank_states(basis, basis), ranks)
    tables = ed.sector_tables(n, n_up)
    lo = (basis & np.uint64(2**tables.lo_bits - 1)).astype(np.int64)
    hi = (basis >> np.uint64(tables.lo_bits)).astype(np.int64)
    assert np.array_equal(tables.hi_offset[hi] + tables.lo_rank[lo], ranks)
    spins = ed.basis_to_spins(basis[:100], n)
    assert spins.dtype == torch.int8 and spins.shape == (min(100, len(basis)), n)
    assert np.array_equal(ed.spins_to_basis(spins), basis[:100])
    assert np.array_equal(ed.rank_states(n, basis[:10]), basis[:10].astype(np.int64))


@pytest.mark.parametrize("n,n_up,lo_bits", [(2, 1, 1), (9, 0, 4), (9, 9, 5), (16, 8, None), (21, 5, 3), (30, 15, 14),
                                           (24, 12, 20)])
def test_sector_tables_kernel_matches_reference(n, n_up, lo_bits):
    """The C++ split rank tables equal the numpy construction (and rank a basis right)."""
    if not ops.has_op("ed_sector_tables"):
        pytest.skip("naqs._C is not built")
    kernel, ref = ed.sector_tables(n, n_up, lo_bits), ed.sector_tables_reference(n, n_up, lo_bits)
    assert kernel.lo_bits == ref.lo_bits
    assert kernel.lo_rank.dtype == np.int32 and kernel.hi_offset.dtype == np.int64
    assert np.array_equal(kernel.lo_rank, ref.lo_rank) and np.array_equal(kernel.hi_offset, ref.hi_offset)
    if math.comb(n, n_up) <= 100_000:
        basis = ed.sector_basis(n, n_up)
        lo = (basis & np.uint64(2**kernel.lo_bits - 1)).astype(np.int64)
        hi = (basis >> np.uint64(kernel.lo_bits)).astype(np.int64)
        assert np.array_equal(kernel.hi_offset[hi] + kernel.lo_rank[lo], np.arange(len(basis)))


@pytest.mark.parametrize("args,match", [((1, 0, None), "at least 2 sites"), ((8, 9, None), "n_up"),
                                        ((8, 4, 8), "lo_bits"), ((8, 4, 0), "lo_bits"), ((40, 20, 10), "high table")])
def test_sector_tables_bad_input_raises(args, match):
    with pytest.raises(ValueError, match=match):
        ed.sector_tables(*args)
    with pytest.raises(ValueError, match=match):
        ed.sector_tables_reference(*args)
    if ops.has_op("ed_sector_tables") and args[2] is not None:
        with pytest.raises(ValueError):
            ops._C.ed_sector_tables(*args)


# ---------------------------------------------------------------- matvec vs brute force
def _cases():
    return [
        ("square-4x4-pbc-J2", Heisenberg(square(4, 4, pbc=True), 1.0, 0.5), 8),
        ("square-4x5-obc", Heisenberg(square(4, 5), 1.0, 0.0), 10),
        ("triangle-4x4", Heisenberg(triangle(4, 4), 1.0, 0.7, units="pauli"), 8),
        ("kagome-24-piece", Heisenberg(kagome_piece(), 1.0, 0.8, units="pauli"), 9),
        ("square-4x4-marshall", Heisenberg(square(4, 4, pbc=True), 1.0, 0.0, marshall=True), 6),
    ]


@pytest.mark.parametrize("name,h,n_up", _cases(), ids=[c[0] for c in _cases()])
def test_matvec_matches_brute_force(name, h, n_up):
    n = h.n_sites
    basis = brute_force_sector(n, n_up) if n <= 16 else ed.sector_basis(n, n_up)
    mat = brute_force_sparse(n, basis, *terms(h))
    op = ed.SectorOperator(h, n_up)
    assert np.array_equal(op.basis_np, basis)
    rng = np.random.default_rng(7)
    for _ in range(2):
        x = rng.standard_normal(len(basis))
        y_ref = mat @ x
        scale = np.abs(y_ref).max()
        np.testing.assert_allclose(ed.heisenberg_matvec_reference(basis, x, *terms(h)), y_ref, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(op(x), y_ref, rtol=0, atol=1e-12 * scale)
    assert abs(ed.hamiltonian_sparse(h, basis) - mat).max() < 1e-12


def test_matvec_20_sites_random():
    h = Heisenberg(square(5, 4, pbc=True), 1.0, 0.3)
    n_up = 10
    basis = ed.sector_basis(20, n_up)
    mat = ed.hamiltonian_sparse(h, basis)  # the vectorized reference, itself checked above
    x = np.random.default_rng(3).standard_normal(len(basis))
    y = ed.SectorOperator(h, n_up)(x)
    np.testing.assert_allclose(y, mat @ x, rtol=0, atol=1e-12 * np.abs(y).max())


# ---------------------------------------------------------------- ground states
def test_heisenberg_4x4_periodic(tmp_path):
    h = Heisenberg(square(4, 4, pbc=True), 1.0, 0.0)  # S units
    res = ed.ground_state(h, sz=0, cache=False, progress=False)
    assert res.units == "S" and res.dim == 12870
    assert res.energy == pytest.approx(-11.228483, abs=5e-7)
    assert res.residual < 1e-5
    assert np.linalg.norm(res.state) == pytest.approx(1.0)
    res_lanczos = ed.ground_state(h, sz=0, cache=False, progress=False, solver="lanczos")
    assert res_lanczos.energy == pytest.approx(res.energy, abs=1e-9)


def test_small_heisenberg_against_dense_eigvalsh():
    h = Heisenberg(square(2, 5, pbc=True), 1.0, 0.5, units="pauli")
    full = np.linalg.eigvalsh(h.to_dense())
    res = ed.ground_state(h, sz=None, cache=False, progress=False, solver="eigsh")
    assert res.energy == pytest.approx(full[0], abs=1e-9)
    for solver in ("eigsh", "lanczos", "dense"):
        res0 = ed.ground_state(h, sz=0, cache=False, progress=False, solver=solver)
        assert res0.energy == pytest.approx(full[0], abs=1e-9)  # singlet ground state lies in sz=0


def test_ising_4x4_open_gamma3():
    h = TransverseFieldIsing(square(4, 4), 3.0)
    res = ed.ground_state(h, sz=None, cache=False, progress=False)
    assert res.units == "pauli" and res.dim == 2**16
    assert res.energy_per_site == pytest.approx(-3.1366640, abs=5e-8)
    small = TransverseFieldIsing(square(3, 3), 3.0)
    dense = np.linalg.eigvalsh(small.to_dense())[0]
    assert ed.ground_state(small, sz=None, cache=False, progress=False, solver="eigsh").energy == pytest.approx(dense, abs=1e-9)


def test_square24_pauli():
    h = Heisenberg(cluster("square-24"), 1.0, 0.0, units="pauli")
    res = ed.ground_state(h, sz=0, cache=False, progress=False)
    assert res.dim == 2704156
    assert res.energy == pytest.approx(-66.21005518, abs=1e-7)


# ---------------------------------------------------------------- symmetric sector
@pytest.mark.parametrize("lattice,j2", [(square(4, 4, pbc=True), 0.0), (square(4, 4, pbc=True), 0.5), (square(4, 3, pbc=True), 0.5)])
def test_symmetric_equals_plain(lattice, j2):
    h = Heisenberg(lattice, 1.0, j2)
    plain = ed.ground_state(h, sz=0, cache=False, progress=False)
    sym = ed.ground_state(h, sz=0, symmetric=True, cache=False, progress=False, solver="eigsh")
    assert sym.dim < plain.dim / 20
    assert sym.energy == pytest.approx(plain.energy, abs=1e-9)
    # The expanded state is the plain ground state (up to a global sign).
    states, amps = sym.full_state()
    assert np.array_equal(states, plain.basis)
    assert abs(abs(amps @ plain.state) - 1.0) < 1e-8


def test_symmetric_kernels_match_reference():
    h = Heisenberg(square(4, 4, pbc=True), 1.0, 0.5)
    perms, flips = ed.symmetry_group(h.lattice, spin_flip=True, hamiltonian=h)
    for parity in (1, -1):
        reps_ref, orbit_ref = ed.symmetric_representatives_reference(16, 8, perms, flips, parity)
        reps, orbit = ed.symmetric_representatives(16, 8, perms, flips, parity)
        assert np.array_equal(reps, reps_ref) and np.array_equal(orbit, orbit_ref)
        x = np.random.default_rng(parity + 5).standard_normal(len(reps))
        y_ref = ed.symmetric_matvec_reference(reps, orbit, x, *terms(h), perms, flips, 16, parity)
        y = ed.SymmetricOperator(h, reps, orbit, perms, flips, parity)(x)
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12 * np.abs(y_ref).max())
    # Orbits tile the sector: sum of orbit sizes (parity +1, nothing vanishes) = C(16, 8).
    _, orbit = ed.symmetric_representatives(16, 8, perms, flips, 1)
    assert orbit.sum() == math.comb(16, 8)


def test_symmetric_sampling_follows_psi_squared():
    h = Heisenberg(square(4, 4, pbc=True), 1.0, 0.0)
    sym = ed.ground_state(h, sz=0, symmetric=True, cache=False, progress=False)
    states, amps = sym.full_state()
    prob = dict(zip(states.tolist(), amps**2))
    samples, sample_amps = sym.sample(20000, generator=1)
    assert np.allclose([prob[int(s)] for s in samples[:200]], sample_amps[:200] ** 2)
    # total variation between the empirical and exact distributions, on the 50 likeliest states
    top = np.argsort(-amps**2)[:50]
    counts = {int(s): 0 for s in states[top]}
    for s in samples.tolist():
        if s in counts:
            counts[s] += 1
    tv = 0.5 * sum(abs(counts[int(s)] / len(samples) - prob[int(s)]) for s in states[top])
    assert tv < 0.03


# ---------------------------------------------------------------- torus group form (bit-operation translations)
def _torus_cases():
    """(name, Heisenberg, n_up, spin_flip, flip_parity): the specialized sizes (4x4, 4x6,
    6x4, and 6x6 in a small sector of 3 up spins) and a run-time-size one (4x3)."""
    return [
        ("4x4-flip+", Heisenberg(square(4, 4, pbc=True), 1.0, 0.5), 8, True, 1),
        ("4x4-flip-", Heisenberg(square(4, 4, pbc=True), 1.0, 0.5), 8, True, -1),
        ("4x4-noflip", Heisenberg(square(4, 4, pbc=True), 1.0, 0.0), 8, False, 1),
        ("square-24", Heisenberg(cluster("square-24"), 1.0, 0.3, units="pauli"), 12, True, 1),
        ("6x4-flip-", Heisenberg(square(6, 4, pbc=True), 1.0, 0.0), 12, True, -1),
        ("4x3-flip+", Heisenberg(square(4, 3, pbc=True), 1.0, 0.5), 6, True, 1),
        ("6x6-nup3", Heisenberg(square(6, 6, pbc=True), 1.0, 0.5), 3, False, 1),
    ]


def _group(h, spin_flip):
    perms, flips = ed.symmetry_group(h.lattice, spin_flip=spin_flip, hamiltonian=h)
    torus = ed.torus_structure(h.lattice, perms, flips)
    assert torus is not None
    return perms, flips, torus


def test_torus_structure():
    perms, flips = ed.symmetry_group(square(4, 4, pbc=True), spin_flip=True)
    t = ed.torus_structure(square(4, 4, pbc=True), perms, flips)
    assert (t.lx, t.ly, len(t.point_perms), t.spin_flip, t.n_group) == (4, 4, 8, True, 256)
    assert np.array_equal(t.point_perms[0], np.arange(16))
    # The decomposition is exact: {p[t]} over points x translations is the permutation group.
    composed = {p[tr].tobytes() for p in t.point_perms for tr in ed.torus_translations(4, 4)}
    assert composed == {p.tobytes() for p in perms[~flips]}
    t36 = ed.torus_structure(cluster("square-36"), *ed.symmetry_group(cluster("square-36"), spin_flip=True))
    assert (t36.lx, t36.ly, len(t36.point_perms), t36.n_group) == (6, 6, 8, 576)
    t24 = ed.torus_structure(cluster("square-24"), *ed.symmetry_group(cluster("square-24"), spin_flip=False))
    assert (t24.lx, t24.ly, len(t24.point_perms), t24.spin_flip) == (4, 6, 4, False)
    # Not of the form: no grid shape, open boundaries, translations missing from the group.
    kag = cluster("kagome-24")
    assert ed.torus_structure(kag, *ed.symmetry_group(kag, spin_flip=True)) is None
    obc = square(4, 4)
    assert ed.torus_structure(obc, *ed.symmetry_group(obc, spin_flip=True)) is None
    lat = square(4, 4, pbc=True)
    assert ed.torus_structure(lat, perms[:8], flips[:8]) is None


@pytest.mark.parametrize("name,h,n_up,spin_flip,parity", _torus_cases(), ids=[c[0] for c in _torus_cases()])
def test_torus_kernels_match_tables(name, h, n_up, spin_flip, parity):
    """The bit-operation torus kernels (specialized and run-time sizes) give the byte-table
    kernels' representatives, orbit sizes and matvec (CPU; the tables are held to the numpy
    reference in test_symmetric_kernels_match_reference)."""
    if not ops.has_op("ed_torus_matvec"):
        pytest.skip("needs naqs._C")
    n = h.n_sites
    perms, flips, torus = _group(h, spin_flip)
    reps_ref, orbit_ref = ops._C.ed_symmetric_representatives(n, n_up, torch.as_tensor(perms),
                                                              torch.as_tensor(flips), parity)
    points = torch.as_tensor(torus.point_perms)
    x = torch.randn(len(reps_ref), dtype=torch.float64, generator=torch.Generator().manual_seed(n + parity))
    edges, zz, exch = ed._heisenberg_terms(h)
    y_ref = ops._C.ed_symmetric_matvec(reps_ref, orbit_ref, x, edges, zz, exch, torch.as_tensor(perms),
                                       torch.as_tensor(flips), n, parity)
    for specialized in (True, False):
        reps, orbit = ops._C.ed_torus_representatives(n, n_up, torus.lx, torus.ly, points, spin_flip, parity, -1,
                                                      specialized)
        assert torch.equal(reps, reps_ref) and torch.equal(orbit, orbit_ref)
        y = ops._C.ed_torus_matvec(reps_ref, orbit_ref, x, edges, zz, exch, torus.lx, torus.ly, points, spin_flip,
                                   parity, specialized)
        np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=0, atol=1e-12 * y_ref.abs().max().item())
    op = ed.SymmetricOperator(h, reps_ref, orbit_ref, perms, flips, parity)
    assert op.form == "torus"
    np.testing.assert_allclose(op(x.numpy()), y_ref.numpy(), rtol=0, atol=1e-12 * y_ref.abs().max().item())


def test_lanczos_stored_vectors_equal_second_pass():
    h = Heisenberg(square(4, 4, pbc=True), 1.0, 0.3)
    op = ed.SectorOperator(h, 8)
    kept = ed.lanczos_ground_state(op, op.dim, store_vectors=True, progress=False)
    again = ed.lanczos_ground_state(op, op.dim, store_vectors=False, progress=False)
    assert kept[0] == pytest.approx(again[0], abs=1e-11)
    assert abs(abs(float(kept[1] @ again[1])) - 1) < 1e-10
    assert kept[3] < again[3]  # no second pass


def test_full_state_too_large_raises(monkeypatch):
    monkeypatch.setattr(ed, "_available_memory", lambda: 2**30)  # 1 GiB free, whatever the machine has
    n = 36
    perms, flips = ed.symmetry_group(cluster("square-36"), spin_flip=True)
    reps = np.arange(2_000_000, dtype=np.uint64)
    res = ed.EDResult(energy=0.0, energy_per_site=0.0, units="S", dim=len(reps), state=np.zeros(len(reps)),
                      basis=reps, residual=0.0, seconds=0.0, solver="test", n_sites=n, sz=0, symmetric=True,
                      orbit_sizes=np.full(len(reps), 576), group_perms=perms, group_flips=flips)
    with pytest.raises(ValueError, match="sample"):
        res.full_state()


def test_torus_bad_input_raises():
    if not ops.has_op("ed_torus_matvec"):
        pytest.skip("needs naqs._C")
    perms, flips = ed.symmetry_group(square(4, 4, pbc=True), spin_flip=True)
    torus = ed.torus_structure(square(4, 4, pbc=True), perms, flips)
    points = torch.as_tensor(torus.point_perms)
    with pytest.raises(ValueError, match="n_sites"):
        ops._C.ed_torus_representatives(16, 8, 4, 3, points, True, 1, -1)
    with pytest.raises(ValueError, match="identity"):
        ops._C.ed_torus_representatives(16, 8, 4, 4, points.flip(0).contiguous(), True, 1, -1)
    with pytest.raises(ValueError, match="n_up"):
        ops._C.ed_torus_representatives(16, 7, 4, 4, points, True, 1, -1)
    with pytest.raises(ValueError, match="flip_parity"):
        ops._C.ed_torus_representatives(16, 8, 4, 4, points, True, 0, -1)
    with pytest.raises(ValueError, match="lx, ly"):
        ops._C.ed_torus_representatives(18, 9, 9, 2, torch.arange(18)[None], True, 1, -1)
    with pytest.raises(ValueError, match="point operations"):
        ops._C.ed_torus_representatives(16, 8, 4, 4, points.repeat(3, 1), True, 1, -1)
    bad = points.clone()
    bad[1, 0] = bad[1, 1]
    with pytest.raises(ValueError, match="not a permutation"):
        ops._C.ed_torus_representatives(16, 8, 4, 4, bad, True, 1, -1)
    reps, orbit = ops._C.ed_torus_representatives(16, 8, 4, 4, points, True, 1, -1)
    h = Heisenberg(square(4, 4, pbc=True), 1.0, 0.5)
    edges, zz, exch = ed._heisenberg_terms(h)
    with pytest.raises(ValueError, match="x"):
        ops._C.ed_torus_matvec(reps, orbit, torch.zeros(3, dtype=torch.float64), edges, zz, exch, 4, 4, points, True)
    with pytest.raises(TypeError, match="dtype"):
        ops._C.ed_torus_matvec(reps, orbit.int(), torch.zeros(len(reps), dtype=torch.float64), edges, zz, exch, 4, 4,
                               points, True)
    # A representative list of another group: connections miss their representatives.
    with pytest.raises(ValueError, match="not in reps"):
        ops._C.ed_torus_matvec(reps[::2].contiguous(), orbit[::2].contiguous(),
                               torch.zeros(len(reps[::2]), dtype=torch.float64), edges, zz, exch, 4, 4, points, True)
    if not ops.build_info()["cuda"]:
        with pytest.raises(ValueError, match="without CUDA"):
            ops._C.ed_torus_representatives(16, 8, 4, 4, points, True, 1, 0)


# ---------------------------------------------------------------- cache
def test_cache_round_trip(tmp_path, monkeypatch):
    h = Heisenberg(square(4, 3, pbc=True), 1.0, 0.2)
    first = ed.ground_state(h, sz=0, cache=True, cache_dir=tmp_path, progress=False)
    assert not first.from_cache
    assert len(list(tmp_path.glob("*.npz"))) == 1 and len(list(tmp_path.glob("*.json"))) == 1
    second = ed.ground_state(h, sz=0, cache=True, cache_dir=tmp_path, progress=False)
    assert second.from_cache and second.energy == first.energy
    assert np.array_equal(second.state, first.state) and np.array_equal(second.basis, first.basis)
    assert second.to_json_dict()["J2"] == 0.2
    other = ed.ground_state(Heisenberg(square(4, 3, pbc=True), 1.0, 0.3), sz=0, cache_dir=tmp_path, progress=False)
    assert not other.from_cache
    monkeypatch.setenv("NAQS_CACHE_DIR", str(tmp_path / "env"))
    assert ed.cache_directory() == tmp_path / "env" / "ed"


def test_cli_json(tmp_path, capsys):
    import argparse
    import json

    parser = ed.add_ed_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--lattice", "square", "--size", "4x4", "--pbc", "--json", "--cache-dir", str(tmp_path)])
    out = ed.run_ed_cli(args)
    printed = json.loads(capsys.readouterr().out)
    assert printed["energy"] == pytest.approx(-11.228483, abs=5e-7) and printed["units"] == "S"
    for key in ("energy", "energy_per_site", "units", "dim", "residual", "seconds"):
        assert key in out
    args = parser.parse_args(["--model", "ising", "--size", "3x3", "--gamma", "3", "--json", "--no-cache"])
    assert ed.run_ed_cli(args)["sz"] is None


# ---------------------------------------------------------------- bad input
def test_bad_input_raises():
    h = Heisenberg(square(4, 4), 1.0)
    with pytest.raises(ValueError, match="parity"):
        ed.ground_state(h, sz=1, cache=False)
    with pytest.raises(ValueError, match="impossible"):
        ed.ground_state(h, sz=18, cache=False)
    with pytest.raises(ValueError, match="device"):
        ed.ground_state(h, device="tpu", cache=False)
    with pytest.raises(ValueError, match="sz=None"):
        ed.ground_state(TransverseFieldIsing(square(3, 3), 1.0), sz=0, cache=False)
    with pytest.raises(ValueError, match="n_sites"):
        ed.sector_basis(65, 3)
    with pytest.raises(ValueError):
        ed.sector_basis(10, 11)
    with pytest.raises(ValueError, match="not in the basis"):
        ed.rank_states(ed.sector_basis(6, 3), np.array([0], dtype=np.uint64))
    with pytest.raises(ValueError, match="GiB"):
        ed.ground_state(Heisenberg(square(8, 8), 1.0), sz=0, cache=False)  # C(64, 32) states
    with pytest.raises(ValueError, match="only \\+1 and -1"):
        ed.spins_to_basis(np.zeros((2, 4)))
    if ops.has_op("ed_heisenberg_matvec"):
        op = ed.SectorOperator(Heisenberg(square(2, 2), 1.0), 2)
        with pytest.raises((ValueError, TypeError), match="x"):
            ops._C.ed_heisenberg_matvec(op.basis, torch.zeros(3, dtype=torch.float64), op.edges, op.zz, op.exch,
                                        op.lo_rank, op.hi_offset, 4, op.lo_bits, 0)
        with pytest.raises(TypeError, match="dtype"):
            ops._C.ed_heisenberg_matvec(op.basis, torch.zeros(6, dtype=torch.float32), op.edges, op.zz, op.exch,
                                        op.lo_rank, op.hi_offset, 4, op.lo_bits, 0)


# ---------------------------------------------------------------- CUDA
def _cuda_or_skip():
    if os.environ.get("NAQS_EXPECT_CUDA") == "1" and torch.cuda.is_available():
        assert ops.build_info()["cuda"], f"NAQS_EXPECT_CUDA=1 and a GPU is visible, but naqs._C has no CUDA: {ops.build_info()}"
    if not ops.cuda_available():
        pytest.skip("needs the CUDA build of naqs._C and a GPU")


@pytest.mark.cuda
@pytest.mark.parametrize("name,h,n_up", _cases(), ids=[c[0] for c in _cases()])
def test_cuda_matvec_matches_cpu(name, h, n_up):
    _cuda_or_skip()
    cpu = ed.SectorOperator(h, n_up)
    gpu = ed.SectorOperator(h, n_up, device="cuda")
    basis = cpu.basis_np
    mat = brute_force_sparse(h.n_sites, basis, *terms(h))
    for variant in (0, 1):
        gpu.variant = variant
        x = torch.randn(len(basis), dtype=torch.float64, generator=torch.Generator().manual_seed(variant))
        y_ref = mat @ x.numpy()
        y = torch.full_like(x, float("nan")).cuda()  # poison: the kernel must write every row
        y = gpu(x.cuda()).cpu().numpy()
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12 * np.abs(y_ref).max())


@pytest.mark.cuda
def test_cuda_ground_states():
    _cuda_or_skip()
    h = Heisenberg(square(4, 4, pbc=True), 1.0, 0.0)
    res = ed.ground_state(h, sz=0, device="cuda", solver="lanczos", cache=False, progress=False)
    assert res.energy == pytest.approx(-11.228483, abs=5e-7) and "cuda" in res.solver
    h24 = Heisenberg(cluster("square-24"), 1.0, 0.0, units="pauli")
    res24 = ed.ground_state(h24, sz=0, device="cuda", cache=False, progress=False)
    assert res24.energy == pytest.approx(-66.21005518, abs=1e-7)
    assert res24.residual < 1e-4


@pytest.mark.cuda
@pytest.mark.parametrize("name,h,n_up,spin_flip,parity", _torus_cases(), ids=[c[0] for c in _torus_cases()])
def test_cuda_symmetric_kernels_match_cpu(name, h, n_up, spin_flip, parity):
    """CUDA representatives/orbits (torus form, specialized and run-time sizes, and byte
    tables) == the CPU byte-table kernel; CUDA symmetric matvec == CPU on random vectors."""
    _cuda_or_skip()
    n = h.n_sites
    perms, flips, torus = _group(h, spin_flip)
    perms_t, flips_t, points = torch.as_tensor(perms), torch.as_tensor(flips), torch.as_tensor(torus.point_perms)
    reps_ref, orbit_ref = ops._C.ed_symmetric_representatives(n, n_up, perms_t, flips_t, parity)
    dev = torch.cuda.current_device()
    for specialized in (True, False):
        reps, orbit = ops._C.ed_torus_representatives(n, n_up, torus.lx, torus.ly, points, spin_flip, parity, dev,
                                                      specialized)
        assert reps.is_cuda and torch.equal(reps.cpu(), reps_ref) and torch.equal(orbit.cpu(), orbit_ref)
    reps, orbit = ops._C.ed_symmetric_representatives(n, n_up, perms_t, flips_t, parity, dev)
    assert torch.equal(reps.cpu(), reps_ref) and torch.equal(orbit.cpu(), orbit_ref)
    edges, zz, exch = ed._heisenberg_terms(h)
    for seed in range(2):
        x = torch.randn(len(reps_ref), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        y_ref = ops._C.ed_symmetric_matvec(reps_ref, orbit_ref, x, edges, zz, exch, perms_t, flips_t, n, parity)
        scale = y_ref.abs().max().item()
        xg = x.cuda()
        for specialized in (True, False):
            y = ops._C.ed_torus_matvec(reps, orbit, xg, edges, zz, exch, torus.lx, torus.ly, points, spin_flip,
                                       parity, specialized)
            assert y.is_cuda and torch.isfinite(y).all()
            np.testing.assert_allclose(y.cpu().numpy(), y_ref.numpy(), rtol=0, atol=1e-12 * scale)
        y = ops._C.ed_symmetric_matvec(reps, orbit, xg, edges, zz, exch, perms_t, flips_t, n, parity)
        np.testing.assert_allclose(y.cpu().numpy(), y_ref.numpy(), rtol=0, atol=1e-12 * scale)


@pytest.mark.cuda
def test_cuda_symmetric_generic_group():
    """A group without the torus form (kagome-24 piece: identity only / kagome clusters)
    runs on the byte-table CUDA kernels."""
    _cuda_or_skip()
    lat = cluster("kagome-24")
    h = Heisenberg(lat, 1.0, 1.0, units="pauli")
    perms, flips = ed.symmetry_group(lat, spin_flip=True, hamiltonian=h)
    assert ed.torus_structure(lat, perms, flips) is None
    reps_ref, orbit_ref = ed.symmetric_representatives(24, 12, perms, flips, 1)
    reps, orbit = ed.symmetric_representatives(24, 12, perms, flips, 1, device="cuda")
    assert np.array_equal(reps, reps_ref) and np.array_equal(orbit, orbit_ref)
    x = np.random.default_rng(2).standard_normal(len(reps))
    cpu = ed.SymmetricOperator(h, reps, orbit, perms, flips, 1)
    gpu = ed.SymmetricOperator(h, reps, orbit, perms, flips, 1, device="cuda")
    assert gpu.form == "tables"
    y_ref = cpu(x)
    np.testing.assert_allclose(gpu(x), y_ref, rtol=0, atol=1e-12 * np.abs(y_ref).max())


@pytest.mark.cuda
def test_cuda_symmetric_ground_states(tmp_path):
    _cuda_or_skip()
    h = Heisenberg(square(4, 4, pbc=True), 1.0, 0.0)
    res = ed.ground_state(h, sz=0, symmetric=True, device="cuda", solver="lanczos", cache=False, progress=False)
    assert res.energy == pytest.approx(-11.228483, abs=5e-7) and "symmetric:cuda" in res.solver
    assert res.hamiltonian_info["group_form"] == "torus"
    plain = ed.ground_state(h, sz=0, cache=False, progress=False)
    states, amps = res.full_state()
    assert np.array_equal(states, plain.basis) and abs(abs(amps @ plain.state) - 1.0) < 1e-8
    h24 = Heisenberg(cluster("square-24"), 1.0, 0.0, units="pauli")
    res24 = ed.ground_state(h24, sz=0, symmetric=True, device="cuda", cache=True, cache_dir=tmp_path, progress=False)
    assert res24.energy == pytest.approx(-66.21005518, abs=1e-7) and res24.residual < 1e-4
    assert res24.dim < 2704156 / 100
    samples, amps = res24.sample(1000, generator=0)
    assert np.all(ed._popcount(samples) == 12) and np.all(np.isfinite(amps))
    again = ed.ground_state(h24, sz=0, symmetric=True, device="cuda", cache=True, cache_dir=tmp_path, progress=False)
    assert again.from_cache and again.energy == res24.energy


@pytest.mark.cuda
def test_cuda_symmetric_bad_input():
    _cuda_or_skip()
    h = Heisenberg(square(4, 4, pbc=True), 1.0, 0.5)
    perms, flips, torus = _group(h, True)
    points = torch.as_tensor(torus.point_perms)
    reps, orbit = ops._C.ed_torus_representatives(16, 8, 4, 4, points, True, 1, torch.cuda.current_device())
    edges, zz, exch = ed._heisenberg_terms(h)
    with pytest.raises(ValueError, match="device|cuda|cpu"):
        ops._C.ed_torus_matvec(reps, orbit, torch.zeros(len(reps), dtype=torch.float64), edges, zz, exch, 4, 4,
                               points, True)
    with pytest.raises(ValueError, match="edges"):
        ops._C.ed_torus_matvec(reps, orbit, torch.zeros(len(reps), dtype=torch.float64, device="cuda"), edges.cuda(),
                               zz, exch, 4, 4, points, True)
    with pytest.raises(ValueError, match="not in reps"):
        ops._C.ed_torus_matvec(reps[::2].contiguous(), orbit[::2].contiguous(),
                               torch.zeros(len(reps[::2]), dtype=torch.float64, device="cuda"), edges, zz, exch, 4, 4,
                               points, True)



def test_cpu_auto_solver_falls_back_to_lanczos_when_eigsh_does_not_fit(monkeypatch):
    # 4x4 sector: 12870 states; eigsh's 26 vectors (2.7 MB) do not fit in 80 % of 2 MB,
    # the two-pass Lanczos (~8 vectors, 0.8 MB) does
    monkeypatch.setattr(ed, "_available_memory", lambda: 2 * 2**20)
    res = ed.ground_state(Heisenberg(square(4, 4, pbc=True), 1.0, 0.0), sz=0, cache=False, progress=False)
    assert res.solver.startswith("lanczos")
    assert res.energy == pytest.approx(-11.228483, abs=5e-7)
