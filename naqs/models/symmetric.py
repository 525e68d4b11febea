"""Symmetrization by self-ensemble (NAQS paper, eqs. B1-B2).

For a normalized autoregressive model f and a group of transformations T (site
permutations, optionally with a global spin inversion)::

    Re log psi(s) = 1/2 log( 1/|T| sum_T exp(2 Re f(T s)) )        (B1)
    Im log psi(s) = arg( sum_T exp(i Im f(T s)) )                 (B2)

|psi|^2 is the mixture (1/|T|) sum_T |f(T s)|^2, hence exactly normalized, and sampling
is exact: draw T uniformly, draw s0 ~ |f|^2, return s = T^-1 s0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["SymmetricModel"]


class SymmetricModel(nn.Module):
    """Self-ensemble of ``base`` over ``perms`` [G, N] (``(T s)[i] = s[perm[i]]``) with
    optional spin inversions ``flips`` [G] bool."""

    kind = "symmetric"

    def __init__(self, base: nn.Module, perms, flips=None):
        super().__init__()
        perms = torch.as_tensor(np.asarray(perms), dtype=torch.int64)
        if perms.dim() != 2 or perms.shape[1] != base.n_sites:
            raise ValueError(f"perms must have shape [G, {base.n_sites}], got {list(perms.shape)}")
        for g, p in enumerate(perms):
            if not torch.equal(torch.sort(p).values, torch.arange(base.n_sites)):
                raise ValueError(f"perms[{g}] is not a permutation of the {base.n_sites} sites")
        flips = torch.zeros(len(perms), dtype=torch.bool) if flips is None else torch.as_tensor(flips, dtype=torch.bool)
        if flips.shape != (len(perms),):
            raise ValueError(f"flips must have shape [{len(perms)}], got {list(flips.shape)}")
        magnetization = getattr(base, "magnetization", None)
        if flips.any() and magnetization not in (None, 0):
            raise ValueError(f"spin inversion does not keep the sector magnetization={magnetization}")
        self.base = base
        self.n_sites = base.n_sites
        self.magnetization = magnetization
        self.register_buffer("perms", perms, persistent=False)
        self.register_buffer("inverse_perms", torch.argsort(perms, dim=1), persistent=False)
        self.register_buffer("flips", flips, persistent=False)

    @property
    def n_transforms(self) -> int:
        return int(self.perms.shape[0])

    def transform(self, spins: torch.Tensor) -> torch.Tensor:
        """All images ``T s``: ``[G, B, N]``."""
        images = spins[:, self.perms].transpose(0, 1)  # [G, B, N]
        sign = torch.where(self.flips, -1, 1).to(spins.dtype)[:, None, None]
        return images * sign

    def log_psi(self, spins: torch.Tensor) -> torch.Tensor:
        g = self.n_transforms
        batch = spins.shape[0]
        images = self.transform(spins).reshape(g * batch, -1)
        values = self.base.log_psi(images).reshape(g, batch)
        re = 0.5 * (torch.logsumexp(2.0 * values.real, dim=0) - math.log(g))
        im = torch.angle(torch.exp(1j * values.imag).sum(dim=0))
        return torch.complex(re, im)

    def forward(self, spins):
        return self.log_psi(spins)

    @torch.no_grad()
    def sample_reference(self, n_samples, generator=None, uniforms=None, transforms=None):
        """Exact samples: ``transforms`` [n] int64 (drawn uniformly from ``generator``
        when not given), base samples from ``uniforms``, then ``s = T^-1 s0``."""
        dev = self.perms.device
        if transforms is None:
            gen_device = generator.device if generator is not None else dev
            transforms = torch.randint(0, self.n_transforms, (n_samples,), generator=generator, device=gen_device)
        transforms = torch.as_tensor(transforms, dtype=torch.int64, device=dev)
        if transforms.shape != (n_samples,) or (transforms < 0).any() or (transforms >= self.n_transforms).any():
            raise ValueError(f"transforms must be {n_samples} indices in [0, {self.n_transforms})")
        base_spins, _ = self.base.sample_reference(n_samples, generator=generator, uniforms=uniforms)
        return self.untransform(base_spins, transforms), None

    def untransform(self, base_spins: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
        """``s = T^-1 s0`` for each row: ``s = sign * s0[:, inverse_perm]``."""
        inv = self.inverse_perms[transforms]  # [n, N]
        spins = base_spins.gather(1, inv)
        sign = torch.where(self.flips[transforms], -1, 1).to(spins.dtype)[:, None]
        return spins * sign

    def sample(self, n_samples, generator=None, uniforms=None, transforms=None):
        from ..sampling import exact_sample

        return exact_sample(self, n_samples, generator=generator, uniforms=uniforms, transforms=transforms)

    def describe(self) -> dict:
        d = dict(self.base.describe())
        d["symmetrized"] = {"transforms": self.n_transforms, "spin_flip": bool(self.flips.any())}
        return d
