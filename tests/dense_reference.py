"""Hamiltonians built independently of naqs, as sums of Kronecker products of Pauli
matrices (scipy.sparse), for tests. Basis index bit i = site i, set = spin up (+1)."""

import numpy as np
import scipy.sparse as sp

SX = sp.csr_matrix(np.array([[0, 1], [1, 0]], dtype=complex))
SY = sp.csr_matrix(np.array([[0, -1j], [1j, 0]]))
SZ = sp.csr_matrix(np.diag([-1.0, 1.0]).astype(complex))  # index 1 (bit set) = up


def _chain(n, factors: dict):
    """Kronecker product over sites with site 0 as the least significant factor."""
    out = sp.identity(1, dtype=complex, format="csr")
    for site in reversed(range(n)):
        out = sp.kron(out, factors.get(site, sp.identity(2, dtype=complex)), format="csr")
    return out


def dense_heisenberg(n, edges, couplings, pauli):
    h = sp.csr_matrix((2**n, 2**n), dtype=complex)
    for (i, j), c in zip(edges, couplings):
        for s in (SX, SY, SZ):
            h = h + c * _chain(n, {int(i): s, int(j): s})
    h = h.toarray()
    return (h if pauli else h / 4).real


def dense_ising(n, edges, gamma):
    h = sp.csr_matrix((2**n, 2**n), dtype=complex)
    for i, j in edges:
        h = h - _chain(n, {int(i): SZ, int(j): SZ})
    for i in range(n):
        h = h - gamma * _chain(n, {i: SX})
    return h.toarray().real
