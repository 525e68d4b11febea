import numpy as np
import pytest
import torch

from naqs.hamiltonian import Heisenberg, TransverseFieldIsing, apply_flips, exchange_connections_reference
from naqs.lattice import cluster, square
from dense_reference import dense_heisenberg, dense_ising


@pytest.mark.parametrize("units", ["S", "pauli"])
def test_heisenberg_dense_matches_kronecker(units):
    lat = square(2, 4, pbc=False)
    ham = Heisenberg(lat, 1.0, 0.4, units=units)
    edges = np.concatenate([lat.j1_edges, lat.j2_edges])
    couplings = [1.0] * len(lat.j1_edges) + [0.4] * len(lat.j2_edges)
    ref = dense_heisenberg(8, edges, couplings, pauli=units == "pauli")
    assert np.allclose(ham.to_dense(), ref)


def test_ising_dense_matches_kronecker():
    lat = square(2, 4, pbc=False)
    ham = TransverseFieldIsing(lat, 2.5)
    assert np.allclose(ham.to_dense(), dense_ising(8, lat.j1_edges, 2.5))


def test_marshall_rotation_keeps_spectrum():
    lat = square(2, 3, pbc=False)
    plain = np.linalg.eigvalsh(Heisenberg(lat, 1.0, 0.0).to_dense())
    rotated = Heisenberg(lat, 1.0, 0.0, marshall=True).to_dense()
    assert np.allclose(plain, np.linalg.eigvalsh(rotated))
    off = rotated - np.diag(np.diag(rotated))
    assert (off <= 1e-12).all()  # stoquastic


def test_exchange_connections_kernel_equals_reference():
    gen = torch.Generator().manual_seed(3)
    lat = cluster("kagome-24")
    ham = Heisenberg(lat, 1.0, 0.7, units="pauli")
    for batch in (0, 1, 57):
        spins = (torch.randint(0, 2, (batch, 24), generator=gen) * 2 - 1).to(torch.int8)
        a = ham.connections(spins, use_extension=True)
        b = ham.connections(spins, use_extension=False)
        assert torch.equal(a.flips, b.flips) and torch.equal(a.counts, b.counts)
        assert torch.equal(a.elements, b.elements)
        # each connection flips an antiparallel pair
        conn = apply_flips(spins, a.flips)
        diff = (conn != spins[:, None, :]).sum(-1)
        assert torch.equal(diff[a.mask], torch.full_like(diff[a.mask], 2))


def test_exchange_connections_bad_input():
    from naqs import ops

    spins = torch.ones(2, 4, dtype=torch.int8)
    edges = torch.tensor([[0, 1], [2, 9]])
    with pytest.raises(ValueError, match="edge 1"):
        ops.exchange_connections(spins, edges, torch.ones(2, dtype=torch.float64))
    with pytest.raises((TypeError, RuntimeError), match="dtype"):
        ops._C.exchange_connections(spins, torch.tensor([[0, 1]]), torch.ones(1, dtype=torch.float32))


def test_spin_validation():
    ham = TransverseFieldIsing(square(2, 2), 1.0)
    with pytest.raises(ValueError, match=r"\+1 and -1"):
        ham.diagonal(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="shape"):
        ham.diagonal(torch.ones(3, 5))
    with pytest.raises(ValueError, match="finite"):
        TransverseFieldIsing(square(2, 2), float("nan"))
    with pytest.raises(ValueError, match="units"):
        Heisenberg(square(2, 2), units="eV")
    with pytest.raises(ValueError, match="bipartite"):
        Heisenberg(square(3, 3, pbc=True), marshall=True)  # odd J1 cycles


def test_reference_connections_empty_edges():
    spins = torch.ones(3, 1, dtype=torch.int8)
    flips, elements, counts = exchange_connections_reference(spins, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.float64))
    assert flips.shape == (3, 0, 2) and counts.tolist() == [0, 0, 0]
