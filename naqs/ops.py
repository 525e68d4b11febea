"""The only module that imports ``naqs._C``.

Every compiled op is exposed here next to the pure-PyTorch reference it must equal. When
the extension (or its CUDA part) is missing, the op falls back to the reference and warns
once: a user never gets a wrong answer from a missing build, only a slower one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings

import torch

try:  # torch must be imported first: the module has no RPATH to torch's libraries
    from . import _C  # type: ignore[attr-defined]

    _IMPORT_ERROR: Exception | None = None
except ImportError as err:  # pragma: no cover - exercised only on broken installs
    _C = None
    _IMPORT_ERROR = err

__all__ = [
    "extension_available",
    "cuda_available",
    "build_info",
    "has_op",
    "warn_fallback",
    "exchange_connections",
]

_warned: set[str] = set()


def extension_available() -> bool:
    return _C is not None


def build_info() -> dict:
    """What naqs._C was built with (``cuda``, ``cuda_arch``, ``torch``, ``op_groups``)."""
    if _C is None:
        return {"cuda": False, "cuda_arch": "", "torch": None, "op_groups": [], "error": str(_IMPORT_ERROR)}
    return dict(_C.build_info())


def cuda_available() -> bool:
    """The CUDA kernels were compiled in and a CUDA device is visible."""
    return _C is not None and bool(_C.build_info()["cuda"]) and torch.cuda.is_available()


def has_op(name: str) -> bool:
    return _C is not None and hasattr(_C, name)


def warn_fallback(op: str, why: str) -> None:
    """Warn once per op that the reference path is used instead of the kernel."""
    if op not in _warned:
        _warned.add(op)
        warnings.warn(f"naqs: {op}: using the PyTorch reference ({why})", RuntimeWarning, stacklevel=3)


def exchange_connections(spins: torch.Tensor, edges: torch.Tensor, exchange: torch.Tensor):
    """Exchange connections of a batch (see naqs.hamiltonian for the layout)."""
    from .hamiltonian import exchange_connections_reference

    if spins.device.type == "cpu" and has_op("exchange_connections"):
        return _C.exchange_connections(spins.to(torch.int8).contiguous(), edges.contiguous(), exchange.contiguous())
    if spins.device.type != "cpu":
        # The reference is a handful of vectorized torch ops: on the GPU it is as fast as a kernel.
        return exchange_connections_reference(spins, edges, exchange)
    warn_fallback("exchange_connections", "naqs._C is not built")
    return exchange_connections_reference(spins, edges, exchange)


# ---------------------------------------------------------------------- PixelCNN kernels
# The row-cached engine (csrc/pixelcnn, docs/engine.md). Every function below computes
# exactly what a reference in naqs.models / naqs.local_energy computes; tests hold them
# equal. Log-psi values come back as complex128 whatever the model dtype: the per-site
# log-conditionals are summed in float64, so differences of log psi (local energies)
# keep float64 accuracy even for float32 networks.

import math  # noqa: E402  (kept inside the PixelCNN section)

_PIXELCNN_KEYS = ("wv0", "wv", "bv", "wh0", "wh", "bh", "wo", "bo")


# Arithmetic of the CUDA walker's products (csrc/pixelcnn/cuda/walker.cu reads
# NAQS_PIXELCNN_MATH at every call): "ffma" (default: FP32/FP64 FMAs, local energies
# within 1e-6 of float64), "3xtf32" (tensor cores, split operands: ~1e-6 to 1e-5) or
# "tf32" (tensor cores, 10-bit mantissas: ~1e-4, a training mode; docs/engine.md
# Precision has the measured energy biases). Float32 networks with 8 | channels <= 32
# on CUDA; everything else runs FFMA whatever the setting.
ENGINE_MATH_MODES = ("ffma", "3xtf32", "tf32")


def engine_math() -> str:
    """The CUDA walker's current product arithmetic (see ENGINE_MATH_MODES)."""
    mode = os.environ.get("NAQS_PIXELCNN_MATH", "ffma") or "ffma"
    return mode if mode in ENGINE_MATH_MODES else "ffma"


