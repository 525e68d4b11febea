"""Tests of naqs.sr: Metropolis exchange sampler, local energies, the SR linear solve,
checkpoint/resume and a small optimization that must reach the ED ground state."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from naqs.sampling import metropolis_sample
from naqs import sr, study
from naqs.hamiltonian import Heisenberg
from naqs.lattice import square


def _enumerate(n):
    idx = torch.arange(1 << n)
    return (((idx[:, None] >> torch.arange(n)) & 1) * 2 - 1).to(torch.int8)


def test_metropolis_exchange_samples_psi_squared():
    n = 6
    weights = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)

    def log_psi(s):  # an arbitrary fixed state with a non-trivial phase
        x = s.double()
        return torch.complex(0.7 * (x * weights).sum(1) + 0.2 * x[:, 0] * x[:, 1], x[:, 2])

    gen = torch.Generator().manual_seed(0)
    res = metropolis_sample(log_psi, n, 60_000, n_chains=64, move="exchange", generator=gen, thin=3)
    assert res.samples.shape == (60_000, n) and res.samples.dtype == torch.int8
    assert torch.all(res.samples.sum(1) == 0)  # never leaves the sz = 0 sector
    assert 0.0 < res.acceptance < 1.0
    basis = study.sector_basis(n, n // 2)
    spins = study.basis_to_spins(basis, n)
    p = torch.exp(2 * log_psi(spins).real)
    p = (p / p.sum()).numpy()
    index = np.searchsorted(basis, study._spins_to_basis(res.samples))
    freq = np.bincount(index, minlength=len(basis)) / len(index)
    tv = 0.5 * np.abs(freq - p).sum()
    assert tv < 0.03, tv  # a sampler ignoring |psi|^2 (uniform) has TV ~ 0.3 here
    assert 0.5 * np.abs(1 / len(basis) - p).sum() > 0.2


def test_metropolis_rejects_bad_input():
    with pytest.raises(ValueError, match="move"):
        metropolis_sample(lambda s: s.sum(1).to(torch.complex128), 4, 10, move="swap")
    with pytest.raises(ValueError, match="magnetization"):
        metropolis_sample(lambda s: s.sum(1).to(torch.complex128), 4, 10, magnetization=1)
    with pytest.raises(ValueError, match="initial"):
        metropolis_sample(lambda s: s.sum(1).to(torch.complex128), 4, 10, initial=torch.ones(2, 5, dtype=torch.int8))


def test_local_energy_matches_dense_hamiltonian():
    lat = square(2, 4, pbc=False)
    ham = Heisenberg(lat, 1.0, 0.5, units="pauli")
    model = sr.SignAmplitudeState(lat.n_sites, (8,)).init_parameters(torch.Generator().manual_seed(0)).double()
    spins = _enumerate(lat.n_sites)
    with torch.no_grad():
        psi = torch.exp(model(spins))
        e_loc = sr.local_energies(ham, model, spins)
    h = torch.as_tensor(ham.to_dense(), dtype=torch.complex128)
    expected = (h @ psi) / psi
    assert torch.allclose(e_loc, expected, atol=1e-9)


def test_sr_solvers_agree_and_split_equals_full():
    torch.manual_seed(0)
    ns, p = 40, 30
    o_re, o_im = torch.randn(ns, p, dtype=torch.float64), torch.randn(ns, p, dtype=torch.float64)
    e = torch.complex(torch.randn(ns, dtype=torch.float64), torch.randn(ns, dtype=torch.float64))
    direct, force = sr.sr_update(o_re, o_im, e, 1e-2, "direct")
    # against the textbook formula
    oc = torch.complex(o_re, o_im) - torch.complex(o_re, o_im).mean(0)
    s = (oc.conj().T @ oc).real / ns + 1e-2 * torch.eye(p, dtype=torch.float64)
    f = (oc.conj().T @ (e - e.mean())).real / ns
    assert torch.allclose(force, f, atol=1e-12)
    assert torch.allclose(direct, torch.linalg.solve(s, f), atol=1e-10)
    for solver in ("sample", "cg"):
        assert torch.allclose(sr.sr_update(o_re, o_im, e, 1e-2, solver)[0], direct, atol=1e-7), solver
    with pytest.raises(ValueError, match="solver"):
        sr.sr_update(o_re, o_im, e, 1e-2, "qr")
    # the block-diagonal update of SignAmplitudeState equals the full one
    model = sr.SignAmplitudeState(6, (5,)).init_parameters(torch.Generator().manual_seed(1)).double()
    spins = study.basis_to_spins(study.sector_basis(6, 3), 6)
    e_loc = torch.complex(torch.randn(20, dtype=torch.float64), torch.randn(20, dtype=torch.float64))
    split = sr._sr_update_split(model, spins, e_loc, 1e-3, "direct")
    full_re, full_im = sr._per_sample_jacobian_full(model, spins)
    full, _ = sr.sr_update(full_re, full_im, e_loc, 1e-3, "direct")
    assert torch.allclose(split, full, atol=1e-8)


@pytest.fixture(scope="module")
def obc_3x4():
    lat = square(4, 3, pbc=False)
    ham = Heisenberg(lat, 1.0, 0.0, units="pauli")
    return ham, study.small_ground_state(ham)


@pytest.mark.slow
def test_sr_reaches_ground_state(obc_3x4, tmp_path):
    ham, gs = obc_3x4
    # measured: this setting reaches E within 0.1% of ED by step ~45 (overlap 0.9999 at 300)
    res = sr.run_sr(ham, steps=70, n_samples=512, n_chains=32, lr=0.03, diag_shift=1e-3, seed=0, hidden=(32, 32),
                    checkpoint=tmp_path / "run.pt", checkpoint_every=50)
    assert res.energies[-1] < res.energies[0] - 5  # SR lowers the energy
    assert abs(res.energy - gs.energy) / abs(gs.energy) < 0.03, (res.energy, gs.energy)
    overlap = sr.full_basis_overlap(res.model, gs.state, gs.basis, ham.n_sites)
    assert overlap > 0.9, overlap
    assert res.units == "pauli"


def test_sr_checkpoint_resume_equals_uninterrupted(obc_3x4, tmp_path):
    ham, _ = obc_3x4
    kwargs = dict(n_samples=64, n_chains=8, lr=0.05, seed=3, hidden=(8,), checkpoint_every=2)
    straight = sr.run_sr(ham, steps=4, checkpoint=tmp_path / "a.pt", **kwargs)
    sr.run_sr(ham, steps=2, checkpoint=tmp_path / "b.pt", **kwargs)  # "interrupted" after 2 steps
    resumed = sr.run_sr(ham, steps=4, checkpoint=tmp_path / "b.pt", **kwargs)
    assert resumed.energies == pytest.approx(straight.energies, rel=1e-9)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-10), k
    assert not (tmp_path / "b.pt.tmp").exists()


def test_run_sr_rejects_bad_input(obc_3x4):
    ham, _ = obc_3x4
    with pytest.raises(ValueError):
        sr.run_sr(ham, steps=0)
    with pytest.raises(ValueError):
        sr.run_sr(Heisenberg(square(3, 1), 1.0, 0.0), steps=1)
    with pytest.raises(ValueError, match="unknown cluster"):
        sr.run_sr_sweep("cube-8", "0", "/nonexistent")
