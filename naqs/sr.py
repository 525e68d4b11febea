"""Stochastic reconfiguration (SR) for the generalization study (Fig. 2d-f).

The variational state is two 2-layer dense networks (N -> 64 -> 64), as in the paper:

    log psi(s) = A(s) + i * phase(z(s)),   z = the sign net's 2 logits

with ``A`` the amplitude net (one output, log|psi| up to a constant). Two phase maps:

- ``phase="logit"`` (default): phase = z_minus - z_plus, the unbounded logit difference;
- ``phase="softmax"``: phase = pi * p_minus, p = softmax(z), the bounded relaxation of the
  supervised sign classifier (p_minus -> 1 gives psi < 0).

Measured on the 3x4 open Heisenberg model (J2 = 0, 512 samples, lr 0.03): "logit"
reaches the ED energy to 0.03% and overlap 0.9999; "softmax" stalls at E ~ -16.3 versus
-26.77 (overlap 0.4) - its gradient vanishes as p saturates, trapping wrong signs.

SR step (real parameters theta, samples s_k ~ |psi|^2 with Metropolis exchange moves in
the zero-magnetization sector):

    O_k = d log psi(s_k) / d theta          (complex, [Ns, P])
    S   = Re <(O - <O>)^+ (O - <O>)>          F = Re <(O - <O>)^+ (E_loc - <E_loc>)>
    theta <- theta - lr * (S + shift * 1)^-1 F

The linear system is solved directly in parameter space for P <= 2048, else in sample
space (the push-through identity (A^T A + l)^-1 A^T b = A^T (A A^T + l)^-1 b with the
[2 Ns, P] real matrix A = [Re O~; Im O~] / sqrt(Ns): the same solution, a 2Ns x 2Ns
system), or by conjugate gradients (``solver="cg"``, matrix-free).

Local energies use the Hamiltonian's ``diagonal``/``connections`` and
:func:`naqs.hamiltonian.apply_flips`. Samples come from
:func:`naqs.sampling.metropolis_sample` (exchange moves in the sz = 0 sector).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .sampling import metropolis_sample
from .models.dense import DenseNet

__all__ = [
    "SignAmplitudeState",
    "local_energies",
    "sr_update",
    "SRResult",
    "run_sr",
    "full_basis_overlap",
    "run_sr_sweep",
]


# ============================================================== variational state
class SignAmplitudeState(nn.Module):
    """Two dense nets (``hidden`` layers each): amplitude -> log|psi|, sign -> phase
    pi * p_minus (see module doc)."""

    def __init__(self, n_sites: int, hidden: tuple[int, ...] = (64, 64), activation: str = "tanh",
                 phase: str = "softmax"):
        super().__init__()
        if phase not in ("softmax", "logit"):
            raise ValueError(f"phase must be 'softmax' or 'logit', got {phase!r}")
        self.n_sites = n_sites
        self.phase = phase
        self.amplitude = DenseNet(n_sites, hidden, 1, activation)
        self.sign = DenseNet(n_sites, hidden, 2, activation)

    def init_parameters(self, generator=None) -> "SignAmplitudeState":
        self.amplitude.init_parameters(generator)
        self.sign.init_parameters(generator)
        # A small output layer starts the state near uniform amplitudes: Metropolis mixes
        # and the first SR steps are not dominated by a random amplitude landscape.
        with torch.no_grad():
            self.amplitude.layers[-1].weight.mul_(0.1)
        return self

    def forward(self, spins: torch.Tensor) -> torch.Tensor:
        x = spins.to(torch.float64)
        log_amp = self.amplitude(x)[..., 0]
        return torch.complex(log_amp, self.phase_of(self.sign(x)))

    def phase_of(self, logits: torch.Tensor) -> torch.Tensor:
        if self.phase == "softmax":
            return math.pi * torch.softmax(logits, dim=-1)[..., 1]
        # "logit": the unbounded logit difference as the phase (no saturation; the sign
        # read off is sign(cos(phase)))
        return logits[..., 1] - logits[..., 0]


# ============================================================== local energy and SR step
def local_energies(hamiltonian, log_psi, spins: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """E_loc(s) = <s|H|s> + sum_s' <s|H|s'> psi(s') / psi(s), complex ``[B]``."""
    from .hamiltonian import apply_flips

    out = []
    for start in range(0, spins.shape[0], chunk):
        s = spins[start : start + chunk]
        conn = hamiltonian.connections(s)
        diag = hamiltonian.diagonal(s).to(torch.complex128)
        b, m = conn.elements.shape
        if m == 0:
            out.append(diag)
            continue
        targets = apply_flips(s, conn.flips).reshape(b * m, -1)
        with torch.no_grad():
            ratio = torch.exp(log_psi(targets).reshape(b, m).to(torch.complex128) - log_psi(s).to(torch.complex128)[:, None])
        elements = torch.where(conn.mask, conn.elements, torch.zeros_like(conn.elements)).to(torch.complex128)
        out.append(diag + (elements * ratio).sum(1))
    return torch.cat(out)


def _per_sample_jacobian_full(model: nn.Module, spins: torch.Tensor, chunk: int = 512):
    """Re and Im of d log psi(s) / d theta, each ``[B, P]`` float64 (vmap of jacrev)."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, s):
        value = functional_call(model, p, (s[None],))[0]
        return torch.stack([value.real, value.imag])

    jac_fn = vmap(jacrev(f), in_dims=(None, 0))
    re_parts, im_parts = [], []
    for start in range(0, spins.shape[0], chunk):
        jac = jac_fn(params, spins[start : start + chunk])
        flat = torch.cat([jac[k].reshape(jac[k].shape[0], 2, -1) for k in params], dim=2)  # [b, 2, P]
        re_parts.append(flat[:, 0])
        im_parts.append(flat[:, 1])
    return torch.cat(re_parts), torch.cat(im_parts)


def _cg(matvec, b, x0=None, tol=1e-8, max_iter=200):
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x)
    p = r.clone()
    rs = r @ r
    for _ in range(max_iter):
        if rs.sqrt() <= tol * b.norm().clamp_min(1e-300):
            break
        ap = matvec(p)
        alpha = rs / (p @ ap)
        x += alpha * p
        r -= alpha * ap
        rs_new = r @ r
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


def _solve_sr(a: torch.Tensor, b: torch.Tensor, diag_shift: float, solver: str) -> torch.Tensor:
    """(A^T A + shift)^-1 A^T b for a real ``[M, P]`` matrix A (see module doc)."""
    m, p = a.shape
    if solver == "auto":
        solver = "direct" if p <= 2048 else ("sample" if m <= 8192 else "cg")
    if solver == "direct":
        s = a.T @ a + diag_shift * torch.eye(p, dtype=a.dtype, device=a.device)
        return torch.linalg.solve(s, a.T @ b)
    if solver == "sample":
        k = a @ a.T + diag_shift * torch.eye(m, dtype=a.dtype, device=a.device)
        return a.T @ torch.linalg.solve(k, b)
    if solver == "cg":
        return _cg(lambda v: a.T @ (a @ v) + diag_shift * v, a.T @ b)
    raise ValueError(f"unknown SR solver {solver!r}; use auto, direct, sample or cg")


def sr_update(o_re: torch.Tensor, o_im: torch.Tensor, e_loc: torch.Tensor, diag_shift: float, solver: str = "auto"):
    """The SR direction (S + shift)^-1 F from per-sample log-derivatives ``[Ns, P]`` and
    local energies ``[Ns]`` (equal weights). Returns ``(delta [P], force F [P])``."""
    ns, p = o_re.shape
    a = torch.cat([o_re - o_re.mean(0), o_im - o_im.mean(0)]) / math.sqrt(ns)  # [2Ns, P]
    eps = e_loc - e_loc.mean()
    b = torch.cat([eps.real, eps.imag]) / math.sqrt(ns)  # [2Ns]
    return _solve_sr(a, b, diag_shift, solver), a.T @ b


def _sr_update_split(model: "SignAmplitudeState", spins, e_loc, diag_shift, solver):
    """SR direction for :class:`SignAmplitudeState`, using its structure: the amplitude
    parameters only move Re log psi and the sign parameters only Im log psi, so
    Re(O_a^* O_s) = 0 and S is block-diagonal. Two real systems of half the size
    (4x fewer flops than :func:`sr_update` on the stacked matrix; the same solution)."""
    ns = spins.shape[0]
    eps = e_loc - e_loc.mean()
    deltas = []
    for net, fn, part in ((model.amplitude, lambda out: out[..., 0], eps.real),
                          (model.sign, model.phase_of, eps.imag)):
        jac = _net_jacobian(net, fn, spins)
        a = (jac - jac.mean(0)) / math.sqrt(ns)
        deltas.append(_solve_sr(a, part / math.sqrt(ns), diag_shift, solver))
    return torch.cat(deltas)


def _net_jacobian(net: nn.Module, fn, spins: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``[B, P]`` per-sample gradient of the real scalar fn(net(s)) (vmap of grad)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(p, s):
        return fn(functional_call(net, p, (s[None].to(torch.float64),)))[0]

    g = vmap(grad(f), in_dims=(None, 0))
    parts = []
    for start in range(0, spins.shape[0], chunk):
        jac = g(params, spins[start : start + chunk])
        parts.append(torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in params], dim=1))
    return torch.cat(parts)


# ============================================================== driver
@dataclass
class SRResult:
    energies: list  # per step: mean Re E_loc (Pauli units when the Hamiltonian is)
    energy: float  # mean over the last 10% of the steps
    energy_error: float  # standard error of that mean (steps treated as independent)
    acceptance: float
    steps: int
    seconds: float
    units: str
    model: SignAmplitudeState = field(repr=False, default=None)


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash leaves either the old or the new checkpoint, never half of one


def run_sr(hamiltonian, *, steps: int = 500, n_samples: int = 1024, n_chains: int = 64, lr: float = 0.05,
           diag_shift: float = 1e-3, seed: int = 0, device="cpu", solver: str = "auto", max_update_norm: float = 1.0,
           checkpoint: str | Path | None = None, checkpoint_every: int = 50, progress: bool = False,
           hidden: tuple[int, ...] = (64, 64), phase: str = "logit", cpu_threads: int | None = 1) -> SRResult:
    """Optimize a :class:`SignAmplitudeState` by SR in the zero-magnetization sector.

    With ``checkpoint`` the model, the optimizer state (step, lr, diag shift), the
    Metropolis chains, the generator state and the energy history are saved atomically
    every ``checkpoint_every`` steps, and a run finding the file resumes from it.
    ``max_update_norm`` caps |lr * delta| (a guard against the rare sample set with a
    near-singular S)."""
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu" and cpu_threads:
        # small per-sample matmuls: OpenMP fork/join dominates; measured 4x faster on 1 thread
        torch.set_num_threads(cpu_threads)
    try:
        return _run_sr(hamiltonian, steps, n_samples, n_chains, lr, diag_shift, seed, device, solver,
                       max_update_norm, checkpoint, checkpoint_every, progress, hidden, phase)
    finally:
        torch.set_num_threads(threads)


def _run_sr(hamiltonian, steps, n_samples, n_chains, lr, diag_shift, seed, device, solver, max_update_norm,
            checkpoint, checkpoint_every, progress, hidden, phase) -> SRResult:
    from tqdm.auto import tqdm

    n = hamiltonian.n_sites
    if n % 2:
        raise ValueError(f"SR runs in the zero-magnetization sector: needs an even number of sites, got {n}")
    if steps < 1 or n_samples < 2:
        raise ValueError(f"need steps >= 1 and n_samples >= 2, got {steps}, {n_samples}")
    if not (lr > 0 and diag_shift >= 0):
        raise ValueError(f"need lr > 0 and diag_shift >= 0, got {lr}, {diag_shift}")
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    model = SignAmplitudeState(n, hidden, phase=phase).init_parameters(torch.Generator().manual_seed(int(seed))).to(device, torch.float64)
    start_step, energies, chains, accept_sum = 0, [], None, 0.0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        start_step = state["optimizer"]["step"]
        energies = state["energies"]
        chains = state["chains"].to(device)
        accept_sum = state["acceptance_sum"]
        gen.set_state(state["generator"])
    # the order of _sr_update_split's delta: amplitude parameters, then sign parameters
    params = list(model.amplitude.parameters()) + list(model.sign.parameters())
    started = time.perf_counter()
    bar = tqdm(range(start_step, steps), disable=not progress, desc=f"SR J2={getattr(hamiltonian, 'j2', '?')}", leave=False)
    for step in bar:
        # burn in 10 sweeps' worth of moves at the start, N moves when continuing chains
        sample = metropolis_sample(model, n, n_samples, n_chains=n_chains, move="exchange", magnetization=0,
                                   burn_in=10 * n if chains is None else n, thin=max(1, n // 2),
                                   generator=gen, initial=chains, device=device)
        chains = sample.last
        accept_sum += sample.acceptance
        spins = sample.samples
        e_loc = local_energies(hamiltonian, model, spins)
        delta = _sr_update_split(model, spins, e_loc, diag_shift, solver)
        update = lr * delta
        norm = float(update.norm())
        if norm > max_update_norm:
            update *= max_update_norm / norm
        with torch.no_grad():
            offset = 0
            for p in params:
                p -= update[offset : offset + p.numel()].view_as(p).to(p.dtype)
                offset += p.numel()
        energies.append(float(e_loc.real.mean()))
        bar.set_postfix(E=energies[-1], acc=sample.acceptance)
        done = step + 1
        if ckpt is not None and (done % checkpoint_every == 0 or done == steps):
            _save_atomic({"model": model.state_dict(),
                          "optimizer": {"step": done, "lr": lr, "diag_shift": diag_shift, "solver": solver},
                          "energies": energies, "chains": chains.cpu(), "acceptance_sum": accept_sum,
                          "generator": gen.get_state(), "units": hamiltonian.units}, ckpt)
    tail = np.asarray(energies[-max(1, len(energies) // 10):])
    err = float(tail.std(ddof=1) / math.sqrt(len(tail))) if len(tail) > 1 else 0.0
    return SRResult(energies, float(tail.mean()), err, accept_sum / max(1, len(energies)), len(energies),
                    time.perf_counter() - started, hamiltonian.units, model)


@torch.no_grad()
def full_basis_overlap(model, state: np.ndarray, basis: np.ndarray, n_sites: int, chunk: int = 1 << 16) -> float:
    """|<psi_exact|psi_model>| / ||psi_model|| over the sector basis (``state`` normalized)."""
    from .study import basis_to_spins

    device = next(model.parameters()).device
    logs = []
    for start in range(0, len(basis), chunk):
        logs.append(model(basis_to_spins(basis[start : start + chunk], n_sites).to(device)).to(torch.complex128).cpu())
    log_psi = torch.cat(logs)
    psi = torch.exp(log_psi - log_psi.real.max())
    exact = torch.as_tensor(state, dtype=torch.complex128)
    return float((exact * psi).sum().abs() / psi.abs().square().sum().sqrt())


SR_FIELDS = ["cluster", "n_sites", "j1", "j2", "repeat", "seed", "steps", "n_samples", "lr", "diag_shift", "energy",
             "energy_error", "exact_energy", "relative_error", "overlap", "acceptance", "seconds", "units", "device"]


def run_sr_sweep(cluster: str, j2_values, out, *, repeats: int = 1, steps: int = 500, n_samples: int = 1024,
                 n_chains: int = 64, lr: float = 0.05, diag_shift: float = 1e-3, seed: int = 0, device="cpu", checkpoint_every: int = 50,
                 progress: bool = True, cache_dir=None) -> Path:
    """Fig. 2d-f: SR at each J2, overlap with the ED ground state. Appends to
    ``out/sr.csv`` (rows present are skipped) and checkpoints each run under
    ``out/checkpoints/`` (an interrupted run resumes from its last checkpoint)."""
    from .hamiltonian import Heisenberg
    from .study import ground_state, parse_j2, read_rows, resolve_lattice

    lattice = resolve_lattice(cluster)
    out = Path(out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    path = out / "sr.csv"
    done = {(r["cluster"], f"{float(r['j2']):.6g}", int(r["repeat"])) for r in read_rows(path)}
    for j2 in parse_j2(j2_values):
        for rep in range(repeats):
            if (cluster, f"{j2:.6g}", rep) in done:
                continue
            ham = Heisenberg(lattice, 1.0, j2, units="pauli")
            gs = ground_state(ham, device=str(device), cache_dir=cache_dir, progress=progress)
            run_seed = seed * 1000 + rep
            result = run_sr(ham, steps=steps, n_samples=n_samples, n_chains=n_chains, lr=lr, diag_shift=diag_shift, seed=run_seed,
                            device=device, checkpoint=out / "checkpoints" / f"sr_{cluster}_j2{j2:g}_r{rep}.pt",
                            checkpoint_every=checkpoint_every, progress=progress)
            overlap = full_basis_overlap(result.model, gs.state, gs.basis, lattice.n_sites)
            row = dict(cluster=cluster, n_sites=lattice.n_sites, j1=1.0, j2=j2, repeat=rep, seed=run_seed, steps=steps,
                       n_samples=n_samples, lr=lr, diag_shift=diag_shift, energy=f"{result.energy:.8g}",
                       energy_error=f"{result.energy_error:.3g}", exact_energy=f"{gs.energy:.10g}",
                       relative_error=f"{abs((result.energy - gs.energy) / gs.energy):.4g}", overlap=f"{overlap:.6f}",
                       acceptance=f"{result.acceptance:.3f}", seconds=f"{result.seconds:.1f}", units="pauli",
                       device=str(device))
            new = not path.exists()
            with open(path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=SR_FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
    (out / "sr.json").write_text(json.dumps({"command": "sr", "cluster": cluster, "j2": parse_j2(j2_values),
                                             "repeats": repeats, "steps": steps, "n_samples": n_samples,
                                             "n_chains": n_chains, "lr": lr,
                                             "diag_shift": diag_shift, "seed": seed, "device": str(device),
                                             "units": "pauli"}, indent=2) + "\n")
    return path
