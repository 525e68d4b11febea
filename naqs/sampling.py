"""Samplers: exact autoregressive sampling and the Metropolis baseline.

``exact_sample`` draws i.i.d. samples from |psi|^2 of an autoregressive model. It uses the
row-cached kernel of naqs._C (one forward pass of work) when the model and device have
one, else the reference (N forward passes). Both take the same uniform numbers, so they
return identical samples given the same ``uniforms`` (tests hold them to that).

``metropolis_sample`` is the Markov-chain baseline the NAQS paper compares with: many
chains, single-spin flips (``move="flip"``) or exchanges of two opposite spins that keep
the magnetization (``move="exchange"``), burn-in, thinning, acceptance rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import ops
from .models.pixelcnn import PixelCNN, check_magnetization
from .models.symmetric import SymmetricModel

__all__ = ["exact_sample", "last_sampler_path", "metropolis_sample", "MetropolisResult"]

_last_path = {"exact": "none"}


def last_sampler_path() -> str:
    """Which implementation the last ``exact_sample`` call used: ``"kernel-cpu"``,
    ``"kernel-cuda"``, ``"kernel-cuda-<math>"`` (tensor-core products) or
    ``"reference"``."""
    return _last_path["exact"]


def _base_pixelcnn(model) -> PixelCNN | None:
    base = model.base if isinstance(model, SymmetricModel) else model
    return base if isinstance(base, PixelCNN) else None


@torch.no_grad()
def exact_sample(
    model,
    n_samples: int,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
    transforms: torch.Tensor | None = None,
    use_kernel: bool = True,
    return_cache: bool = False,
):
    """Exact i.i.d. samples ``(spins int8 [n, N], log_psi complex [n])`` of a PixelCNN or
    a SymmetricModel around one. ``return_cache``: a third value, the sampling walk's
    activations (``ops.ActivationCache``) for ``local_energy(..., cache=)`` of these
    spins, or None where the kernel does not keep them (reference path, SymmetricModel,
    a cache over the memory budget)."""
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    symmetric = isinstance(model, SymmetricModel)
    base = _base_pixelcnn(model)
    if base is None:
        raise TypeError(f"exact sampling needs a PixelCNN (or SymmetricModel of one), got {type(model).__name__}")
    dev = base.out_weight.device
    if symmetric and transforms is None:
        gen_device = generator.device if generator is not None else dev
        transforms = torch.randint(0, model.n_transforms, (n_samples,), generator=generator, device=gen_device)
    from .models.pixelcnn import _draw_uniforms

    uniforms = _draw_uniforms(n_samples, base.n_sites, generator, uniforms, dev)
    path = ops.pixelcnn_sample_path(base, n_samples) if use_kernel else None
    cache = None
    if path is not None:
        if return_cache and not symmetric and ops.can_keep_activations(base, n_samples):
            spins, base_log_psi, cache = ops.pixelcnn_sample(base, uniforms, keep_activations=True)
        else:
            spins, base_log_psi = ops.pixelcnn_sample(base, uniforms)
        _last_path["exact"] = path
    else:
        spins, base_log_psi = base.sample_reference(n_samples, uniforms=uniforms)
        _last_path["exact"] = "reference"
    if not symmetric:
        if base.sign_rule is not None and path is not None:
            count = ((spins > 0).to(base.sign_rule.dtype) * base.sign_rule).sum(1)
            base_log_psi = base_log_psi + 1j * math.pi * count.to(base_log_psi.real.dtype)
        return (spins, base_log_psi, cache) if return_cache else (spins, base_log_psi)
    transforms = torch.as_tensor(transforms, dtype=torch.int64, device=dev)
    if transforms.shape != (n_samples,) or (transforms < 0).any() or (transforms >= model.n_transforms).any():
        raise ValueError(f"transforms must be {n_samples} indices in [0, {model.n_transforms})")
    spins = model.untransform(spins, transforms)
    log_psi = ops.pixelcnn_log_psi_kernel(model, spins) if path is not None else model.log_psi(spins)
    return (spins, log_psi, None) if return_cache else (spins, log_psi)


# ---------------------------------------------------------------------- Metropolis
@dataclass
class MetropolisResult:
    samples: torch.Tensor  # [n_samples, N] int8
    acceptance: float
    last: torch.Tensor  # [n_chains, N] int8, the chains' final states (to continue them)
    log_psi: torch.Tensor  # [n_samples] complex


def _random_configs(n_chains, n_sites, magnetization, generator, device):
    if magnetization is None:
        bits = torch.randint(0, 2, (n_chains, n_sites), generator=generator, device=device)
        return (bits * 2 - 1).to(torch.int8)
    n_up = (n_sites + magnetization) // 2
    keys = torch.rand(n_chains, n_sites, generator=generator, device=device)
    order = torch.argsort(keys, dim=1)
    spins = torch.full((n_chains, n_sites), -1, dtype=torch.int8, device=device)
    spins.scatter_(1, order[:, :n_up], 1)
    return spins


@torch.no_grad()
def metropolis_sample(
    log_psi: Callable[[torch.Tensor], torch.Tensor],
    n_sites: int,
    n_samples: int,
    *,
    n_chains: int = 16,
    move: str = "flip",
    magnetization: int | None = None,
    burn_in: int = 100,
    thin: int = 1,
    generator: torch.Generator | None = None,
    initial: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> MetropolisResult:
    """Metropolis-Hastings from |psi|^2 with ``n_chains`` parallel chains.

    One step proposes one move per chain; ``burn_in`` steps are discarded and a sample is
    kept every ``thin`` steps (the paper's k) until ``n_samples`` are collected (the last
    round may overshoot and is cut). ``move="exchange"`` swaps a random pair of opposite
    spins (keeps the magnetization; the chains start in ``magnetization`` or from
    ``initial``). Returns samples ordered step-major (all chains' samples of one step,
    then the next step's)."""
    if move not in ("flip", "exchange"):
        raise ValueError(f"move must be 'flip' or 'exchange', got {move!r}")
    if n_chains < 1 or n_samples < 0 or burn_in < 0 or thin < 1:
        raise ValueError(
            f"need n_chains >= 1, n_samples >= 0, burn_in >= 0, thin >= 1; got {n_chains}, {n_samples}, {burn_in}, {thin}"
        )
    check_magnetization(n_sites, magnetization)
    device = torch.device(device)
    gen_device = generator.device if generator is not None else device
    if initial is None:
        if move == "exchange" and magnetization is None:
            magnetization = n_sites % 2
        state = _random_configs(n_chains, n_sites, magnetization, generator, gen_device).to(device)
    else:
        if initial.shape != (n_chains, n_sites):
            raise ValueError(f"initial must have shape [{n_chains}, {n_sites}], got {list(initial.shape)}")
        state = initial.to(device=device, dtype=torch.int8).clone()
    if move == "exchange":
        n_up = (state > 0).sum(1)
        if ((n_up == 0) | (n_up == n_sites)).any():
            raise ValueError("exchange moves need at least one up and one down spin in every chain")
    current = log_psi(state)
    accepted = 0
    proposed = 0
    kept: list[torch.Tensor] = []
    kept_log: list[torch.Tensor] = []
    rows = torch.arange(n_chains, device=device)
    total_steps = burn_in + thin * math.ceil(n_samples / n_chains)
    for step in range(total_steps):
        proposal = state.clone()
        if move == "flip":
            site = torch.randint(0, n_sites, (n_chains,), generator=generator, device=gen_device).to(device)
            proposal[rows, site] = -proposal[rows, site]
        else:
            # pick a uniformly random up site and a uniformly random down site
            keys = torch.rand(n_chains, n_sites, generator=generator, device=gen_device).to(device)
            up_key = torch.where(state > 0, keys, torch.full_like(keys, -1.0))
            down_key = torch.where(state < 0, keys, torch.full_like(keys, -1.0))
            i = up_key.argmax(1)
            j = down_key.argmax(1)
            proposal[rows, i] = -1
            proposal[rows, j] = 1
        candidate = log_psi(proposal)
        log_ratio = 2.0 * (candidate.real - current.real).double()
        u = torch.rand(n_chains, generator=generator, dtype=torch.float64, device=gen_device).to(device)
        accept = torch.log(u) < log_ratio
        state = torch.where(accept[:, None], proposal, state)
        current = torch.where(accept, candidate, current)
        if step >= burn_in:
            accepted += int(accept.sum())
            proposed += n_chains
            if (step - burn_in + 1) % thin == 0:
                kept.append(state.clone())
                kept_log.append(current.clone())
    if kept:
        samples = torch.cat(kept)[:n_samples]
        logs = torch.cat(kept_log)[:n_samples]
    else:
        samples = torch.zeros(0, n_sites, dtype=torch.int8, device=device)
        logs = torch.zeros(0, dtype=torch.complex64, device=device)
    acceptance = accepted / proposed if proposed else float("nan")
    return MetropolisResult(samples, acceptance, state, logs)