@contextlib.contextmanager
def use_engine_math(mode: str):
    """``with ops.use_engine_math("tf32"): ...`` runs the CUDA kernels inside with that
    product arithmetic and restores the previous setting afterwards."""
    if mode not in ENGINE_MATH_MODES:
        raise ValueError(f"engine math must be one of {ENGINE_MATH_MODES}, got {mode!r}")
    old = os.environ.get("NAQS_PIXELCNN_MATH")
    os.environ["NAQS_PIXELCNN_MATH"] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NAQS_PIXELCNN_MATH", None)
        else:
            os.environ["NAQS_PIXELCNN_MATH"] = old


def _pixelcnn_base(model):
    """``(base PixelCNN, symmetric?)`` or ``(None, False)`` for other models."""
    from .models.pixelcnn import PixelCNN
    from .models.symmetric import SymmetricModel

    if isinstance(model, SymmetricModel):
        return (model.base, True) if isinstance(model.base, PixelCNN) else (None, False)
    return (model, False) if isinstance(model, PixelCNN) else (None, False)


def _pixelcnn_kernel(base) -> tuple[str | None, str]:
    """``(path, why-not)`` for a PixelCNN: the kernel that would run it, if any."""
    if _C is None:
        return None, f"naqs._C is not importable ({_IMPORT_ERROR})"
    if not hasattr(_C, "pixelcnn_sample"):
        return None, "this build of naqs._C has no PixelCNN kernels"
    dtype = base.out_weight.dtype
    if dtype not in (torch.float32, torch.float64):
        return None, f"the kernels take float32/float64 models, this one is {dtype}"
    dev = base.out_weight.device.type
    if dev == "cpu":
        return "kernel-cpu", ""
    if dev == "cuda":
        if _C.build_info()["cuda"]:
            math_mode = engine_math()
            if math_mode != "ffma" and dtype == torch.float32 and base.channels % 8 == 0 and base.channels <= 32:
                return f"kernel-cuda-{math_mode}", ""  # tensor-core products (see ENGINE_MATH_MODES)
            return "kernel-cuda", ""
        return None, "naqs._C was built without CUDA"
    return None, f"no kernel for device {dev}"


def _packed_weights(base) -> list[torch.Tensor]:
    with torch.no_grad():
        packed = base.packed_weights()
    return [packed[k].detach().contiguous() for k in _PIXELCNN_KEYS]


def _kernel_path(model, op: str) -> str | None:
    """The kernel that would run ``op`` for ``model``, or None (warning once per op
    when a PixelCNN could have had one)."""
    base, _ = _pixelcnn_base(model)
    if base is None:
        return None
    path, why = _pixelcnn_kernel(base)
    if path is None:
        warn_fallback(op, why)
    return path


# Tensor-core sampling of at most this many samples per SM runs FFMA products instead
# (see _sampler_math).
SMALL_SAMPLE_PER_SM = 8


def _sampler_math(base, batch: int) -> str:
    """The product arithmetic of a CUDA sampling walk of ``batch`` samples: the engine
    math, except that a tensor-core mode samples small batches (at most
    SMALL_SAMPLE_PER_SM per SM) with FFMA. The walk gives each SM ceil(batch / SMs) jobs
    and its single-position passes multiply one row per job: with 8 or fewer the m16 MMA
    tiles are half padding, and the 512-thread tensor-core instance spills. 12x12, 10
    blocks, 1000 samples on an H100: TF32 9.6 ms, FFMA 7.9 ms (docs/engine.md, run 92);
    at 4096 samples TF32 is the faster one. FFMA only makes the samples more exact.
    NAQS_PIXELCNN_TF32_SMALL_SAMPLES=1 keeps the tensor cores (tests, A/B)."""
    mode = engine_math()
    if mode == "ffma" or base.out_weight.device.type != "cuda":
        return mode
    if os.environ.get("NAQS_PIXELCNN_TF32_SMALL_SAMPLES") == "1":
        return mode
    sms = torch.cuda.get_device_properties(base.out_weight.device).multi_processor_count
    return "ffma" if batch <= SMALL_SAMPLE_PER_SM * sms else mode


