"""naqs: neural autoregressive quantum states.

Layers (see docs/concepts.md): lattice -> hamiltonian -> models -> sampling ->
local_energy -> vmc / study, with exact diagonalization (ed) as the reference and
naqs.ops as the only gateway to the compiled kernels in naqs._C.
"""

__version__ = "0.1.0"
