"""Local energies equal (H psi)(s) / psi(s) computed from a dense H built independently."""

import numpy as np
import pytest
import torch

from conftest import all_configurations
from dense_reference import dense_heisenberg, dense_ising
from naqs.hamiltonian import Heisenberg, TransverseFieldIsing
from naqs.lattice import square
from naqs.local_energy import local_energy
from naqs.models import PixelCNN, SymmetricModel


def _psi_vector(model, n):
    configs = all_configurations(n)
    return configs, torch.exp(model.log_psi(configs)).detach().numpy()


def _check(model, ham, dense, n, memory_budget=1 << 30):
    configs, psi = _psi_vector(model, n)
    hpsi = dense @ psi
    gen = torch.Generator().manual_seed(1)
    support = torch.nonzero(torch.as_tensor(np.abs(psi) > 0)).ravel()  # a sector model is 0 outside it
    pick = support[torch.randint(0, len(support), (64,), generator=gen)]
    eloc = local_energy(model, ham, configs[pick], memory_budget=memory_budget).numpy()
    expected = hpsi[pick.numpy()] / psi[pick.numpy()]
    np.testing.assert_allclose(eloc, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gamma", [0.5, 3.0])
def test_ising_local_energy(gamma):
    torch.manual_seed(0)
    lat = square(3, 3)
    model = PixelCNN(3, 3, 2, 4, output_scale=1.0).double()
    _check(model, TransverseFieldIsing(lat, gamma), dense_ising(9, lat.j1_edges, gamma), 9)


@pytest.mark.parametrize("units", ["S", "pauli"])
def test_heisenberg_local_energy_sector_and_sign(units):
    torch.manual_seed(1)
    lat = square(3, 4, pbc=True)
    model = PixelCNN(3, 4, 2, 4, magnetization=0, sign_rule=None, output_scale=1.0).double()
    ham = Heisenberg(lat, 1.0, 0.5, units=units)
    edges = np.concatenate([lat.j1_edges, lat.j2_edges])
    couplings = [1.0] * len(lat.j1_edges) + [0.5] * len(lat.j2_edges)
    _check(model, ham, dense_heisenberg(12, edges, couplings, units == "pauli"), 12, memory_budget=200_000)


def test_symmetrized_local_energy():
    torch.manual_seed(2)
    lat = square(3, 3)
    model = SymmetricModel(PixelCNN(3, 3, 2, 4, output_scale=1.0).double(), lat.perms)
    _check(model, TransverseFieldIsing(lat, 1.5), dense_ising(9, lat.j1_edges, 1.5), 9)


def test_local_energy_bad_input():
    model = PixelCNN(2, 2, 1, 2)
    ham = TransverseFieldIsing(square(2, 2), 1.0)
    with pytest.raises(ValueError, match="shape"):
        local_energy(model, ham, torch.ones(3, 5, dtype=torch.int8))
    with pytest.raises(ValueError, match="memory_budget"):
        local_energy(model, ham, torch.ones(3, 4, dtype=torch.int8), memory_budget=0)


def test_connected_reference_in_row_chunks():
    """The reference's forward passes cut into at most max_rows rows give the same
    values as one pass (up to the float64 rounding of different batch shapes); a
    non-positive max_rows is refused."""
    from naqs.local_energy import connected_log_psi_reference

    model = PixelCNN(3, 3, 2, 4).double()
    ham = TransverseFieldIsing(square(3, 3), 1.0)
    spins = all_configurations(9)[::37]
    conn = ham.connections(spins)
    whole = connected_log_psi_reference(model, spins, conn.flips, conn.counts)
    for rows in (1, 7, 10**6):
        torch.testing.assert_close(
            connected_log_psi_reference(model, spins, conn.flips, conn.counts, max_rows=rows), whole,
            atol=1e-12, rtol=0,
        )
    with pytest.raises(ValueError, match="max_rows"):
        connected_log_psi_reference(model, spins, conn.flips, conn.counts, max_rows=0)
