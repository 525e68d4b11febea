"""The only module that imports ``naqs._C``.

Every compiled op is exposed here next to the pure-PyTorch reference it must equal. When
the extension (or its CUDA part) is missing, the op falls back to the reference and warns
once: a user never gets a wrong answer from a missing build, only a slower one.
"""

from __future__ import annotations

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