def pixelcnn_sample_path(model, batch: int | None = None) -> str | None:
    """Name of the kernel that would sample ``model`` (``"kernel-cpu"`` /
    ``"kernel-cuda"``, ``"kernel-cuda-<math>"`` with tensor-core products), or None
    when only the reference can (warns once). ``batch``: the number of samples, which
    decides the products of a small batch (``_sampler_math``)."""
    path = _kernel_path(model, "pixelcnn_sample")
    if path is not None and path.startswith("kernel-cuda-") and batch is not None:
        base, _ = _pixelcnn_base(model)
        if _sampler_math(base, batch) == "ffma":
            return "kernel-cuda"
    return path


@dataclasses.dataclass(frozen=True, eq=False)
class ActivationCache:
    """Every activation of a batch of samples (``store_h``, ``store_v``: ``[B, L, Ly,
    Lx, C]``, the model dtype) and the float64 prefix sums of their log-conditionals
    (``prefix``: ``[B, N + 1, 2]``), as the sampling walk computed them: what the
    connected walks of the local energy read, so that they need no forward walk of their
    own. Valid for these ``spins`` and the weights they were drawn with only (both are
    checked where it is used)."""

    spins: torch.Tensor  # a copy: the caller may change its own tensor
    store_h: torch.Tensor
    store_v: torch.Tensor
    prefix: torch.Tensor
    weights_version: tuple  # _weights_version(model) when the walk ran

    @staticmethod
    def nbytes_for(model, batch: int) -> int:
        """Bytes a cache of ``batch`` samples of this PixelCNN takes."""
        elem = torch.finfo(model.out_weight.dtype).bits // 8
        return batch * (2 * model.n_blocks * model.n_sites * model.channels * elem + (model.n_sites + 1) * 16)


@torch.no_grad()
def pixelcnn_sample(model, uniforms: torch.Tensor, keep_activations: bool = False):
    """Row-cached exact sampling of a PixelCNN: ``(spins int8 [B, N], log_psi
    complex128 [B])`` without the model's sign rule (the caller adds it). Site i is +1
    iff ``uniforms[b, i] < |psi_i(+1)|^2`` computed in the model dtype, as
    ``PixelCNN.sample_reference`` does, so both return the same samples.
    ``keep_activations``: a third value, the walk's ``ActivationCache`` (for
    ``connected_log_psi`` / ``local_energy`` of the same spins)."""
    base, symmetric = _pixelcnn_base(model)
    if base is None or symmetric:
        raise TypeError(f"pixelcnn_sample samples a PixelCNN, got {type(model).__name__}")
    dev = base.out_weight.device
    u = uniforms.to(device=dev, dtype=torch.float64).contiguous()
    with use_engine_math(_sampler_math(base, u.shape[0] if u.dim() else 0)):
        out = _C.pixelcnn_sample(_packed_weights(base), base.lx, base.ly, base.magnetization, u, bool(keep_activations))
    spins, log_psi = out[0], torch.view_as_complex(out[1])
    if not keep_activations:
        return spins, log_psi
    return spins, log_psi, ActivationCache(spins.clone(), out[2], out[3], out[4], _weights_version(base))


def _weights_version(model) -> tuple:
    """Identity and in-place version counter of every parameter: changes with each
    optimizer step (in-place updates bump the counters) or a reloaded state."""
    return tuple((id(p), p._version) for p in model.parameters())


def can_keep_activations(model, batch: int, memory_budget: int | None = None) -> bool:
    """Whether ``pixelcnn_sample(..., keep_activations=True)`` applies: a plain PixelCNN
    (a SymmetricModel's connected walks run on transformed samples), not the legacy CUDA
    kernel, and a cache within the memory budget (the local energy's default)."""
    base, symmetric = _pixelcnn_base(model)
    if base is None or symmetric or _pixelcnn_kernel(base)[0] is None:
        return False
    dev = base.out_weight.device
    if dev.type == "cuda" and os.environ.get("NAQS_PIXELCNN_CUDA_KERNEL") == "legacy":
        return False
    budget = int(memory_budget) if memory_budget is not None else _default_budget(dev)
    return ActivationCache.nbytes_for(base, batch) <= budget


