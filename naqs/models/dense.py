"""Dense (fully connected) networks of the generalization study.

Input: a configuration of +1/-1 spins as float ``[B, N]``. Output ``[B, n_out]``:
2 logits for a sign classifier (class 0 = "+", class 1 = "-"), or 1 number (log|psi|)
for an amplitude regressor.

- ``dense1``: N -> 64 -> n_out (one hidden layer);
- ``dense2``: N -> 64 -> 64 -> n_out (two hidden layers).

Parameters are initialized from an explicit ``torch.Generator`` (``init_parameters``),
so a fit is reproducible from its seed and many fits can be stacked for ``torch.func``
vectorization without touching the global RNG.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DenseNet", "init_linear_", "ACTIVATIONS"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def init_linear_(layer: nn.Module, generator: torch.Generator | None) -> None:
    """PyTorch's default init (uniform in +-1/sqrt(fan_in) for weight and bias) but with
    an explicit generator. ``layer`` is an ``nn.Linear`` or ``nn.Conv2d``."""
    weight = layer.weight
    fan_in = weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.copy_((torch.rand(weight.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
        if layer.bias is not None:
            layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)


class DenseNet(nn.Module):
    """Multilayer perceptron ``N -> hidden[0] -> ... -> n_out`` with ``activation``
    between layers (none after the last)."""

    def __init__(self, n_sites: int, hidden: tuple[int, ...] = (64,), n_out: int = 2, activation: str = "relu"):
        super().__init__()
        if n_sites < 1:
            raise ValueError(f"DenseNet needs n_sites >= 1, got {n_sites}")
        if n_out < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"DenseNet layer widths must be positive, got hidden={hidden}, n_out={n_out}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}")
        self.n_sites = n_sites
        widths = [n_sites, *hidden, n_out]
        layers: list[nn.Module] = []
        for k in range(len(widths) - 1):
            layers.append(nn.Linear(widths[k], widths[k + 1]))
            if k < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)

    def init_parameters(self, generator: torch.Generator | None = None) -> "DenseNet":
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                init_linear_(layer, generator)
        return self

    def stacked_forward(self, params: dict[str, torch.Tensor], spins: torch.Tensor) -> torch.Tensor:
        """Forward of R stacked copies of this network (``torch.func.stack_module_state``
        layout: every parameter has a leading dimension R) on spins ``[R, B, N]`` or shared
        ``[B, N]``: ``[R, B, n_out]``. The same function as ``vmap(functional_call)``, as
        one batched matmul per layer: the many small fits of the study are dominated by
        per-call dispatch on a GPU, and vmap adds its own."""
        if spins.shape[-1] != self.n_sites:
            raise ValueError(f"DenseNet expects [..., {self.n_sites}] spins, got {list(spins.shape)}")
        first = params["layers.0.weight"]
        h = spins.to(first.dtype)
        if h.dim() == 2:
            h = h.expand(first.shape[0], *h.shape)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, nn.Linear):
                weight, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
                h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            else:
                h = layer(h)
        return h

    def forward(self, spins: torch.Tensor) -> torch.Tensor:
        if spins.shape[-1] != self.n_sites:
            raise ValueError(f"DenseNet expects [..., {self.n_sites}] spins, got {list(spins.shape)}")
        return self.layers(spins.to(self.layers[0].weight.dtype))
