"""The generalization study of frustrated magnets (Westerhout et al., Nat. Commun. 11,
1593 (2020)): supervised fits of signs and amplitudes of exact ground states, overlaps
on the never-seen part of the basis, and the sweeps behind Figs. 2-5.

Pieces, from the bottom up:

- :func:`resolve_lattice` - a shipped cluster (``kagome-24``) or a small periodic lattice
  (``square-4x4``) for CPU tests;
- :func:`ground_state` - the exact ground state in the zero-magnetization sector as
  ``(state, basis)`` from :mod:`naqs.ed`, or for N <= 20 from a small sparse solver here;
- :func:`make_split` - training/validation sets drawn with replacement from |psi|^2, the
  test set = every basis state never drawn;
- :func:`fit_many` - many small supervised fits at once (``torch.func`` stacking +
  ``vmap``): Adam, mini-batches, early stopping on the validation loss per fit;
- :func:`sign_overlap`, :func:`amplitude_overlap`, :func:`evaluate_overlaps`;
- sweeps (:func:`run_generalization`, :func:`run_eps_sweep`, :func:`run_expressibility`,
  :func:`run_critical_eps`) that append to CSV files (resumable) and :func:`plot_directory`;
- :func:`add_study_arguments` / :func:`run_study_cli` for ``naqs study ...``.

Energies are in Pauli units (the paper's); every JSON says ``"units"``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "ARCHS",
    "TARGETS",
    "FRUSTRATED_REGIONS",
    "resolve_lattice",
    "make_model",
    "GroundState",
    "ground_state",
    "small_ground_state",
    "basis_to_spins",
    "Split",
    "make_split",
    "sample_indices",
    "FitConfig",
    "FitData",
    "FitResult",
    "fit_many",
    "sign_overlap",
    "amplitude_overlap",
    "evaluate_overlaps",
    "parse_j2",
    "run_generalization",
    "run_eps_sweep",
    "run_expressibility",
    "run_critical_eps",
    "critical_eps",
    "plot_directory",
    "add_study_arguments",
    "run_study_cli",
]

ARCHS = ("dense1", "dense2", "cnn")
TARGETS = ("sign", "amplitude")
UNITS = "pauli"

# Frustrated (spin-liquid) regions shaded in Fig. 2, in J2/J1, from the paper's text:
# square "0.4 < J2/J1 < 0.6"; kagome "0.51 <~ J2/J1 <~ 1.82"; the triangular text gives
# only the upper transition "J2/J1 ~ 1.25" (the dip sits just below it); the lower edge
# 0.5 is our reading of the figure, not a number stated in the text.
FRUSTRATED_REGIONS = {"square": (0.4, 0.6), "triangle": (0.5, 1.25), "kagome": (0.51, 1.82)}

CRITICAL_OVERLAP = 0.15  # "non-zero generalization" threshold of Fig. 5


# ============================================================== lattices and models
def resolve_lattice(name: str):
    """A shipped cluster by name (``square-24``, ``kagome-24`` ...; see
    :func:`naqs.lattice.cluster_names`) or a small periodic lattice ``KIND-LXxLY``
    (``square-4x4``, ``triangle-4x4``, ``kagome-2x2`` in unit cells) for tests."""
    from . import lattice as lat

    if not isinstance(name, str):
        raise TypeError(f"cluster name must be a string, got {type(name).__name__}")
    if name in lat.cluster_names():
        return lat.cluster(name)
    match = re.fullmatch(r"(square|triangle|kagome)-(\d+x\d+)", name)
    if match:
        return lat.make_lattice(match.group(1), match.group(2), pbc=True)
    raise ValueError(
        f"unknown cluster {name!r}; use one of {', '.join(lat.cluster_names())} "
        "or a small periodic lattice like square-4x4, triangle-4x4, kagome-2x2"
    )


def lattice_kind(lattice) -> str:
    for kind in ("square", "triangle", "kagome"):
        if lattice.name.startswith(kind):
            return kind
    return "other"


def make_model(arch: str, lattice, target: str) -> nn.Module:
    """A fresh (uninitialized: call ``init_parameters(generator)``) network.

    Sign networks output 2 logits (class 0 = "+", class 1 = "-"); amplitude networks
    output 1 number, the standardized log|psi| (see :func:`fit_many`)."""
    from .models.cnn import CircularCNN
    from .models.dense import DenseNet

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    n_out = 2 if target == "sign" else 1
    if arch == "dense1":
        return DenseNet(lattice.n_sites, (64,), n_out)
    if arch == "dense2":
        return DenseNet(lattice.n_sites, (64, 64), n_out)
    return CircularCNN(lattice, n_out)


# ============================================================== exact ground states
@dataclass
class GroundState:
    """Exact ground state in the zero-magnetization sector.

    ``state``: float64 [K], normalized; ``basis``: uint64 [K] sorted, bit i = site i,
    set = spin up = +1; ``energy`` in ``units``."""

    energy: float
    state: np.ndarray
    basis: np.ndarray
    n_sites: int
    units: str
    source: str

    @property
    def dim(self) -> int:
        return int(self.state.shape[0])


# Above this many sites the sector no longer fits as a vector (36 sites: K = 9.1e9, 72 GB
# in float64): the ground state is solved in the symmetric sector and used by sampling.
SAMPLED_ABOVE = 32


@dataclass
class SampledGroundState:
    """A ground state known through i.i.d. samples from |psi|^2 (a symmetric ED result,
    :meth:`naqs.ed.EDResult.sample`): for sectors too large to hold as a vector. The
    test-set overlap is then a Monte Carlo estimate (:func:`evaluate_overlaps_sampled`)."""

    energy: float
    result: object  # naqs.ed.EDResult (symmetric)
    n_sites: int
    units: str
    source: str
    dim: int  # K, the size of the full sz = 0 sector

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(states uint64 [n], psi float64 [n])`` drawn with replacement from |psi|^2."""
        return self.result.sample(int(n), rng)


def sector_basis(n_sites: int, n_up: int) -> np.ndarray:
    """Sorted uint64 integers with ``n_up`` of the low ``n_sites`` bits set (N <= 24)."""
    if n_sites > 24:
        raise ValueError(f"sector_basis here is for N <= 24 sites (got {n_sites}); use naqs.ed")
    values = np.arange(1 << n_sites, dtype=np.uint64)
    counts = np.zeros(values.shape, dtype=np.uint8)
    for bit in range(n_sites):
        counts += ((values >> np.uint64(bit)) & np.uint64(1)).astype(np.uint8)
    return values[counts == n_up]


def basis_to_spins(basis: np.ndarray, n_sites: int) -> torch.Tensor:
    """``[K, N]`` int8 of +1/-1 from integers (bit i = site i, set = +1)."""
    basis = torch.as_tensor(np.asarray(basis, dtype=np.uint64).view(np.int64))
    bits = (basis[:, None] >> torch.arange(n_sites, dtype=torch.int64)) & 1
    return (bits * 2 - 1).to(torch.int8)


def _spins_to_basis(spins: torch.Tensor) -> np.ndarray:
    n = spins.shape[-1]
    bits = (spins.to(torch.int64) + 1) // 2
    return (bits << torch.arange(n, dtype=torch.int64)).sum(-1).numpy().astype(np.uint64)