def _sign_count(base, spins: torch.Tensor) -> torch.Tensor:
    return ((spins > 0).to(base.sign_rule.dtype) * base.sign_rule).sum(1).double()


@torch.no_grad()
def pixelcnn_log_psi_kernel(model, spins: torch.Tensor) -> torch.Tensor:
    """No-grad ``log psi`` by the kernel, complex128 ``[B]`` (sign rule and, for a
    SymmetricModel, eqs. B1-B2 included)."""
    base, symmetric = _pixelcnn_base(model)
    if base is None:
        raise TypeError(f"pixelcnn_log_psi_kernel needs a PixelCNN or SymmetricModel of one, got {type(model).__name__}")
    if symmetric:
        g = model.n_transforms
        values = pixelcnn_log_psi_kernel(base, model.transform(spins).reshape(g * spins.shape[0], -1))
        return _symmetric_combine(values.reshape(g, spins.shape[0]))
    s = spins.to(device=base.out_weight.device, dtype=torch.int8).contiguous()
    out = torch.view_as_complex(_C.pixelcnn_log_psi(_packed_weights(base), base.lx, base.ly, base.magnetization, s))
    if base.sign_rule is not None:
        out = out + 1j * math.pi * _sign_count(base, s)
    return out


def _symmetric_combine(values: torch.Tensor) -> torch.Tensor:
    """Eqs. B1-B2 over the leading (transformation) axis of complex ``values``."""
    g = values.shape[0]
    re = 0.5 * (torch.logsumexp(2.0 * values.real, dim=0) - math.log(g))
    im = torch.angle(torch.exp(1j * values.imag).sum(dim=0))
    return torch.complex(re, im)


