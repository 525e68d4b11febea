"""Local energies ``E_loc(s) = sum_s' H_ss' psi(s') / psi(s)`` for a batch of samples.

The reference evaluates ``log psi`` of every connected configuration from scratch, in
chunks sized to a memory budget. The kernel path (naqs._C, where built) reuses each
sample's cached activations: the connections of a sample only differ from it at and
after their first flipped site.
"""

from __future__ import annotations

import torch

from . import ops
from .hamiltonian import Hamiltonian, apply_flips, check_spins

__all__ = ["local_energy", "connected_log_psi_reference", "last_local_energy_path"]

_last_path = {"path": "none"}


def last_local_energy_path() -> str:
    return _last_path["path"]


def _chunk_rows(n_sites: int, max_connections: int, memory_budget: int) -> int:
    """Samples per chunk so that the connected configurations of a chunk and the
    network's activations stay under ``memory_budget`` bytes (a rough model: a few
    hundred bytes of activations per site of each configuration)."""
    per_sample = max(1, max_connections) * n_sites * 512
    return max(1, memory_budget // per_sample)


@torch.no_grad()
def connected_log_psi_reference(model, spins: torch.Tensor, flips: torch.Tensor, counts: torch.Tensor,
                                max_rows: int | None = None) -> torch.Tensor:
    """``log psi`` of every connected configuration ``[B, M]`` complex (padding rows
    hold 0). Evaluates only the valid rows, at most ``max_rows`` of them per forward
    pass (None: all at once; 256 samples of a 21x21 Ising model are 112896 rows, whose
    activations do not fit in 80 GB in one pass)."""
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be positive or None, got {max_rows}")
    batch, m, _ = flips.shape
    mask = torch.arange(m, device=spins.device)[None, :] < counts[:, None]
    connected = apply_flips(spins, flips)[mask]  # [V, N]
    if not connected.shape[0]:
        values = torch.zeros(0, device=spins.device)
    elif max_rows is None or connected.shape[0] <= max_rows:
        values = model.log_psi(connected)
    else:
        values = torch.cat([model.log_psi(part) for part in connected.split(max_rows)])
    out_dtype = torch.complex128 if values.dtype == torch.complex128 else torch.complex64
    out = torch.zeros(batch, m, dtype=out_dtype, device=spins.device)
    out[mask] = values.to(out_dtype)
    return out


@torch.no_grad()
def local_energy(
    model,
    hamiltonian: Hamiltonian,
    spins: torch.Tensor,
    log_psi: torch.Tensor | None = None,
    memory_budget: int = 1 << 30,
    use_kernel: bool = True,
    cache=None,
) -> torch.Tensor:
    """``E_loc`` as complex128 ``[B]``. ``log_psi`` of the samples may be passed when
    the sampler already computed it, and ``cache``, the sampler's activations of these
    spins (``exact_sample(..., return_cache=True)``), when the kernel path runs: then
    the connected walks need no forward walk of the samples (ignored on the reference
    path)."""
    spins = check_spins(spins, hamiltonian.n_sites)
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be positive, got {memory_budget}")
    batch = spins.shape[0]
    kernel = ops.connected_log_psi_path(model, hamiltonian) if use_kernel else None
    if log_psi is None:
        # the kernel sums the per-site log-conditionals in float64: the ratios below
        # then keep float64 accuracy even for a float32 network
        log_psi = ops.pixelcnn_log_psi_kernel(model, spins) if kernel is not None else model.log_psi(spins)
    if log_psi.shape != (batch,):
        raise ValueError(f"log_psi must have shape [{batch}], got {list(log_psi.shape)}")
    diag = hamiltonian.diagonal(spins).to(torch.complex128)
    if hamiltonian.max_connections == 0 or batch == 0:
        _last_path["path"] = "diagonal"
        return diag
    # The kernel chunks its own work to the memory budget; the reference is chunked here.
    rows = batch if kernel is not None else _chunk_rows(hamiltonian.n_sites, hamiltonian.max_connections, memory_budget)
    out = torch.empty(batch, dtype=torch.complex128, device=spins.device)
    for start in range(0, batch, rows):
        chunk = spins[start : start + rows]
        conn = hamiltonian.connections(chunk)
        if kernel is not None:
            connected = ops.connected_log_psi(model, chunk, conn.flips, conn.counts, memory_budget=memory_budget,
                                              cache=cache)
        else:
            connected = connected_log_psi_reference(model, chunk, conn.flips, conn.counts)
        ratio = torch.exp(connected.to(torch.complex128) - log_psi[start : start + rows, None].to(torch.complex128))
        ratio = torch.where(conn.mask, ratio, torch.zeros_like(ratio))
        out[start : start + rows] = diag[start : start + rows] + (conn.elements.to(torch.complex128) * ratio).sum(1)
    _last_path["path"] = kernel or "reference"
    if not torch.isfinite(out.real).all():
        raise FloatingPointError("non-finite local energy: the model gives psi(s) = 0 for a sampled s or overflows")
    return out