def small_ground_state(hamiltonian, n_up: int | None = None, chunk: int = 1 << 16) -> GroundState:
    """Ground state of a small Hamiltonian (N <= 20) in the sector with ``n_up`` up spins
    (default N/2), by a sparse matrix built from ``diagonal``/``connections`` and
    ``scipy.sparse.linalg.eigsh``. A test/fallback path; :mod:`naqs.ed` is the real ED."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    from .hamiltonian import apply_flips

    n = hamiltonian.n_sites
    if n > 20:
        raise ValueError(f"small_ground_state is for N <= 20 sites, got {n}; use naqs.ed.ground_state")
    if n_up is None:
        if n % 2:
            raise ValueError(f"the zero-magnetization sector needs an even number of sites, got {n}")
        n_up = n // 2
    basis = sector_basis(n, n_up)
    dim = len(basis)
    rows, cols, vals = [np.arange(dim)], [np.arange(dim)], []
    diag = []
    for start in range(0, dim, chunk):
        spins = basis_to_spins(basis[start : start + chunk], n)
        diag.append(hamiltonian.diagonal(spins).numpy())
        conn = hamiltonian.connections(spins, use_extension=False)
        mask = conn.mask
        targets = apply_flips(spins, conn.flips)[mask]
        src = torch.nonzero(mask, as_tuple=True)[0].numpy() + start
        idx = np.searchsorted(basis, _spins_to_basis(targets))
        if np.any(idx >= dim) or np.any(basis[np.minimum(idx, dim - 1)] != _spins_to_basis(targets)):
            raise ValueError("the Hamiltonian does not conserve the magnetization sector")
        rows.append(src)
        cols.append(idx)
        vals.append(conn.elements[mask].numpy())
    data = np.concatenate([np.concatenate(diag)] + vals)
    matrix = sp.csr_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(dim, dim))
    if dim <= 2000:
        energies, vectors = np.linalg.eigh(matrix.toarray())
    else:
        energies, vectors = eigsh(matrix, k=1, which="SA", tol=1e-12)
    state = vectors[:, 0] / np.linalg.norm(vectors[:, 0])
    return GroundState(float(energies[0]), state, basis, n, hamiltonian.units, "study.small_ground_state")


def ground_state(hamiltonian, *, device: str = "cpu", cache_dir=None, progress: bool = False,
                 sampled: bool | None = None):
    """Exact ground state (sz = 0): :func:`naqs.ed.ground_state` when available (and
    required for N > 20), else :func:`small_ground_state`. ``sampled`` (default: N >
    ``SAMPLED_ABOVE``) solves in the symmetric sector and returns a
    :class:`SampledGroundState`."""
    if sampled is None:
        sampled = hamiltonian.n_sites > SAMPLED_ABOVE
    if sampled:
        from . import ed, ops

        ed_device = str(device) if torch.device(device).type == "cpu" or ops.cuda_available() else "cpu"
        result = ed.ground_state(hamiltonian, sz=0, symmetric=True, device=ed_device, cache_dir=cache_dir,
                                 progress=progress)
        dim = math.comb(hamiltonian.n_sites, hamiltonian.n_sites // 2)
        return SampledGroundState(float(result.energy), result, hamiltonian.n_sites, result.units,
                                  f"naqs.ed symmetric ({result.solver})", dim)
    try:
        from . import ed  # imported lazily: ed is optional for small systems
    except ImportError:
        ed = None
    if ed is not None and hasattr(ed, "ground_state"):
        from . import ops

        # ED on the GPU needs the CUDA build of naqs._C; without it the fits still run on
        # the GPU and the (one-off) ED runs on the CPU.
        ed_device = str(device) if torch.device(device).type == "cpu" or ops.cuda_available() else "cpu"
        result = ed.ground_state(hamiltonian, sz=0, symmetric=False, device=ed_device, cache_dir=cache_dir,
                                 progress=progress)
        return GroundState(
            float(result.energy), np.asarray(result.state, dtype=np.float64), np.asarray(result.basis, dtype=np.uint64),
            hamiltonian.n_sites, result.units, f"naqs.ed ({result.solver})",
        )
    if hamiltonian.n_sites > 20:
        raise RuntimeError(f"{hamiltonian.n_sites} sites need naqs.ed.ground_state, which is not available")
    return small_ground_state(hamiltonian)


# ============================================================== datasets
@dataclass
class Split:
    """Indices into the sector basis. ``train``/``val`` are drawn with replacement from
    |psi|^2 (duplicates kept: they carry the |psi|^2 weighting); ``test`` is every basis
    index drawn into neither (sorted, unique)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    dim: int

    @property
    def seen(self) -> np.ndarray:
        return np.union1d(self.train, self.val)


def _check_eps(eps: float, name: str) -> float:
    eps = float(eps)
    if not (math.isfinite(eps) and 0.0 < eps <= 1.0):
        raise ValueError(f"{name} must lie in (0, 1], got {eps}")
    return eps


def sample_indices(probabilities: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices drawn with replacement with the given (unnormalized) probabilities.
    Inverse-CDF sampling: works for any K (torch.multinomial stops at 2^24 categories)."""
    cdf = np.cumsum(probabilities, dtype=np.float64)
    if not (cdf[-1] > 0 and np.isfinite(cdf[-1])):
        raise ValueError("probabilities must be finite, non-negative and not all zero")
    u = rng.random(n) * cdf[-1]
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1).astype(np.int64)


def make_split(probabilities: np.ndarray, eps_train: float, eps_val: float, rng: np.random.Generator) -> Split:
    """Training set of ``round(eps_train K)`` and validation set of ``round(eps_val K)``
    configurations drawn from ``probabilities`` (|psi|^2); the rest is the test set."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 1 or probabilities.size == 0:
        raise ValueError(f"probabilities must be a non-empty vector, got shape {probabilities.shape}")
    if np.any(probabilities < 0) or not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities must be finite and non-negative")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (explicit seeding)")
    k = probabilities.size
    n_train = max(1, int(round(_check_eps(eps_train, "eps_train") * k)))
    n_val = max(1, int(round(_check_eps(eps_val, "eps_val") * k)))
    train = sample_indices(probabilities, n_train, rng)
    val = sample_indices(probabilities, n_val, rng)
    seen = np.zeros(k, dtype=bool)
    seen[train] = True
    seen[val] = True
    return Split(train, val, np.flatnonzero(~seen).astype(np.int64), k)


def default_eps_val(eps_train: float, dim: int) -> float:
    """Validation fraction when none is given: a quarter of the training set, at least
    256 configurations (early stopping needs a usable estimate of the loss)."""
    return min(1.0, max(eps_train / 4.0, 256.0 / dim))