class PixelCNNLogPsi(torch.autograd.Function):
    """``log psi(s)`` with the forward by the row-cached kernel and the backward by
    recomputation through the reference under autograd (activation-checkpoint style:
    nothing is saved in the forward but the inputs). Inputs: the model, the spins and
    the model's parameters (so that autograd routes their gradients here)."""

    @staticmethod
    def forward(ctx, model, spins, *params):
        ctx.model = model
        ctx.save_for_backward(spins)
        value = pixelcnn_log_psi_kernel(model, spins)
        dtype = torch.complex128 if model.out_weight.dtype == torch.float64 else torch.complex64
        return value.to(dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (spins,) = ctx.saved_tensors
        params = [p for p in ctx.model.parameters()]
        with torch.enable_grad():
            value = ctx.model.log_psi(spins)
            wanted = [p for p in params if p.requires_grad]
            grads = torch.autograd.grad(value, wanted, grad_out, allow_unused=True)
        it = iter(grads)
        out = [next(it) if p.requires_grad else None for p in params]
        return (None, None, *out)


def pixelcnn_log_psi(model, spins: torch.Tensor) -> torch.Tensor:
    """Differentiable ``log psi`` of a PixelCNN (sign rule included) through the
    kernel; complex64 for float32 models, complex128 for float64. Falls back to
    ``model.log_psi`` (warning once) when no kernel can run it."""
    base, symmetric = _pixelcnn_base(model)
    if base is None or symmetric:
        return model.log_psi(spins)
    path, why = _pixelcnn_kernel(base)
    if path is None:
        warn_fallback("pixelcnn_log_psi", why)
        return model.log_psi(spins)
    return PixelCNNLogPsi.apply(base, spins.to(torch.int8), *base.parameters())


def connected_log_psi_path(model, hamiltonian=None) -> str | None:
    """Name of the kernel that evaluates connected log-psi for this model (a PixelCNN
    or a SymmetricModel of one; any Hamiltonian of 1- and 2-spin flips), or None
    (warns once)."""
    return _kernel_path(model, "connected_log_psi")


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1 << 28, min(8 << 30, free // 3)))
    return 1 << 28


@torch.no_grad()
def _base_connected(base, spins, flips, counts, memory_budget, cache=None):
    kept = {} if cache is None else {"store_h": cache.store_h, "store_v": cache.store_v, "prefix": cache.prefix}
    out = torch.view_as_complex(
        _C.pixelcnn_connected(
            _packed_weights(base), base.lx, base.ly, base.magnetization, spins, flips, counts, memory_budget, **kept
        )
    )
    if base.sign_rule is not None:
        count = _sign_count(base, spins)[:, None]
        for q in range(2):
            site = flips[:, :, q]
            valid = site >= 0
            idx = site.clamp(min=0)
            s_at = spins.gather(1, idx)
            delta = torch.where(s_at > 0, -1.0, 1.0).double() * base.sign_rule.double()[idx]
            count = count + torch.where(valid, delta, torch.zeros_like(delta))
        out = out + 1j * math.pi * count
        mask = torch.arange(flips.shape[1], device=flips.device)[None, :] < counts[:, None]
        out = torch.where(mask, out, torch.zeros_like(out))  # padding rows hold 0
    return out


@torch.no_grad()
def connected_log_psi(model, spins, flips, counts, memory_budget: int | None = None,
                      cache: ActivationCache | None = None):
    """``log psi`` of every connected configuration, complex128 ``[B, M]`` (padding
    rows 0): equals ``naqs.local_energy.connected_log_psi_reference``. Each value is
    ``P_k(s) + sum_{i>=k} log psi_i(s'_i)`` with k the first flipped site and P_k the
    sample's own float64 prefix, so ``log psi(s') - log psi(s)`` comes from the
    differing suffix only. A SymmetricModel evaluates each transformation T on T s with
    the flips mapped through the permutation, then combines with eqs. B1-B2.
    ``cache``: the sampler's activations of these spins (``pixelcnn_sample(...,
    keep_activations=True)``, plain PixelCNN only): no forward walk."""
    base, symmetric = _pixelcnn_base(model)
    if base is None:
        raise TypeError(f"connected_log_psi needs a PixelCNN or SymmetricModel of one, got {type(model).__name__}")
    dev = base.out_weight.device
    spins = spins.to(device=dev, dtype=torch.int8).contiguous()
    flips = flips.to(device=dev, dtype=torch.int64).contiguous()
    counts = counts.to(device=dev, dtype=torch.int64).contiguous()
    budget = int(memory_budget) if memory_budget is not None else _default_budget(dev)
    if cache is not None:
        if symmetric:
            raise ValueError("an ActivationCache holds a plain PixelCNN's activations; a SymmetricModel has none")
        if cache.spins.shape != spins.shape or not torch.equal(cache.spins, spins):
            raise ValueError("the ActivationCache was made for other spins than these")
        if cache.weights_version != _weights_version(base):
            raise ValueError("the model's weights changed since the ActivationCache was made")
    if not symmetric:
        return _base_connected(base, spins, flips, counts, budget, cache)
    values = []
    for g in range(model.n_transforms):
        images = _image(model, spins, g)
        inv = model.inverse_perms[g]
        mapped = torch.where(flips >= 0, inv[flips.clamp(min=0)], flips).contiguous()
        values.append(_base_connected(base, images, mapped, counts, budget))
    out = _symmetric_combine(torch.stack(values))
    mask = torch.arange(flips.shape[1], device=dev)[None, :] < counts[:, None]
    return torch.where(mask, out, torch.zeros_like(out))


def pixelcnn_cone(lx: int, ly: int, blocks: int, sites) -> tuple[torch.Tensor, torch.Tensor]:
    """The light cone the connected kernels walk for a configuration with ``sites``
    flipped: boolean masks ``(h, v)`` of shape ``[blocks, ly, lx]``, True where the
    kernel recomputes ``h_l`` / ``v_l`` (everything else is read from the unflipped
    sample's activations). A superset of the positions that can change; exact for one
    flipped site (csrc/pixelcnn/cone.h)."""
    if _C is None:
        raise RuntimeError("pixelcnn_cone needs the compiled extension naqs._C")
    h, v = _C.pixelcnn_cone(int(lx), int(ly), int(blocks), [int(i) for i in sites])
    return h, v


def _image(model, spins, g):
    """``T_g s`` for one transformation: ``[B, N]`` int8."""
    image = spins[:, model.perms[g]]
    if bool(model.flips[g]):
        image = -image
    return image.contiguous()
