"""The NAQS wave function: a two-branch (vertical / horizontal) PixelCNN whose outputs
are normalized complex conditional wave functions (NAQS paper, eqs. 2-3 and app. B.1).

Architecture (reference implementation; the kernels in csrc/pixelcnn compute the same
function from :meth:`PixelCNN.packed_weights`). A configuration is an ``[Ly, Lx]``
image of +-1, sites in row-major order (the autoregressive order). Block ``l``::

    v_l = relu(conv3x3(pad_top2_lr1(v_{l-1})) + bv_l)  (+ v_{l-1} for l > 0)
    h_l = relu(conv3x3(pad_top2_left2(cat(h_{l-1}, down(v_l)))) + bh_l)  (+ h_{l-1}, l > 0)

with ``v_{-1} = h_{-1} = s``; ``down`` shifts the vertical activations one row down (so
``h`` at row y only sees the vertical branch of rows < y); in block 0 the tap at the
current site ((3,3) in the paper's 1-based indexing) is zeroed for the input channel, the
only place where causality needs it. A final 1x1 convolution maps ``h_{L-1}`` to 4
channels, ``(log|.|, phase)`` for the local states ``-1`` and ``+1``; only the
magnitudes are normalized, in log space (eq. 3):
``log psi_i(s) = a_i(s) - 1/2 log sum_s' exp(2 a_i(s')) + i phi_i(s)``.

Choices, following the authors' public code: ReLU, residual blocks, weight
normalization (w = g v / |v| per output channel), no multiplicative gating, real
parameters. One convolution per branch per block keeps the row-cached kernels simple;
the depth (10-40 blocks) is where the capacity comes from.

Options: ``magnetization`` restricts the state to configurations with
``sum_i s_i == magnetization`` (the conditional of a choice that would make the sector
unreachable is masked and the rest renormalized, so the state stays exactly normalized
on the sector); ``sign_rule`` multiplies psi by a fixed sign
``(-1)^(number of up spins on the marked sites)`` (the Marshall sign when the marked
sites are one sublattice).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PixelCNN", "check_magnetization"]


def check_magnetization(n_sites: int, magnetization: int | None) -> None:
    if magnetization is None:
        return
    if not isinstance(magnetization, int):
        raise TypeError(f"magnetization must be an int (sum of +-1 spins) or None, got {magnetization!r}")
    if abs(magnetization) > n_sites or (n_sites + magnetization) % 2:
        raise ValueError(
            f"magnetization {magnetization} is impossible for {n_sites} spins: it must have the parity of N and |M| <= N"
        )


class PixelCNN(nn.Module):
    """NAQS PixelCNN on an ``Lx x Ly`` grid.

    Args:
        lx, ly: lattice shape (sites ``x + lx * y``).
        n_blocks: number of (vertical, horizontal) blocks, >= 1.
        channels: channels per branch, >= 1.
        magnetization: restrict to ``sum(s) == magnetization`` (None = all configurations).
        sign_rule: optional ``[N]`` 0/1 mask of sites whose up spins each contribute a
            factor -1 (Marshall sign rule with one sublattice marked).
    """

    kind = "pixelcnn"

    def __init__(
        self,
        lx: int,
        ly: int,
        n_blocks: int = 10,
        channels: int = 32,
        magnetization: int | None = None,
        sign_rule=None,
        output_scale: float = 1e-2,
    ):
        super().__init__()
        if lx < 1 or ly < 1:
            raise ValueError(f"PixelCNN needs a lattice of at least 1x1 sites, got {lx}x{ly}")
        if n_blocks < 1 or channels < 1:
            raise ValueError(f"PixelCNN needs n_blocks >= 1 and channels >= 1, got {n_blocks}, {channels}")
        check_magnetization(lx * ly, magnetization)
        self.lx, self.ly, self.n_blocks, self.channels = lx, ly, n_blocks, channels
        self.n_sites = lx * ly
        self.magnetization = magnetization
        c = channels
        self.v_dir = nn.ParameterList()
        self.v_gain = nn.ParameterList()
        self.v_bias = nn.ParameterList()
        self.h_dir = nn.ParameterList()
        self.h_gain = nn.ParameterList()
        self.h_bias = nn.ParameterList()
        for layer in range(n_blocks):
            cin_v = 1 if layer == 0 else c
            cin_h = (1 if layer == 0 else c) + c
            wv = torch.empty(c, cin_v, 3, 3)
            wh = torch.empty(c, cin_h, 3, 3)
            nn.init.kaiming_uniform_(wv, a=math.sqrt(5))
            nn.init.kaiming_uniform_(wh, a=math.sqrt(5))
            if layer == 0:
                wh[:, 0, 2, 2] = 0.0
            self.v_dir.append(nn.Parameter(wv))
            self.h_dir.append(nn.Parameter(wh))
            self.v_gain.append(nn.Parameter(wv.flatten(1).norm(dim=1)))
            self.h_gain.append(nn.Parameter(wh.flatten(1).norm(dim=1)))
            bound = 1.0 / math.sqrt(cin_v * 9)
            self.v_bias.append(nn.Parameter(torch.empty(c).uniform_(-bound, bound)))
            bound = 1.0 / math.sqrt(cin_h * 9)
            self.h_bias.append(nn.Parameter(torch.empty(c).uniform_(-bound, bound)))
        self.out_weight = nn.Parameter(torch.randn(4, c) * output_scale)
        self.out_bias = nn.Parameter(torch.zeros(4))
        mask = torch.ones(c, 1 + c, 3, 3)
        mask[:, 0, 2, 2] = 0.0  # block 0: the input channel must not see the current site
        self.register_buffer("first_h_mask", mask, persistent=False)
        if sign_rule is not None:
            sign_rule = torch.as_tensor(sign_rule, dtype=torch.float32).reshape(-1)
            if sign_rule.numel() != self.n_sites:
                raise ValueError(f"sign_rule must have {self.n_sites} entries, got {sign_rule.numel()}")
        self.register_buffer("sign_rule", sign_rule)
        # activation layout of raw_outputs: None = channels-last on CUDA, NCHW on the CPU;
        # True / False force one (a benchmark compares them)
        self.channels_last: bool | None = None

    # ------------------------------------------------------------------ weights
    @staticmethod
    def _weight_norm(direction: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """gain * direction / |direction| per output channel: direction ``[..., C, Cin, 3,
        3]``, gain ``[..., C]`` (a leading dimension: several blocks at once)."""
        norm = direction.flatten(-3).norm(dim=-1).clamp_min(1e-12)
        return direction * (gain / norm)[..., None, None, None]

    def layer_weights(self, layer: int):
        """Effective ``(wv [C,Cin,3,3], bv [C], wh [C,Cin_h,3,3], bh [C])`` of a block."""
        wv = self._weight_norm(self.v_dir[layer], self.v_gain[layer])
        direction = self.h_dir[layer]
        if layer == 0:
            direction = direction * self.first_h_mask.to(direction.dtype)
        wh = self._weight_norm(direction, self.h_gain[layer])
        return wv, self.v_bias[layer], wh, self.h_bias[layer]

    def packed_weights(self) -> dict:
        """Effective weights in the layout the kernels take (all contiguous, model dtype):

        - ``wv0`` [C, 1, 3, 3], ``wv`` [L-1, C, C, 3, 3], ``bv`` [L, C]
        - ``wh0`` [C, 1+C, 3, 3] (current-site tap of channel 0 zeroed),
          ``wh`` [L-1, C, 2C, 3, 3], ``bh`` [L, C]; horizontal input channels are
          ``[h_{l-1} channels..., down(v_l) channels...]``
        - ``wo`` [4, C], ``bo`` [4]: output channels (a(-1), a(+1), phi(-1), phi(+1))
        """
        # Blocks 1..L-1 share their shapes: their weight norms as one batched op each
        # (the kernels pack the weights on every call; block by block this was ~550 small
        # ops, milliseconds of host time on a GPU, in front of every walk)
        wv0, _, wh0, _ = self.layer_weights(0)
        c = self.channels
        dtype = self.out_weight.dtype
        dev = self.out_weight.device
        if self.n_blocks > 1:
            wv = self._weight_norm(torch.stack(list(self.v_dir)[1:]), torch.stack(list(self.v_gain)[1:]))
            wh = self._weight_norm(torch.stack(list(self.h_dir)[1:]), torch.stack(list(self.h_gain)[1:]))
        else:
            wv = torch.zeros(0, c, c, 3, 3, dtype=dtype, device=dev)
            wh = torch.zeros(0, c, 2 * c, 3, 3, dtype=dtype, device=dev)
        return {
            "wv0": wv0.contiguous(),
            "wv": wv.contiguous(),
            "bv": torch.stack(list(self.v_bias)).contiguous(),
            "wh0": wh0.contiguous(),
            "wh": wh.contiguous(),
            "bh": torch.stack(list(self.h_bias)).contiguous(),
            "wo": self.out_weight.contiguous(),
            "bo": self.out_bias.contiguous(),
        }

    # ------------------------------------------------------------------ forward
    def _check_input(self, spins: torch.Tensor) -> torch.Tensor:
        if not isinstance(spins, torch.Tensor):
            raise TypeError(f"spins must be a torch.Tensor, got {type(spins).__name__}")
        if spins.dim() != 2 or spins.shape[1] != self.n_sites:
            raise ValueError(f"spins must have shape [batch, {self.n_sites}], got {list(spins.shape)}")
        if spins.device != self.out_weight.device:
            raise ValueError(f"spins are on {spins.device} but the model is on {self.out_weight.device}")
        return spins

    def raw_outputs(self, spins: torch.Tensor) -> torch.Tensor:
        """Network outputs ``[B, N, 4]`` before normalization (one full forward pass).
        Entries of ``spins`` at sites not yet decided may hold anything (0 is fine):
        output i depends only on sites < i."""
        spins = self._check_input(spins)
        batch = spins.shape[0]
        dtype = self.out_weight.dtype
        x = spins.to(dtype).reshape(batch, 1, self.ly, self.lx)
        # On CUDA the activations stay channels-last (NHWC), the layout cuDNN's
        # convolutions run in: NCHW tensors are converted to it and back around every
        # convolution and its backward (~2 ms of a 12 ms gradient phase at 12x12, 10
        # blocks, 1000 samples; bench/grad_phase_ab.py). Same function, either layout.
        nhwc = x.is_cuda if self.channels_last is None else self.channels_last
        layout = torch.channels_last if nhwc else torch.contiguous_format
        x = x.contiguous(memory_format=layout)
        v_prev, h_prev = x, x
        for layer in range(self.n_blocks):
            wv, bv, wh, bh = self.layer_weights(layer)
            wv, wh = wv.contiguous(memory_format=layout), wh.contiguous(memory_format=layout)
            v = F.relu(F.conv2d(F.pad(v_prev, (1, 1, 2, 0)).contiguous(memory_format=layout), wv, bv))
            if layer > 0:
                v = v + v_prev
            v_down = F.pad(v, (0, 0, 1, 0))[:, :, : self.ly, :]
            h_in = F.pad(torch.cat([h_prev, v_down], dim=1), (2, 0, 2, 0)).contiguous(memory_format=layout)
            h = F.relu(F.conv2d(h_in, wh, bh))
            if layer > 0:
                h = h + h_prev
            v_prev, h_prev = v, h
        out = F.conv2d(h_prev, self.out_weight[:, :, None, None], self.out_bias)  # [B, 4, Ly, Lx]
        # [B, N, 4] (a view of NHWC storage)
        return out.permute(0, 2, 3, 1).reshape(batch, self.n_sites, 4)

    def _sector_mask(self, spins: torch.Tensor) -> torch.Tensor | None:
        """``[B, N, 2]`` bool: choices (-1, +1) at site i that keep the sector reachable."""
        if self.magnetization is None:
            return None
        n = self.n_sites
        up = (spins > 0).to(torch.int64)
        ups_before = torch.cumsum(up, dim=1) - up  # ups among sites < i
        target_up = (n + self.magnetization) // 2
        remaining = n - torch.arange(n, device=spins.device)  # sites i..N-1
        need = target_up - ups_before  # ups still needed, site i included
        allow_up = need >= 1
        allow_down = need <= remaining - 1
        return torch.stack([allow_down, allow_up], dim=-1)

    def normalize(self, raw: torch.Tensor, spins: torch.Tensor) -> torch.Tensor:
        """Normalized log-conditionals ``[B, N, 2]`` complex from raw outputs
        ``[B, N, 4]`` (eq. 3, with the sector mask applied before normalizing)."""
        log_mag = raw[..., 0:2]
        phase = raw[..., 2:4]
        mask = self._sector_mask(spins)
        if mask is not None:
            log_mag = log_mag.masked_fill(~mask, float("-inf"))
        log_norm = 0.5 * torch.logsumexp(2.0 * log_mag, dim=-1, keepdim=True)
        return torch.complex(log_mag - log_norm, phase)

    def conditionals(self, spins: torch.Tensor) -> torch.Tensor:
        """Normalized complex log-conditionals ``log psi_i(s_i = -1 / +1 | s_<i)``,
        ``[B, N, 2]``."""
        return self.normalize(self.raw_outputs(spins), spins)

    def select(self, log_cond: torch.Tensor, spins: torch.Tensor) -> torch.Tensor:
        """log psi(s) = sum_i log psi_i(s_i | s_<i) (+ i pi * sign-rule count)."""
        index = (spins > 0).to(torch.int64)[..., None]
        per_site = log_cond.gather(-1, index)[..., 0]
        value = per_site.sum(dim=1)
        if self.sign_rule is not None:
            count = ((spins > 0).to(self.sign_rule.dtype) * self.sign_rule).sum(1)
            value = value + 1j * math.pi * count.to(value.real.dtype)
        return value

    def log_psi(self, spins: torch.Tensor) -> torch.Tensor:
        """Complex ``log psi(s)`` ``[B]`` (differentiable)."""
        return self.select(self.conditionals(spins), spins)

    def forward(self, spins: torch.Tensor) -> torch.Tensor:
        return self.log_psi(spins)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_reference(
        self,
        n_samples: int,
        generator: torch.Generator | None = None,
        uniforms: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact i.i.d. samples by N full forward passes (the reference the row-cached
        kernels must reproduce). Site i becomes +1 when ``u_i < |psi_i(+1|s_<i)|^2``.

        Returns ``(spins int8 [n, N], log_psi complex [n])``."""
        dev = self.out_weight.device
        n = self.n_sites
        uniforms = _draw_uniforms(n_samples, n, generator, uniforms, dev)
        spins = torch.zeros(n_samples, n, dtype=torch.int8, device=dev)
        for site in range(n):
            cond = self.conditionals(spins)[:, site, :]
            p_up = torch.exp(2.0 * cond[:, 1].real)
            up = uniforms[:, site].to(p_up.dtype) < p_up
            spins[:, site] = torch.where(up, 1, -1).to(torch.int8)
        return spins, self.log_psi(spins)

    def sample(self, n_samples: int, generator=None, uniforms=None):
        """Exact samples; the row-cached kernel when available (see naqs.sampling)."""
        from ..sampling import exact_sample

        return exact_sample(self, n_samples, generator=generator, uniforms=uniforms)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "shape": [self.lx, self.ly],
            "n_blocks": self.n_blocks,
            "channels": self.channels,
            "magnetization": self.magnetization,
            "sign_rule": self.sign_rule is not None,
            "parameters": sum(p.numel() for p in self.parameters()),
        }


def _draw_uniforms(n_samples, n_sites, generator, uniforms, device):
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    if uniforms is None:
        gen_device = generator.device if generator is not None else device
        uniforms = torch.rand(n_samples, n_sites, generator=generator, dtype=torch.float64, device=gen_device)
        return uniforms.to(device)
    if uniforms.shape != (n_samples, n_sites):
        raise ValueError(f"uniforms must have shape [{n_samples}, {n_sites}], got {list(uniforms.shape)}")
    if not torch.isfinite(uniforms).all() or (uniforms < 0).any() or (uniforms >= 1).any():
        raise ValueError("uniforms must be finite numbers in [0, 1)")
    return uniforms.to(device)