# ============================================================== fits
@dataclass
class FitConfig:
    arch: str = "dense2"
    target: str = "sign"
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    eval_chunk: int = 1 << 16
    # CPU fits run with this many intra-op threads (None: leave torch's setting). The
    # per-step matmuls are tiny ([R, 128, 64]); OpenMP fork/join then costs more than the
    # work, and on a loaded machine 2 threads were measured 15x slower than 1.
    cpu_threads: int | None = 1

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; use one of {', '.join(ARCHS)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; use one of {', '.join(TARGETS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch_size, max_epochs and patience must be >= 1")


@dataclass
class FitData:
    """One supervised problem: configurations and the exact amplitudes psi at them.
    ``train_weights`` (optional): each epoch draws ``len(x_train)`` training indices with
    probability proportional to the weights (importance sampling: the expected loss of
    the weighted set, with unit weights in the batches). ``val_weights`` (optional)
    weight the validation loss."""

    x_train: torch.Tensor  # [n, N] int8
    psi_train: torch.Tensor  # [n] float64
    x_val: torch.Tensor
    psi_val: torch.Tensor
    seed: int
    train_weights: torch.Tensor | None = None
    val_weights: torch.Tensor | None = None


@dataclass
class FitResult:
    params: dict  # best parameters (validation loss), detached, on the fit device
    epochs: int
    best_epoch: int
    train_loss: float
    val_loss: float
    log_amp_shift: float = 0.0  # amplitude nets: log|psi| = out * scale + shift
    log_amp_scale: float = 1.0
    seconds: float = 0.0


def _targets(psi: torch.Tensor, target: str) -> torch.Tensor:
    if target == "sign":
        return (psi < 0).to(torch.int64)  # class 0 = "+", class 1 = "-"
    # psi = 0 never enters a |psi|^2-sampled set; on the full basis it gets weight 0,
    # so the clamp only keeps the number finite.
    return torch.log(psi.abs().clamp_min(1e-300))


def _loss(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, target: str) -> torch.Tensor:
    """Per-task weighted mean loss. out [R, b, n_out], y [R, b], w [R, b] or None -> [R]."""
    if target == "sign":
        per = nn.functional.cross_entropy(out.reshape(-1, 2), y.reshape(-1), reduction="none").view(y.shape)
    else:
        per = (out[..., 0] - y) ** 2
    if w is None:
        return per.mean(-1)
    return (per * w).sum(-1) / w.sum(-1).clamp_min(1e-300)


def fit_many(lattice, datasets: list[FitData], config: FitConfig, progress: bool = False) -> list[FitResult]:
    """Train ``len(datasets)`` independent networks at once.

    The R networks' parameters are stacked (``torch.func.stack_module_state``) and one
    ``vmap``-ed forward trains them together: the loss is the sum of the R per-task mean
    losses, so each network gets exactly its own gradient, and Adam is elementwise, so
    one Adam over the stacked tensors is R independent Adams. Each network is
    initialized and shuffled by its own generator (``seed``), so a fit in a stack equals
    the same fit alone up to floating-point reassociation (tested).

    All datasets must have equal training and validation sizes (one cluster, one eps).
    Early stopping: per network, the parameters of the epoch with the lowest validation
    loss are kept; a network whose loss has not improved for ``patience`` epochs is
    finished (the stack stops when all are).

    Amplitude networks regress the standardized target (log|psi| - mean) / std, with
    the weighted mean/std of their training set (kept in the result), so the output
    layer need not learn an offset of ~log(1/sqrt(K)) first.
    """
    threads = torch.get_num_threads()
    if torch.device(config.device).type == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        return _fit_many(lattice, datasets, config, progress)
    finally:
        torch.set_num_threads(threads)


def _fit_many(lattice, datasets: list[FitData], config: FitConfig, progress: bool = False) -> list[FitResult]:
    from torch.func import functional_call, stack_module_state, vmap

    if not datasets:
        return []
    started = time.perf_counter()
    dev = torch.device(config.device)
    n_train = {len(d.x_train) for d in datasets}
    n_val = {len(d.x_val) for d in datasets}
    if len(n_train) != 1 or len(n_val) != 1:
        raise ValueError(f"fit_many needs equal dataset sizes, got train {sorted(n_train)}, val {sorted(n_val)}")
    n_train, n_val = n_train.pop(), n_val.pop()
    if n_train < 1 or n_val < 1:
        raise ValueError("training and validation sets must not be empty")
    r = len(datasets)

    def stack(name):
        return torch.stack([getattr(d, name) for d in datasets]).to(dev)

    x_train, x_val = stack("x_train"), stack("x_val")  # int8 [R, n, N]
    y_train = torch.stack([_targets(d.psi_train, config.target) for d in datasets]).to(dev)
    y_val = torch.stack([_targets(d.psi_val, config.target) for d in datasets]).to(dev)
    # A weighted training set (the full basis weighted by K |psi|^2) is importance
    # sampled: weighting inside uniform batches would let a handful of large-|psi| states
    # carry each batch's gradient (weights span many decades), which left full-basis
    # fits stuck near chance; drawing indices in proportion to the weights gives the
    # same expected loss with far smaller variance.
    w_train = stack("train_weights").double().cpu() if datasets[0].train_weights is not None else None
    w_val = stack("val_weights").to(config.dtype) if datasets[0].val_weights is not None else None
    shift = torch.zeros(r, 1, dtype=torch.float64, device=dev)
    scale = torch.ones(r, 1, dtype=torch.float64, device=dev)
    if config.target == "amplitude":
        w = w_train.to(dev) if w_train is not None else torch.ones_like(y_train)
        shift = (y_train * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        var = (((y_train - shift) ** 2) * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        scale = var.sqrt().clamp_min(1e-6)
        y_train = ((y_train - shift) / scale).to(config.dtype)
        y_val = ((y_val - shift) / scale).to(config.dtype)

    models = []
    generators = []
    for d in datasets:
        gen = torch.Generator().manual_seed(int(d.seed))
        models.append(make_model(config.arch, lattice, config.target).init_parameters(gen).to(dev, config.dtype))
        generators.append(gen)  # continues after init: the per-epoch shuffles
    base = models[0]
    params, _ = stack_module_state(models)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}

    def forward_one(p, x):
        return functional_call(base, p, (x.to(config.dtype),))

    if hasattr(base, "stacked_forward"):  # dense nets: batched matmuls, no vmap dispatch
        def forward_batched(p, x):
            return base.stacked_forward(p, x.to(config.dtype))
    else:
        forward_batched = vmap(forward_one, in_dims=(0, 0))
    # fused Adam on the GPU: one kernel for all stacked parameters (same update rule)
    optimizer = torch.optim.Adam(list(params.values()), lr=config.lr, fused=dev.type == "cuda")

    best = {k: v.detach().clone() for k, v in params.items()}
    best_loss = torch.full((r,), float("inf"), dtype=torch.float64)
    best_epoch = torch.zeros(r, dtype=torch.int64)
    last_train = torch.zeros(r, dtype=torch.float64)
    bad = torch.zeros(r, dtype=torch.int64)
    done = torch.zeros(r, dtype=torch.bool)
    bs = min(config.batch_size, n_train)
    epochs_run = torch.zeros(r, dtype=torch.int64)

    from tqdm.auto import tqdm

    bar = tqdm(range(1, config.max_epochs + 1), disable=not progress, desc=f"fit x{r}", leave=False)
    for epoch in bar:
        if w_train is None:
            perms = torch.stack([torch.randperm(n_train, generator=g) for g in generators]).to(dev)  # [R, n]
        else:
            # numpy inverse-CDF draws (torch.multinomial stops at 2^24 categories), seeded
            # from the task's own generator so a stacked fit still equals the fit alone
            perms = torch.stack([
                torch.as_tensor(sample_indices(w.numpy(), n_train, np.random.default_rng(
                    int(torch.randint(0, 2**62, (1,), generator=g)))))
                for w, g in zip(w_train, generators)]).to(dev)
        total = torch.zeros(r, dtype=torch.float64, device=dev)
        for start in range(0, n_train, bs):
            idx = perms[:, start : start + bs]
            xb = torch.take_along_dim(x_train, idx[..., None], dim=1)
            yb = torch.take_along_dim(y_train, idx, dim=1)
            losses = _loss(forward_batched(params, xb), yb, None, config.target)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            total += losses.detach().double() * idx.shape[1]
        train_loss = (total / n_train).cpu()
        with torch.no_grad():
            val_total = torch.zeros(r, dtype=torch.float64, device=dev)
            wsum = torch.zeros(r, dtype=torch.float64, device=dev)
            for start in range(0, n_val, config.eval_chunk):
                sl = slice(start, start + config.eval_chunk)
                out = forward_batched(params, x_val[:, sl])
                wb = w_val[:, sl] if w_val is not None else None
                count = wb.sum(-1).double() if wb is not None else torch.full((r,), float(out.shape[1]), device=dev, dtype=torch.float64)
                val_total += _loss(out, y_val[:, sl], wb, config.target).double() * count
                wsum += count
            val_loss = (val_total / wsum).cpu()
        active = ~done
        epochs_run[active] = epoch
        last_train[active] = train_loss[active]
        improved = active & (val_loss < best_loss)
        if improved.any():
            sel = improved.to(dev)
            for k, v in params.items():
                best[k][sel] = v.detach()[sel]
            best_loss[improved] = val_loss[improved]
            best_epoch[improved] = epoch
        bad[improved] = 0
        bad[active & ~improved] += 1
        done |= bad >= config.patience
        bar.set_postfix(val=float(val_loss.mean()), done=int(done.sum()))
        if done.all():
            break
    seconds = time.perf_counter() - started
    results = []
    for i in range(r):
        results.append(
            FitResult(
                params={k: v[i].detach() for k, v in best.items()},
                epochs=int(epochs_run[i]),
                best_epoch=int(best_epoch[i]),
                train_loss=float(last_train[i]),
                val_loss=float(best_loss[i]),
                log_amp_shift=float(shift[i, 0]),
                log_amp_scale=float(scale[i, 0]),
                seconds=seconds / r,
            )
        )
    return results


def predict(lattice, config: FitConfig, results: list[FitResult], spins: torch.Tensor) -> torch.Tensor:
    """Outputs of the fitted networks on shared configurations: ``[R, B]`` - the
    probability of "+" for sign nets, log|psi| (de-standardized) for amplitude nets."""
    from torch.func import functional_call, vmap

    dev = torch.device(config.device)
    base = make_model(config.arch, lattice, config.target).to(dev, config.dtype)
    params = {k: torch.stack([res.params[k] for res in results]) for k in results[0].params}
    if hasattr(base, "stacked_forward"):
        forward = base.stacked_forward
    else:
        forward = vmap(lambda p, x: functional_call(base, p, (x,)), in_dims=(0, None))
    with torch.no_grad():
        out = forward(params, spins.to(dev, config.dtype))
    if config.target == "sign":
        return torch.softmax(out.double(), dim=-1)[..., 0]
    shift = torch.tensor([res.log_amp_shift for res in results], device=dev, dtype=torch.float64)[:, None]
    scale = torch.tensor([res.log_amp_scale for res in results], device=dev, dtype=torch.float64)[:, None]
    return out[..., 0].double() * scale + shift


# ============================================================== overlaps
def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def sign_overlap(psi, predicted_sign, mask=None) -> float:
    """|<psi|psi_sign>| where psi_sign has the exact amplitudes and the predicted signs
    (+1/-1), both restricted to ``mask`` (default: all) and normalized there:
    ``|sum psi^2 s_pred s_exact| / sum psi^2``."""
    psi, pred = _as_numpy(psi).astype(np.float64), _as_numpy(predicted_sign).astype(np.float64)
    if psi.shape != pred.shape:
        raise ValueError(f"psi {psi.shape} and predicted signs {pred.shape} differ in shape")
    if mask is not None:
        psi, pred = psi[_as_numpy(mask)], pred[_as_numpy(mask)]
    norm = np.sum(psi**2)
    if norm <= 0:
        raise ValueError("the exact state has no weight on the selected configurations")
    return float(abs(np.sum(psi**2 * np.sign(psi) * np.sign(pred))) / norm)


def amplitude_overlap(psi, predicted_log_amplitude, mask=None) -> float:
    """<psi|psi_amp> where psi_amp has the exact signs and the predicted amplitudes
    exp(log A), both restricted to ``mask`` and normalized there:
    ``sum |psi| A / sqrt(sum psi^2 sum A^2)`` (computed with a shift of log A)."""
    psi, log_a = _as_numpy(psi).astype(np.float64), _as_numpy(predicted_log_amplitude).astype(np.float64)
    if psi.shape != log_a.shape:
        raise ValueError(f"psi {psi.shape} and predicted log-amplitudes {log_a.shape} differ in shape")
    if mask is not None:
        psi, log_a = psi[_as_numpy(mask)], log_a[_as_numpy(mask)]
    if not np.all(np.isfinite(log_a)):
        raise ValueError("predicted log-amplitudes must be finite")
    norm = np.sum(psi**2)
    if norm <= 0:
        raise ValueError("the exact state has no weight on the selected configurations")
    a = np.exp(log_a - log_a.max())
    return float(np.sum(np.abs(psi) * a) / math.sqrt(norm * np.sum(a**2)))


def eval_chunk(lattice, arch: str, n_fits: int, budget_bytes: float = 2**30) -> int:
    """Basis states per evaluation chunk so that the activations of ``n_fits`` stacked
    networks stay within ``budget_bytes`` (float32). A CNN keeps ~100 floats per site
    per sample (two feature maps of 32 and 64 channels), a dense net ~130 per sample: a
    fixed chunk that suits a dense stack would need ~12 GB for 15 stacked 24-site CNNs."""
    per_sample = 100 * lattice.n_sites if arch == "cnn" else 130
    return int(max(1024, min(1 << 17, budget_bytes // (4 * per_sample * max(1, n_fits)))))


def evaluate_overlaps(lattice, config: FitConfig, results: list[FitResult], gs_list: list[GroundState],
                      excluded: list[np.ndarray | None], chunk: int | None = None) -> list[float]:
    """Overlap of each fit on the basis minus ``excluded[i]`` (sorted unique indices of
    the configurations seen in training/validation; None = full basis), accumulated in
    chunks of the basis (the whole basis never sits in memory as floats per fit).
    ``gs_list[i]`` is the ground state fit i was trained on (all share one basis)."""
    dev = torch.device(config.device)
    basis = gs_list[0].basis
    k, n = len(basis), lattice.n_sites
    r = len(results)
    psi_all = torch.stack([torch.as_tensor(g.state) for g in gs_list])  # [R, K] float64 (CPU)
    num = torch.zeros(r, dtype=torch.float64, device=dev)
    den_psi = torch.zeros(r, dtype=torch.float64, device=dev)
    den_a = torch.zeros(r, dtype=torch.float64, device=dev)
    run_max = torch.full((r,), -float("inf"), dtype=torch.float64, device=dev)
    chunk = chunk or eval_chunk(lattice, config.arch, r)
    for start in range(0, k, chunk):
        stop = min(k, start + chunk)
        spins = basis_to_spins(basis[start:stop], n).to(dev)
        out = predict(lattice, config, results, spins)  # [R, c]
        psi = psi_all[:, start:stop].to(dev)
        keep = torch.ones(r, stop - start, dtype=torch.bool)
        for i, ex in enumerate(excluded):
            if ex is not None:
                lo, hi = np.searchsorted(ex, [start, stop])
                keep[i, torch.as_tensor(ex[lo:hi] - start)] = False
        keep = keep.to(dev)
        psi = torch.where(keep, psi, torch.zeros_like(psi))
        den_psi += (psi**2).sum(1)
        if config.target == "sign":
            pred_sign = torch.where(out >= 0.5, 1.0, -1.0).double()  # "+" when p(+) >= 0.5
            num += (psi**2 * torch.sign(psi) * pred_sign).sum(1)
        else:
            log_a = torch.where(keep, out, torch.full_like(out, -float("inf")))
            new_max = torch.maximum(run_max, log_a.max(1).values)
            rescale = torch.exp(torch.where(torch.isfinite(run_max), run_max - new_max, torch.zeros_like(run_max)))
            a = torch.exp(log_a - new_max[:, None])
            num = num * rescale + (psi.abs() * a).sum(1)
            den_a = den_a * rescale**2 + (a**2).sum(1)
            run_max = new_max
    if config.target == "sign":
        overlaps = num.abs() / den_psi
    else:
        overlaps = num / torch.sqrt(den_psi * den_a)
    return [float(v) for v in overlaps.cpu()]


def evaluate_overlaps_sampled(lattice, config: FitConfig, results: list[FitResult], gs_list: list,
                              excluded: list[np.ndarray], n_eval: int, rng: np.random.Generator,
                              chunk: int = 1 << 16) -> list[tuple[float, float, float]]:
    """Monte Carlo test-set overlaps of sign fits for ground states known by samples.

    The sign overlap on the test set T (every configuration outside ``excluded[i]``, the
    sorted unique uint64 configurations seen in training/validation) is the |psi|^2
    average of sign agreement restricted to T:
        O = |sum_T psi^2 sgn(psi) sgn_pred| / sum_T psi^2 = |E[a(s) | s in T]|,  s ~ |psi|^2,
    so ``n_eval`` fresh samples, the ones outside ``excluded`` kept, estimate it without
    enumerating K states. Returns ``(overlap, standard error, test weight)`` per fit, the
    test weight being the kept fraction (an estimate of sum_T psi^2). Amplitude overlaps
    need sum_T a^2 over all of T and are not estimated this way."""
    if config.target != "sign":
        raise ValueError("sampled test sets support the sign target only (amplitude overlaps need the full basis)")
    dev = torch.device(config.device)
    out = []
    for i, (res, gs, ex) in enumerate(zip(results, gs_list, excluded)):
        states, psi = gs.sample(n_eval, rng)
        keep = ~np.isin(states, ex)
        states, psi = states[keep], psi[keep]
        agree = []
        for start in range(0, len(states), chunk):
            spins = basis_to_spins(states[start : start + chunk], lattice.n_sites).to(dev)
            p_plus = predict(lattice, config, [res], spins)[0]
            pred = torch.where(p_plus >= 0.5, 1.0, -1.0).double().cpu().numpy()
            agree.append(pred * np.sign(psi[start : start + chunk]))
        a = np.concatenate(agree) if agree else np.zeros(0)
        if len(a) < 2:
            raise ValueError(f"fit {i}: fewer than 2 of {n_eval} evaluation samples fall in the test set")
        out.append((abs(float(a.mean())), float(a.std(ddof=1) / math.sqrt(len(a))), float(keep.mean())))
    return out


# ============================================================== sweeps
def parse_j2(text: str | float | list) -> list[float]:
    """``"A:B:STEP"`` (B included), ``"0.4,0.5,1"`` or a number -> list of J2/J1."""
    if isinstance(text, (int, float)):
        return [float(text)]
    if isinstance(text, (list, tuple)):
        return [float(v) for v in text]
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            count = int(math.floor((parts[1] - parts[0]) / parts[2] + 1e-9)) + 1
            return [round(parts[0] + i * parts[2], 10) for i in range(count)]
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"J2 must look like A:B:STEP (A <= B, STEP > 0) or a comma list, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"J2 must look like A:B:STEP or a comma list of finite numbers, got {text!r}")
    return values


def parse_floats(text: str | list, name: str) -> list[float]:
    if isinstance(text, (list, tuple)):
        return [float(v) for v in text]
    try:
        values = [float(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"{name} must be a comma list of numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{name} is empty")
    return values


CSV_FIELDS = [
    "mode", "cluster", "n_sites", "dim", "j1", "j2", "eps_train", "eps_val", "arch", "target", "repeat",
    "seed", "n_train", "n_val", "n_test", "test_weight", "overlap", "train_loss", "val_loss", "epochs",
    "best_epoch", "fit_seconds", "energy", "units", "device",
]


def _row_key(row: dict) -> tuple:
    return (row["mode"], row["cluster"], f"{float(row['j2']):.6g}", f"{float(row['eps_train']):.6g}",
            row["arch"], row["target"], int(row["repeat"]))


def read_rows(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def _task_seed(seed: int, cluster: str, j2: float, eps: float, repeat: int) -> tuple[int, int]:
    """(dataset seed, network seed) from the run seed and the task's coordinates, so any
    subset of a sweep (a resumed run, a single J2) reproduces the same numbers."""
    ss = np.random.SeedSequence([seed, sum(map(ord, cluster)), int(round(j2 * 1e6)) + 10**9, int(round(eps * 1e9)), repeat])
    a, b = ss.generate_state(2)
    return int(a), int(b)


class _GroundStates:
    """Ground states per J2, computed once per sweep (ED is the expensive part)."""

    def __init__(self, lattice, device, cache_dir, progress):
        self.lattice, self.device, self.cache_dir, self.progress = lattice, device, cache_dir, progress
        self.cache: dict[float, GroundState] = {}
        self.seconds = 0.0

    def get(self, j2: float) -> GroundState:
        from .hamiltonian import Heisenberg

        if j2 not in self.cache:
            t0 = time.perf_counter()
            ham = Heisenberg(self.lattice, 1.0, j2, units=UNITS)
            self.cache[j2] = ground_state(ham, device=self.device, cache_dir=self.cache_dir, progress=self.progress)
            self.seconds += time.perf_counter() - t0
        return self.cache[j2]


def _run_supervised(mode: str, cluster: str, j2_values: list[float], eps_values: list[float], archs: list[str],
                    targets: list[str], repeats: int, out: Path, *, csv_name: str, eps_val: float | None = None,
                    seed: int = 0, device: str = "cpu", lr: float = 1e-3, batch_size: int = 128,
                    max_epochs: int = 200, patience: int = 10, group_size: int = 0, cache_dir=None,
                    progress: bool = True, states: _GroundStates | None = None, n_eval: int = 1 << 20) -> Path:
    """Shared engine of the sweeps: for each eps, arch, target and group of J2 values,
    build every (J2, repeat) dataset, fit them as one vectorized stack, evaluate the
    overlaps and append the rows. Rows already in the CSV are skipped (resume).

    Clusters above ``SAMPLED_ABOVE`` sites use a :class:`SampledGroundState`: training
    and validation sets are drawn from the symmetric ED state, and the test-set overlap is
    estimated from ``n_eval`` fresh samples (standard error <= 1/sqrt(n_eval) for the
    kept ones; the row's ``test_weight`` is then the kept fraction)."""
    from tqdm.auto import tqdm

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for arch in archs:
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")
    for target in targets:
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    if mode == "generalization":
        for eps in eps_values:
            _check_eps(eps, "eps_train")
    if eps_val is not None:
        _check_eps(eps_val, "eps_val")
    lattice = resolve_lattice(cluster)
    if "cnn" in archs:
        from .models.cnn import grid_layout

        grid_layout(lattice)  # fail now, not after the ED
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / csv_name
    done = {_row_key(r) for r in read_rows(path)}
    states = states or _GroundStates(lattice, device, cache_dir, progress)
    group_size = group_size or len(j2_values)
    jobs = [(eps, arch, target, j2_values[i : i + group_size])
            for eps in eps_values for arch in archs for target in targets
            for i in range(0, len(j2_values), group_size)]
    started = time.perf_counter()
    fit_seconds = 0.0
    for eps, arch, target, group in tqdm(jobs, desc=f"{mode} {cluster}", disable=not progress):
        tasks = [(j2, rep) for j2 in group for rep in range(repeats)
                 if (mode, cluster, f"{j2:.6g}", f"{eps:.6g}", arch, target, rep) not in done]
        if not tasks:
            continue
        config = FitConfig(arch, target, lr, batch_size, max_epochs, patience, device)
        datasets, excluded, gs_list, meta = [], [], [], []
        for j2, rep in tasks:
            gs = states.get(j2)
            data_seed, net_seed = _task_seed(seed, cluster, j2, eps, rep)
            if isinstance(gs, SampledGroundState):
                if mode == "expressibility":
                    raise ValueError(f"{cluster}: K = {gs.dim} states is too large to train on the full basis")
                rng = np.random.default_rng(data_seed)
                ev = eps_val if eps_val is not None else default_eps_val(eps, gs.dim)
                n_t, n_v = max(1, round(eps * gs.dim)), max(1, round(ev * gs.dim))
                states_t, psi_t = gs.sample(n_t, rng)
                states_v, psi_v = gs.sample(n_v, rng)
                datasets.append(FitData(basis_to_spins(states_t, lattice.n_sites), torch.as_tensor(psi_t),
                                        basis_to_spins(states_v, lattice.n_sites), torch.as_tensor(psi_v), net_seed))
                seen = np.union1d(states_t, states_v)
                excluded.append(seen)
                meta.append(dict(eps_val=ev, n_train=n_t, n_val=n_v, n_test=gs.dim - len(seen), test_weight=float("nan"),
                                 eval_seed=data_seed + 1))
                gs_list.append(gs)
                continue
            psi = torch.as_tensor(gs.state)
            if mode == "expressibility":
                # Full basis, each state once, loss weighted by K |psi|^2: the |psi|^2
                # expectation of the loss that the sampled sets estimate.
                weights = torch.as_tensor(gs.state**2 * gs.dim)
                x = basis_to_spins(gs.basis, lattice.n_sites)
                datasets.append(FitData(x, psi, x, psi, net_seed, weights, weights))
                excluded.append(None)
                meta.append(dict(eps_val=1.0, n_train=gs.dim, n_val=gs.dim, n_test=gs.dim, test_weight=1.0))
            else:
                ev = eps_val if eps_val is not None else default_eps_val(eps, gs.dim)
                split = make_split(gs.state**2, eps, ev, np.random.default_rng(data_seed))
                idx_t, idx_v = split.train, split.val
                datasets.append(FitData(basis_to_spins(gs.basis[idx_t], lattice.n_sites), psi[idx_t],
                                        basis_to_spins(gs.basis[idx_v], lattice.n_sites), psi[idx_v], net_seed))
                excluded.append(split.seen)
                meta.append(dict(eps_val=ev, n_train=len(idx_t), n_val=len(idx_v), n_test=len(split.test),
                                 test_weight=float(np.sum(gs.state[split.test] ** 2))))
            gs_list.append(gs)
        t0 = time.perf_counter()
        results = fit_many(lattice, datasets, config, progress=progress)
        fit_seconds += time.perf_counter() - t0
        if isinstance(gs_list[0], SampledGroundState):
            overlaps = []
            for res, gs, ex, m in zip(results, gs_list, excluded, meta):
                (ov, err, weight), = evaluate_overlaps_sampled(lattice, config, [res], [gs], [ex], n_eval,
                                                               np.random.default_rng(m["eval_seed"]))
                overlaps.append(ov)
                m["test_weight"] = weight
        else:
            overlaps = evaluate_overlaps(lattice, config, results, gs_list, excluded)
        rows = []
        for (j2, rep), res, ov, m, gs in zip(tasks, results, overlaps, meta, gs_list):
            rows.append(dict(
                mode=mode, cluster=cluster, n_sites=lattice.n_sites, dim=gs.dim, j1=1.0, j2=j2, eps_train=eps,
                eps_val=m["eps_val"], arch=arch, target=target, repeat=rep, seed=seed, n_train=m["n_train"],
                n_val=m["n_val"], n_test=m["n_test"], test_weight=f"{m['test_weight']:.6g}", overlap=f"{ov:.6f}",
                train_loss=f"{res.train_loss:.6g}", val_loss=f"{res.val_loss:.6g}", epochs=res.epochs,
                best_epoch=res.best_epoch, fit_seconds=f"{res.seconds:.3f}", energy=f"{gs.energy:.10g}",
                units=gs.units, device=device,
            ))
        _append_rows(path, rows)
    info = {
        "command": mode, "cluster": cluster, "n_sites": lattice.n_sites, "j2": j2_values, "eps_train": eps_values,
        "archs": archs, "targets": targets, "repeats": repeats, "seed": seed, "device": device, "lr": lr,
        "batch_size": batch_size, "max_epochs": max_epochs, "patience": patience, "csv": csv_name,
        "units": UNITS, "energies": {f"{j2:g}": g.energy for j2, g in states.cache.items()},
        "energy_units": UNITS, "ed_seconds": round(states.seconds, 3), "fit_seconds": round(fit_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    (out / f"{Path(csv_name).stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    return path


def run_generalization(cluster: str, j2_values, eps: float = 0.01, arch="dense2", target="sign", repeats: int = 5,
                       out="runs/study", **kwargs) -> Path:
    """Fig. 2a-c / Fig. 4: test-set overlap vs J2 at one eps_train. ``arch``/``target``
    may be lists. Writes ``generalization.csv`` (+ ``.json``) in ``out``."""
    archs = [arch] if isinstance(arch, str) else list(arch)
    targets = [target] if isinstance(target, str) else list(target)
    return _run_supervised("generalization", cluster, parse_j2(j2_values), [_check_eps(eps, "eps_train")], archs,
                           targets, repeats, out, csv_name="generalization.csv", **kwargs)


def run_eps_sweep(cluster: str, j2_values, eps_values, arch="dense2", target="sign", repeats: int = 5,
                  out="runs/study", csv_name: str = "eps_sweep.csv", **kwargs) -> Path:
    """Fig. 3: test-set overlap vs eps_train at fixed J2 values."""
    archs = [arch] if isinstance(arch, str) else list(arch)
    targets = [target] if isinstance(target, str) else list(target)
    eps_values = [_check_eps(e, "eps_train") for e in parse_floats(eps_values, "eps")]
    return _run_supervised("generalization", cluster, parse_j2(j2_values), eps_values, archs, targets, repeats, out,
                           csv_name=csv_name, **kwargs)


def run_expressibility(cluster: str, j2_values, arch="dense2", target="sign", repeats: int = 1, out="runs/study",
                       **kwargs) -> Path:
    """Dashed lines of Fig. 2: fit on the full basis (loss weighted by |psi|^2), overlap
    on the full basis. Writes ``expressibility.csv``."""
    archs = [arch] if isinstance(arch, str) else list(arch)
    targets = [target] if isinstance(target, str) else list(target)
    kwargs.setdefault("batch_size", 1024)  # K samples an epoch: larger batches keep it affordable
    return _run_supervised("expressibility", cluster, parse_j2(j2_values), [1.0], archs, targets, repeats, out,
                           csv_name="expressibility.csv", **kwargs)


def critical_eps(rows: list[dict], threshold: float = CRITICAL_OVERLAP) -> list[dict]:
    """Per (cluster, J2, arch, target): the smallest eps_train whose mean test overlap is
    >= ``threshold`` (None when no eps reaches it)."""
    groups: dict[tuple, dict[float, list[float]]] = {}
    dims = {}
    for row in rows:
        key = (row["cluster"], float(row["j2"]), row["arch"], row["target"])
        groups.setdefault(key, {}).setdefault(float(row["eps_train"]), []).append(float(row["overlap"]))
        dims[row["cluster"]] = int(row["dim"])
    result = []
    for (cluster, j2, arch, target), by_eps in sorted(groups.items()):
        crit = None
        for eps in sorted(by_eps):
            if np.mean(by_eps[eps]) >= threshold:
                crit = eps
                break
        result.append(dict(cluster=cluster, j2=j2, arch=arch, target=target, dim=dims[cluster], eps_critical=crit,
                           n_train_critical=None if crit is None else round(crit * dims[cluster]), threshold=threshold))
    return result


def run_critical_eps(clusters: list[str], j2_values, eps_values, arch="dense2", target="sign", repeats: int = 3,
                     out="runs/study", **kwargs) -> Path:
    """Fig. 5: eps sweeps on several clusters (``eps_sweep.csv``), then the critical
    eps per cluster (``critical_eps.csv``)."""
    out = Path(out)
    for cluster in clusters:
        run_eps_sweep(cluster, j2_values, eps_values, arch, target, repeats, out, **kwargs)
    rows = critical_eps(read_rows(out / "eps_sweep.csv"))
    with open(out / "critical_eps.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["cluster"])
        writer.writeheader()
        writer.writerows(rows)
    return out / "critical_eps.csv"


# ============================================================== plots
def _mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), se


def _save_overlap_plot(fig, ax, xlabel: str, title: str, path: Path) -> Path:
    """Label a test-overlap plot (y in [0, 1]), save it to ``path`` and close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("overlap on the test set")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(rows, x_field, keys):
    """{series key: (x [M], mean [M], se [M])} grouping rows by ``keys``."""
    groups: dict[tuple, dict[float, list[float]]] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        groups.setdefault(key, {}).setdefault(float(row[x_field]), []).append(float(row["overlap"]))
    out = {}
    for key, by_x in sorted(groups.items()):
        xs = sorted(by_x)
        stats = [_mean_se(by_x[x]) for x in xs]
        out[key] = (np.array(xs), np.array([s[0] for s in stats]), np.array([s[1] for s in stats]))
    return out


_COLORS = {"dense1": "tab:blue", "dense2": "tab:orange", "cnn": "tab:green", "sign": "tab:red", "amplitude": "tab:green"}


def plot_directory(directory, show_progress: bool = False) -> list[Path]:
    """Make every figure the CSVs in ``directory`` support; returns the PNG paths.

    - ``generalization.csv``: overlap vs J2 per cluster (one eps: Fig. 2a-c / Fig. 4;
      ``expressibility.csv`` rows appear as dashed lines), and overlap vs eps per J2 when
      several eps were run (Fig. 3);
    - ``eps_sweep.csv``: overlap vs eps (Fig. 3); with ``critical_eps.csv``: Fig. 5;
    - ``sr.csv``: SR overlap vs J2 (Fig. 2d-f)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    written = []
    express = read_rows(directory / "expressibility.csv")
    for name in ("generalization.csv", "eps_sweep.csv"):
        rows = read_rows(directory / name)
        for cluster in sorted({r["cluster"] for r in rows}):
            crow = [r for r in rows if r["cluster"] == cluster]
            eps_values = sorted({float(r["eps_train"]) for r in crow})
            j2_values = sorted({float(r["j2"]) for r in crow})
            kind = cluster.split("-")[0]
            if len(j2_values) > 1:
                for eps in eps_values:
                    sel = [r for r in crow if float(r["eps_train"]) == eps]
                    if len({r["j2"] for r in sel}) < 2:
                        continue
                    fig, ax = plt.subplots(figsize=(5.5, 3.8))
                    if kind in FRUSTRATED_REGIONS:
                        ax.axvspan(*FRUSTRATED_REGIONS[kind], color="0.88", zorder=0, label="frustrated region")
                    for (arch, target), (x, m, se) in _series(sel, "j2", ("arch", "target")).items():
                        color = _COLORS[target] if len({r["arch"] for r in sel}) == 1 else _COLORS[arch]
                        marker = "o" if target == "sign" else "s"
                        ax.errorbar(x, m, yerr=se, marker=marker, ms=4, capsize=2, color=color, label=f"{arch} {target}")
                    for (arch, target), (x, m, se) in _series([r for r in express if r["cluster"] == cluster], "j2",
                                                                ("arch", "target")).items():
                        color = _COLORS[target] if len({r["arch"] for r in sel}) == 1 else _COLORS[arch]
                        ax.plot(x, m, "--", color=color, label=f"{arch} {target} (full basis)")
                    written.append(_save_overlap_plot(
                        fig, ax, "J2 / J1", f"{cluster}, eps_train = {eps:g}",
                        directory / f"{Path(name).stem}_{cluster}_eps{eps:g}_vs_j2.png"))
            if len(eps_values) > 1:
                for (arch, target) in sorted({(r["arch"], r["target"]) for r in crow}):
                    sel = [r for r in crow if r["arch"] == arch and r["target"] == target]
                    fig, ax = plt.subplots(figsize=(5.5, 3.8))
                    for (j2,), (x, m, se) in _series(sel, "eps_train", ("j2",)).items():
                        ax.errorbar(x, m, yerr=se, marker="o", ms=4, capsize=2, label=f"J2/J1 = {float(j2):g}")
                    ax.axhline(CRITICAL_OVERLAP, color="0.6", lw=0.8, ls=":")
                    ax.set_xscale("log")
                    written.append(_save_overlap_plot(
                        fig, ax, "eps_train", f"{cluster}, {arch} {target}",
                        directory / f"{Path(name).stem}_{cluster}_{arch}_{target}_vs_eps.png"))
    crit = read_rows(directory / "critical_eps.csv")
    crit = [r for r in crit if r.get("eps_critical") not in (None, "", "None")]
    if crit:
        fig, ax = plt.subplots(figsize=(5, 3.8))
        for (j2, arch, target) in sorted({(r["j2"], r["arch"], r["target"]) for r in crit}):
            sel = sorted((r for r in crit if (r["j2"], r["arch"], r["target"]) == (j2, arch, target)),
                         key=lambda r: int(r["dim"]))
            ax.plot([int(r["dim"]) for r in sel], [float(r["n_train_critical"]) for r in sel], "o-",
                    label=f"J2/J1 = {float(j2):g} ({arch} {target})")
            for r in sel:
                ax.annotate(r["cluster"], (int(r["dim"]), float(r["n_train_critical"])), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Hilbert-space dimension K")
        ax.set_ylabel(f"critical training-set size (overlap >= {CRITICAL_OVERLAP})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = directory / "critical_eps.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    sr_rows = read_rows(directory / "sr.csv")
    for cluster in sorted({r["cluster"] for r in sr_rows}):
        sel = [r for r in sr_rows if r["cluster"] == cluster]
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        kind = cluster.split("-")[0]
        if kind in FRUSTRATED_REGIONS:
            ax.axvspan(*FRUSTRATED_REGIONS[kind], color="0.88", zorder=0, label="frustrated region")
        for _, (x, m, se) in _series(sel, "j2", ()).items():
            ax.errorbar(x, m, yerr=se, marker="o", ms=4, capsize=2, color="tab:purple", label="SR, 2 x dense2")
        ax.set_xlabel("J2 / J1")
        ax.set_ylabel("overlap with the ED ground state")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{cluster}: stochastic reconfiguration")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = directory / f"sr_{cluster}_vs_j2.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ============================================================== command line
def _add_fit_options(p, repeats_default=5):
    p.add_argument("--repeats", type=int, default=repeats_default, help="independent datasets/initializations per point")
    p.add_argument("--out", required=True, help="output directory (CSV, JSON, PNG); reruns resume")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10, help="early stopping: epochs without validation improvement")
    p.add_argument("--eps-val", type=float, default=None, help="validation fraction (default: eps/4, >= 256 states)")
    p.add_argument("--group-size", type=int, default=0, help="J2 values fitted as one vectorized stack (0 = all)")
    p.add_argument("--cache-dir", default=None, help="ED cache folder (naqs.ed)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _fit_kwargs(args) -> dict:
    return dict(seed=args.seed, device=args.device, lr=args.lr, batch_size=args.batch_size, max_epochs=args.max_epochs,
                patience=args.patience, group_size=args.group_size, cache_dir=args.cache_dir, progress=not args.quiet)


def _cmd_generalization(args):
    path = run_generalization(args.cluster, args.j2, args.eps, _split_list(args.arch), _split_list(args.target),
                              args.repeats, args.out, eps_val=args.eps_val, **_fit_kwargs(args))
    return path


def _cmd_eps_sweep(args):
    return run_eps_sweep(args.cluster, args.j2, args.eps, _split_list(args.arch), _split_list(args.target),
                         args.repeats, args.out, eps_val=args.eps_val, **_fit_kwargs(args))


def _cmd_critical_eps(args):
    return run_critical_eps(_split_list(args.clusters), args.j2, args.eps, _split_list(args.arch),
                            _split_list(args.target), args.repeats, args.out, eps_val=args.eps_val, **_fit_kwargs(args))


def _cmd_expressibility(args):
    kwargs = _fit_kwargs(args)
    return run_expressibility(args.cluster, args.j2, _split_list(args.arch), _split_list(args.target), args.repeats,
                              args.out, **kwargs)


def _cmd_sr(args):
    from . import sr

    return sr.run_sr_sweep(args.cluster, parse_j2(args.j2), args.out, repeats=args.repeats, steps=args.steps,
                           n_samples=args.samples, n_chains=args.chains, lr=args.lr, diag_shift=args.diag_shift, seed=args.seed,
                           device=args.device, checkpoint_every=args.checkpoint_every, progress=not args.quiet,
                           cache_dir=args.cache_dir)


def _cmd_plot(args):
    paths = plot_directory(args.dir)
    for p in paths:
        print(p)
    if not paths:
        print(f"no study CSV in {args.dir}")
    return None


def add_study_arguments(subparsers) -> None:
    """Add the ``study`` sub-commands to ``subparsers`` (the object returned by the
    ``study`` parser's ``add_subparsers()``). Each sets ``args.study_func``; call
    :func:`run_study_cli` with the parsed namespace."""
    p = subparsers.add_parser("generalization", help="Fig. 2a-c / 4: test-set overlap vs J2 at one eps_train")
    p.add_argument("--cluster", required=True, help="kagome-24, square-24, triangle-24, ... or square-4x4")
    p.add_argument("--j2", required=True, help="A:B:STEP or comma list")
    p.add_argument("--eps", type=float, default=0.01, help="training fraction eps_train in (0, 1]")
    p.add_argument("--arch", default="dense2", help="dense1|dense2|cnn (comma list allowed)")
    p.add_argument("--target", default="sign", help="sign|amplitude (comma list allowed)")
    _add_fit_options(p)
    p.set_defaults(study_func=_cmd_generalization)

    p = subparsers.add_parser("eps-sweep", help="Fig. 3: test-set overlap vs eps_train at fixed J2")
    p.add_argument("--cluster", required=True)
    p.add_argument("--j2", default="0.4,0.5,0.6,1.0")
    p.add_argument("--eps", default="0.0005,0.001,0.002,0.005,0.01,0.02,0.05", help="comma list of eps_train")
    p.add_argument("--arch", default="dense2")
    p.add_argument("--target", default="sign")
    _add_fit_options(p, 3)
    p.set_defaults(study_func=_cmd_eps_sweep)

    p = subparsers.add_parser("critical-eps", help="Fig. 5: critical eps_train vs Hilbert-space dimension")
    p.add_argument("--clusters", default="square-24,square-30,square-36")
    p.add_argument("--j2", default="0.0")
    p.add_argument("--eps", default="0.0001,0.0002,0.0005,0.001,0.002,0.005,0.01,0.02")
    p.add_argument("--arch", default="dense2")
    p.add_argument("--target", default="sign")
    _add_fit_options(p, 3)
    p.set_defaults(study_func=_cmd_critical_eps)

    p = subparsers.add_parser("expressibility", help="Fig. 2 dashed: fit and overlap on the full basis")
    p.add_argument("--cluster", required=True)
    p.add_argument("--j2", required=True)
    p.add_argument("--arch", default="dense2")
    p.add_argument("--target", default="sign")
    _add_fit_options(p, 1)
    p.set_defaults(study_func=_cmd_expressibility, batch_size=1024)

    p = subparsers.add_parser("sr", help="Fig. 2d-f: stochastic reconfiguration, overlap with ED vs J2")
    p.add_argument("--cluster", required=True)
    p.add_argument("--j2", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--samples", type=int, default=1024)
    p.add_argument("--chains", type=int, default=64,
                   help="Metropolis chains (continued across steps); on a GPU use many (e.g. = --samples): "
                        "the moves between samples are sequential, the chains run in parallel")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--diag-shift", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(study_func=_cmd_sr)

    p = subparsers.add_parser("plot", help="make the PNG figures of a study output directory")
    p.add_argument("dir")
    p.set_defaults(study_func=_cmd_plot, no_plot=True)


def run_study_cli(args) -> int:
    """Run a parsed ``naqs study ...`` command; returns an exit code."""
    func = getattr(args, "study_func", None)
    if func is None:
        raise SystemExit("naqs study: choose a sub-command: generalization, eps-sweep, critical-eps, expressibility, sr, plot")
    result = func(args)
    if result is not None:
        print(result)
    if not getattr(args, "no_plot", True) and getattr(args, "out", None):
        for path in plot_directory(args.out):
            print(path)
    return 0


def main(argv=None) -> int:
    """``python -m naqs.study ...`` (the same sub-commands as ``naqs study``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="naqs study", description=__doc__.splitlines()[0])
    add_study_arguments(parser.add_subparsers(dest="study_command"))
    return run_study_cli(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
