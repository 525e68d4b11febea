"""Translation-respecting convolutional network of the generalization study.

The configuration is laid out as an image on the cluster's translation grid, padded
circularly (the clusters are periodic, so a translation of the lattice is a cyclic shift
of the image), passed through two 5x5 convolutions ``C -> 32 -> 64`` with ReLU, averaged
over the grid (so the output is invariant under every grid translation) and mapped by a
linear layer ``64 -> n_out``.

Layouts (:func:`grid_layout`):

- square / triangle clusters have ``lattice.shape = (Lx, Ly)`` with ``site = x + Lx*y``:
  a 1-channel ``[Ly, Lx]`` image;
- kagome has no site grid, but its unit cells (3 sites: A, B, C) do: the configuration
  becomes a 3-channel image on the ``[Ly, Lx]`` cell grid, channel = sublattice. The
  cells are found from the site positions (triangular coordinates ``(a, b)``, cell
  ``(a // 2, b // 2)``, sublattice A=(0,0), B=(1,0), C=(0,1) mod 2), and the layout is
  accepted only if every cyclic shift of the cell grid is a symmetry of the cluster's
  J1/J2 graph - otherwise circular padding would not be the cluster's periodicity.
  ``kagome-30`` is shipped without positions: no layout, use a dense network there.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .dense import init_linear_

__all__ = ["CircularCNN", "grid_layout"]


def _is_symmetry(lattice, perm: np.ndarray) -> bool:
    return bool(lattice._preserves_edges(perm))


def grid_layout(lattice) -> np.ndarray:
    """``[C, Ly, Lx]`` int64 array: the site shown at channel c, row y, column x.

    Raises ``ValueError`` when the lattice has no translation grid (see module doc)."""
    if lattice.shape is not None:
        lx, ly = lattice.shape
        return np.arange(lx * ly, dtype=np.int64).reshape(1, ly, lx)
    pos = np.asarray(lattice.positions, dtype=float)
    # cartesian -> triangular coordinates (inverse of x = a + b/2, y = sqrt(3) b / 2)
    b = 2.0 * pos[:, 1] / np.sqrt(3.0)
    a = pos[:, 0] - b / 2.0
    ai, bi = np.rint(a).astype(np.int64), np.rint(b).astype(np.int64)
    if not (np.allclose(a, ai, atol=1e-6) and np.allclose(b, bi, atol=1e-6)) or lattice.n_sites % 3:
        raise ValueError(
            f"{lattice.name}: no grid shape and no kagome cell positions; the CNN needs a translation "
            "grid - use a dense architecture for this cluster"
        )
    ai -= ai.min()
    bi -= bi.min()
    sub_code = (ai % 2) + 2 * (bi % 2)  # A=0, B=1, C=2, (1,1) is not a kagome site
    sub = np.full(lattice.n_sites, -1)
    sub[sub_code == 0], sub[sub_code == 1], sub[sub_code == 2] = 0, 1, 2
    cx, cy = ai // 2, bi // 2
    lx, ly = int(cx.max()) + 1, int(cy.max()) + 1
    if np.any(sub < 0) or 3 * lx * ly != lattice.n_sites:
        raise ValueError(f"{lattice.name}: site positions do not form a rectangle of kagome unit cells")
    layout = -np.ones((3, ly, lx), dtype=np.int64)
    layout[sub, cy, cx] = np.arange(lattice.n_sites)
    if np.any(layout < 0):
        raise ValueError(f"{lattice.name}: site positions do not form a rectangle of kagome unit cells")
    # Every cyclic shift of the cell grid must be a lattice symmetry.
    for ty in range(ly):
        for tx in range(lx):
            shifted = np.roll(layout, shift=(-ty, -tx), axis=(1, 2))
            perm = np.empty(lattice.n_sites, dtype=np.int64)
            perm[layout.reshape(-1)] = shifted.reshape(-1)  # (T s)[i] = s[perm[i]]
            if not _is_symmetry(lattice, perm):
                raise ValueError(
                    f"{lattice.name}: the {lx}x{ly} cell grid is not the cluster's periodicity "
                    f"(shift ({tx}, {ty}) is not a symmetry); use a dense architecture"
                )
    return layout


class CircularCNN(nn.Module):
    """Two circular 5x5 convolutions ``C -> channels[0] -> channels[1]``, ReLU, global
    mean over the grid, linear ``channels[1] -> n_out``."""

    def __init__(self, lattice, n_out: int = 2, channels: tuple[int, int] = (32, 64), kernel: int = 5):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel size must be odd, got {kernel}")
        layout = torch.as_tensor(grid_layout(lattice))
        self.n_sites = lattice.n_sites
        c, ly, lx = layout.shape
        pad = kernel // 2
        self.register_buffer("layout", layout.reshape(-1), persistent=False)
        # Circular padding by gathering rows/columns modulo the grid: works for grids smaller
        # than the kernel (a 2-cell-wide kagome cluster), where F.pad(mode="circular") fails.
        self.register_buffer("rows", torch.arange(-pad, ly + pad) % ly, persistent=False)
        self.register_buffer("cols", torch.arange(-pad, lx + pad) % lx, persistent=False)
        self.image_shape = (c, ly, lx)
        self.conv1 = nn.Conv2d(c, channels[0], kernel)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel)
        self.head = nn.Linear(channels[1], n_out)

    def init_parameters(self, generator: torch.Generator | None = None) -> "CircularCNN":
        for layer in (self.conv1, self.conv2, self.head):
            init_linear_(layer, generator)
        return self

    def _pad(self, image: torch.Tensor) -> torch.Tensor:
        return image[..., self.rows, :][..., :, self.cols]

    def forward(self, spins: torch.Tensor) -> torch.Tensor:
        if spins.shape[-1] != self.n_sites:
            raise ValueError(f"CircularCNN expects [..., {self.n_sites}] spins, got {list(spins.shape)}")
        batch = spins.shape[:-1]
        x = spins.to(self.conv1.weight.dtype).reshape(-1, self.n_sites)[:, self.layout]
        x = x.reshape(-1, *self.image_shape)
        x = torch.relu(self.conv1(self._pad(x)))
        x = torch.relu(self.conv2(self._pad(x)))
        x = x.mean(dim=(-2, -1))
        return self.head(x).reshape(*batch, -1)
