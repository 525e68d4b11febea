"""Variational Monte Carlo ground-state search (NAQS paper, eq. 6 and app. B.3).

One step: draw a batch (exact i.i.d. samples, or Metropolis chains for the baseline),
compute local energies, and descend the gradient of eq. 6,
``dE/dW = E_s[ 2 Re((E_loc(s) - E)^* d log psi(s)/dW) ]``, realized as the surrogate loss
``2 Re mean((E_loc - mean E_loc)^* log psi)`` with E_loc held constant.

The optimizer schedule is a list of stages (Adam with a small batch, Adam with a larger
batch, SGD with momentum and a larger batch still), each configurable from a TOML/JSON
file and the command line. Every step's metrics go to ``metrics.jsonl``; a checkpoint is
written atomically every ``checkpoint_every`` steps, and ``resume`` continues from it
bit-for-bit (model, optimizer, random streams and Markov chains are all restored).

Data parallelism: given a :class:`naqs.distributed.DistributedContext` (``naqs train``
makes one under torchrun), each of the P ranks draws ``batch / P`` samples (and runs
``mcmc_chains / P`` Markov chains) from its own stream; statistics and gradients are
all-reduced so that every rank takes the single-process step on the union of the
samples, and rank 0 alone writes files. See naqs/distributed.py and docs/distributed.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import time
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed as dist_utils
from . import ops, sampling
from .gradient_step import GradientStep, set_capturable
from .hamiltonian import Hamiltonian, Heisenberg, TransverseFieldIsing
from .lattice import Lattice, make_lattice
from .local_energy import last_local_energy_path, local_energy
from .models import PixelCNN, SymmetricModel

__all__ = ["Stage", "VMCConfig", "VMC", "build_system", "build_model", "load_config", "default_stages", "vmc_loss", "estimate"]


@dataclass
class Stage:
    """One stage of the optimization schedule."""

    steps: int
    batch: int
    optimizer: str = "adam"  # "adam" or "sgd" (with momentum)
    lr: float = 1e-3
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.9)

    def validate(self, index: int) -> None:
        if self.steps < 0 or self.batch < 1:
            raise ValueError(f"stage {index}: steps must be >= 0 and batch >= 1, got {self.steps}, {self.batch}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"stage {index}: optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"stage {index}: lr must be a positive number, got {self.lr}")


def default_stages(total_steps: int | None = None) -> list[Stage]:
    """The paper's schedule (Adam / batch 100 for 10k steps, Adam / batch 1000 for 10k,
    SGD with momentum / batch 8192 for 5k), scaled to ``total_steps`` when given.

    The paper gives no learning rate for the SGD stage. SGD does not normalize the
    gradient as Adam does, and the energy gradient grows with the number of sites: with
    lr 1e-3 (momentum 0.9) a 12x12 Ising run (10 blocks, batch 1000, 80 steps on an H100)
    went from E = -455.7 to -191.5 two steps into the SGD stage and collapsed onto the
    fully polarized state (E = -264, <m> = 1); with 1e-4 or 1e-5 it held -455.6..-455.9.
    Hence 1e-4."""
    stages = [
        Stage(10_000, 128, "adam", 1e-3),
        Stage(10_000, 1024, "adam", 1e-3),
        Stage(5_000, 8192, "sgd", 1e-4, momentum=0.9),
    ]
    if total_steps is not None:
        total = sum(s.steps for s in stages)
        stages = [dataclasses.replace(s, steps=max(1, round(s.steps * total_steps / total))) for s in stages]
        stages[-1].steps = max(1, total_steps - sum(s.steps for s in stages[:-1]))
    return stages


@dataclass
class VMCConfig:
    # physical system
    model: str = "ising"  # "ising" or "heisenberg"
    lattice: str = "square"
    size: str = "4x4"
    pbc: bool = False
    gamma: float = 3.0
    j: float = 1.0
    j1: float = 1.0
    j2: float = 0.0
    units: str = "S"  # Heisenberg units ("S" or "pauli"); Ising is always Pauli
    sz: int | None = None  # 2 S^z_total sector (Heisenberg default: 0 or 1)
    marshall: bool | None = None  # Marshall sign prefactor (Heisenberg default: on if bipartite)
    # network
    n_blocks: int = 10
    channels: int = 32
    symmetrize: bool = False
    spin_flip: bool = False
    # optimization
    stages: list[Stage] = field(default_factory=default_stages)
    sampler: str = "exact"  # "exact" or "mcmc"
    mcmc_chains: int = 64
    mcmc_burn_in: int = 100
    mcmc_thin: int = 10
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    # product arithmetic of the CUDA kernels for sampling and local energies: "ffma"
    # (default, within 1e-6 of float64), "3xtf32" or "tf32" (tensor cores, a faster
    # training mode with a measured energy bias: docs/engine.md, Precision)
    engine_math: str = "ffma"
    # replay the gradient-and-update phase from a CUDA graph (CUDA only; saves the
    # launch overhead of its ~2000 small GPU operations, keeps their activations
    # between steps)
    gradient_graph: bool = True
    checkpoint_every: int = 100
    eval_batch: int = 4096
    exact: bool = True  # compare with exact diagonalization when small enough

    def validate(self) -> None:
        if self.model not in ("ising", "heisenberg"):
            raise ValueError(f"model must be 'ising' or 'heisenberg', got {self.model!r}")
        if self.sampler not in ("exact", "mcmc"):
            raise ValueError(f"sampler must be 'exact' or 'mcmc', got {self.sampler!r}")
        if self.engine_math not in ops.ENGINE_MATH_MODES:
            raise ValueError(f"engine_math must be one of {ops.ENGINE_MATH_MODES}, got {self.engine_math!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:k]', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but torch sees no CUDA device here")
        if self.checkpoint_every < 1 or self.eval_batch < 1:
            raise ValueError("checkpoint_every and eval_batch must be >= 1")
        if not self.stages:
            raise ValueError("the schedule needs at least one stage")
        for i, stage in enumerate(self.stages):
            stage.validate(i)
        if self.mcmc_chains < 1 or self.mcmc_thin < 1 or self.mcmc_burn_in < 0:
            raise ValueError("mcmc_chains, mcmc_thin must be >= 1 and mcmc_burn_in >= 0")

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stages"] = [dataclasses.asdict(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "VMCConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        data = dict(data)
        if "stages" in data:
            stages = []
            for i, s in enumerate(data["stages"]):
                try:
                    stage = Stage(**s)
                except TypeError as err:
                    raise ValueError(f"stage {i}: {err}") from err
                stage.betas = tuple(stage.betas)
                stages.append(stage)
            data["stages"] = stages
        return cls(**data)


def load_config(path: str | os.PathLike) -> dict:
    """Read a TOML or JSON configuration file into a dict (keys of VMCConfig)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    if path.suffix == ".toml":
        return tomllib.loads(text)
    raise ValueError(f"configuration file must end in .toml or .json, got {path.name}")


def build_system(config: VMCConfig) -> tuple[Lattice, Hamiltonian]:
    lattice = make_lattice(config.lattice, config.size, config.pbc)
    if lattice.shape is None:
        raise ValueError(f"the PixelCNN needs a grid lattice; {lattice.name} has no Lx x Ly shape")
    if config.model == "ising":
        return lattice, TransverseFieldIsing(lattice, config.gamma, config.j)
    return lattice, Heisenberg(lattice, config.j1, config.j2, units=config.units)


def build_model(config: VMCConfig, lattice: Lattice):
    lx, ly = lattice.shape
    magnetization = None
    sign_rule = None
    if config.model == "heisenberg":
        magnetization = config.sz if config.sz is not None else lattice.n_sites % 2
        marshall = config.marshall if config.marshall is not None else lattice.sublattice is not None
        if marshall:
            if lattice.sublattice is None:
                raise ValueError(f"the Marshall sign needs a bipartite lattice; {lattice.name} is not")
            sign_rule = lattice.sublattice
    elif config.sz is not None:
        magnetization = config.sz
    model = PixelCNN(lx, ly, config.n_blocks, config.channels, magnetization=magnetization, sign_rule=sign_rule)
    if config.symmetrize:
        perms, flips = lattice.symmetry_group(spin_flip=config.spin_flip)
        model = SymmetricModel(model, perms, flips)
    elif config.spin_flip:  # the two-element group {1, global spin inversion}
        n = lattice.n_sites
        model = SymmetricModel(model, np.stack([np.arange(n), np.arange(n)]), np.array([False, True]))
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    return model.to(device=config.device, dtype=dtype)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def vmc_loss(
    eloc: torch.Tensor, log_psi: torch.Tensor, weights: torch.Tensor | None = None, energy: complex | None = None
) -> torch.Tensor:
    """Surrogate loss whose gradient is eq. 6: ``2 Re E[(E_loc - E)^* d log psi]``.

    ``eloc`` is held constant; ``weights`` (summing to 1) replace the sample mean, so
    that with ``weights = |psi|^2`` over the whole basis the gradient is exact.
    ``energy`` (default: the weighted mean of ``eloc``) is the centering value; a rank
    of a data-parallel run passes the GLOBAL mean and weights ``1 / B_global`` on its
    own samples, so that the ranks' gradients sum to the single-process one."""
    eloc = eloc.detach()
    if weights is None:
        weights = torch.full(eloc.shape, 1.0 / max(1, eloc.numel()), dtype=torch.float64, device=eloc.device)
    weights = weights.detach().to(torch.float64)
    if energy is None:
        energy = (weights * eloc).sum()
    centered = ((eloc - energy).conj() * weights).to(log_psi.dtype)
    return 2.0 * (centered * log_psi).real.sum()


def estimate(eloc: torch.Tensor, spins: torch.Tensor) -> dict:
    """Energy, its standard error (i.i.d. estimate), variance and magnetizations."""
    e = eloc.real.double()
    n = spins.shape[1]
    total = spins.double().sum(1)
    count = e.numel()
    variance = float(e.var(unbiased=True)) if count > 1 else float("nan")
    return {
        "energy": float(e.mean()),
        "energy_error": math.sqrt(variance / count) if count > 1 else float("nan"),
        "variance": variance,
        "energy_imag": float(eloc.imag.double().mean()),
        "magnetization": float(total.mean() / n),
        "abs_magnetization": float(total.abs().mean() / n),
    }


class VMC:
    """The VMC driver. ``run()`` trains (resuming when asked), evaluates and writes
    ``metrics.jsonl``, ``checkpoint.pt``, ``summary.json``, ``config.json`` and plots
    into ``out_dir``.

    ``dist`` (a :class:`naqs.distributed.DistributedContext`, or None for one process)
    makes the run data-parallel: build the VMC on every rank with the same config; only
    rank 0 touches ``out_dir`` (a shared file system is not needed: rank 0 reads the
    checkpoint on resume and sends it to the others)."""

    def __init__(self, config: VMCConfig, out_dir: str | os.PathLike, progress: bool = True, dist=None):
        config.validate()
        self.dist = dist
        self.rank = dist.rank if dist is not None else 0
        self.world_size = dist.world_size if dist is not None else 1
        if dist is not None:
            config.device = dist.device  # cuda:LOCAL_RANK (or cpu) on this rank
        # every rank must hold the same number of samples and chains: check before any
        # collective, so that a bad batch fails on all ranks at once with the same message
        for i, stage in enumerate(config.stages):
            dist_utils.split_batch(stage.batch, self.world_size, f"stage {i}: batch")
        if config.sampler == "mcmc":
            dist_utils.split_batch(config.mcmc_chains, self.world_size, "mcmc_chains")
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.lattice, self.hamiltonian = build_system(config)
        torch.manual_seed(config.seed)  # parameter initialization
        self.model = build_model(config, self.lattice)
        self.generator = torch.Generator(device=config.device).manual_seed(dist_utils.stream_seed(config.seed, self.rank))
        self.step = 0  # global step
        self.optimizer = None
        self.optimizer_stage = -1
        self.chains = None  # this rank's Metropolis chain states, carried across steps
        self._activations = None  # the last exact draw's activations (ops.ActivationCache)
        self.exact_energy = None
        self.sample_path = "none"
        self.energy_path = "none"
        # (the data-parallel step keeps the eager phase: its all-reduce sits between the
        # backward and the update)
        self.gradient_step = GradientStep(
            self.model, vmc_loss, use_graph=config.gradient_graph and dist is None and config.device.startswith("cuda")
        )
        # data-parallel state: the shift of the energy sums (the previous global mean,
        # see distributed.local_sums) and a rank-0 I/O error waiting for the next
        # collective to tell the other ranks
        self._shift = 0.0
        self._pending_failure: BaseException | None = None
        if dist is not None:
            dist.broadcast_parameters(self.model)  # identical start whatever the seeding did

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ schedule
    def stage_of(self, step: int) -> int:
        end = 0
        for i, stage in enumerate(self.config.stages):
            end += stage.steps
            if step < end:
                return i
        return len(self.config.stages) - 1

    def _make_optimizer(self, stage: Stage):
        params = self.model.parameters()
        if stage.optimizer == "adam":
            # (capturable: step counters on the device, so that the update can be replayed
            # from a CUDA graph; the same arithmetic)
            return torch.optim.Adam(params, lr=stage.lr, betas=tuple(stage.betas), capturable=self.gradient_step.use_graph)
        return torch.optim.SGD(params, lr=stage.lr, momentum=stage.momentum)

    def _ensure_optimizer(self, index: int):
        if self.optimizer_stage == index:
            return
        stage = self.config.stages[index]
        previous = self.config.stages[self.optimizer_stage] if self.optimizer_stage >= 0 else None
        same = previous is not None and (previous.optimizer, previous.lr, previous.momentum, tuple(previous.betas)) == (
            stage.optimizer,
            stage.lr,
            stage.momentum,
            tuple(stage.betas),
        )
        if not same:  # a larger batch with the same optimizer keeps Adam's moments
            self.optimizer = self._make_optimizer(stage)
            self.gradient_step.reset()
        self.optimizer_stage = index

    # ------------------------------------------------------------------ sampling
    def draw(self, batch: int):
        """``batch`` samples of THIS rank (the caller splits the global batch)."""
        cfg = self.config
        if cfg.sampler == "exact":
            # the sampling walk keeps its activations where it can: the local energy of
            # these samples then needs no forward walk of its own
            spins, log_psi, self._activations = sampling.exact_sample(
                self.model, batch, generator=self.generator, return_cache=True
            )
            self.sample_path = sampling.last_sampler_path()
            return spins, log_psi, float("nan")
        self._activations = None
        n = self.lattice.n_sites
        magnetization = getattr(self.model, "magnetization", None)
        move = "exchange" if magnetization is not None else "flip"
        first = self.chains is None
        result = sampling.metropolis_sample(
            self.model.log_psi,
            n,
            batch,
            n_chains=cfg.mcmc_chains // self.world_size,  # the chains are split across ranks
            move=move,
            magnetization=magnetization,
            burn_in=cfg.mcmc_burn_in if first else 0,
            thin=cfg.mcmc_thin,
            generator=self.generator,
            initial=self.chains,
            device=cfg.device,
        )
        self.chains = result.last
        self.sample_path = "metropolis"
        return result.samples, result.log_psi, result.acceptance

    def _take_activations(self):
        """The last exact draw's activations, once (the local energy of that draw uses
        them; holding them longer would keep their memory)."""
        cache, self._activations = self._activations, None
        return cache

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        if self.dist is not None:
            return self._train_step_distributed()
        index = self.stage_of(self.step)
        stage = self.config.stages[index]
        self._ensure_optimizer(index)
        start = time.perf_counter()
        try:
            result = self._sample_and_local_energy(stage.batch)
        except torch.cuda.OutOfMemoryError:
            # the gradient phase's CUDA graph holds a forward+backward's activations
            # between steps: give them back and retry once (eager gradient phase from now
            # on); without a graph to release the error stands
            if not self.gradient_step.holds_graph:
                raise
            result = None  # (retried below: here the traceback still holds the attempt's tensors)
        if result is None:
            self.gradient_step.release("out of GPU memory with the graph's pool held")
            warnings.warn(f"step {self.step}: out of GPU memory while sampling or in the local energies; "
                          "released the gradient phase's CUDA graph (eager from now on) and retried",
                          RuntimeWarning, stacklevel=2)
            result = self._sample_and_local_energy(stage.batch)
        spins, acceptance, eloc = result
        self.energy_path = last_local_energy_path()
        self.gradient_step(self.optimizer, spins, eloc)
        if self.config.device.startswith("cuda"):
            torch.cuda.synchronize()
        metrics = estimate(eloc, spins)
        return self._finish_step(metrics, index, stage, acceptance, start)

    def _sample_and_local_energy(self, batch: int):
        with ops.use_engine_math(self.config.engine_math):
            spins, log_psi, acceptance = self.draw(batch)
            with torch.no_grad():
                eloc = local_energy(self.model, self.hamiltonian, spins, log_psi=log_psi,
                                    cache=self._take_activations())
        return spins, acceptance, eloc

    def _finish_step(self, metrics: dict, index: int, stage: Stage, acceptance: float, start: float) -> dict:
        metrics.update(
            step=self.step,
            stage=index,
            batch=stage.batch,
            lr=stage.lr,
            acceptance=acceptance,
            seconds=time.perf_counter() - start,
        )
        if not math.isfinite(metrics["energy"]):
            raise FloatingPointError(f"step {self.step}: the energy is not finite; lower the learning rate")
        self.step += 1
        return metrics

    def local_gradient(self, spins: torch.Tensor, eloc: torch.Tensor, stats: "dist_utils.GlobalStatistics") -> None:
        """Backward of this rank's share of the surrogate loss: centered by the GLOBAL
        mean energy, each sample weighted 1/B_global (so the ranks' gradients sum to the
        single-process gradient of the union of the samples)."""
        log_psi_grad = self.model.log_psi(spins)
        weights = torch.full(eloc.shape, 1.0 / stats.count, dtype=torch.float64, device=eloc.device)
        loss = vmc_loss(eloc, log_psi_grad, weights, energy=stats.energy_complex)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def _train_step_distributed(self) -> dict:
        dist = self.dist
        index = self.stage_of(self.step)
        stage = self.config.stages[index]
        self._ensure_optimizer(index)
        local_batch = stage.batch // self.world_size  # divisibility checked in __init__
        start = time.perf_counter()
        where = f"step {self.step}"
        # A failure of this rank's local work is not raised here: the rank joins the
        # collective with its flag set, and every rank raises together (no one waits).
        failure, self._pending_failure = self._pending_failure, None
        sums = acceptance = spins = eloc = None
        if failure is None:
            try:
                with ops.use_engine_math(self.config.engine_math):
                    spins, log_psi, acceptance = self.draw(local_batch)
                    with torch.no_grad():
                        eloc = local_energy(self.model, self.hamiltonian, spins, log_psi=log_psi,
                                            cache=self._take_activations())
                self.energy_path = last_local_energy_path()
                sums = dist_utils.local_sums(eloc, spins, self._shift, acceptance)
            except Exception as err:
                failure = err
        stats = dist_utils.statistics_from_sums(dist.reduce_sums(sums, failure, where + " (energy statistics)"), self._shift, self.world_size)
        try:
            self.local_gradient(spins, eloc, stats)
        except Exception as err:
            failure = err
        params = [p for p in self.model.parameters() if p.requires_grad]
        dist.allreduce_gradients(params, failure, where + " (gradient)")
        self.optimizer.step()  # identical gradients and state: identical step on every rank
        if self.config.device.startswith("cuda"):
            torch.cuda.synchronize()
        self._shift = stats.energy
        return self._finish_step(stats.as_metrics(), index, stage, stats.acceptance, start)

    def _main_io(self, fn, *args) -> None:
        """Run rank 0's file I/O. Alone, errors raise; in a data-parallel run they wait
        for the next collective, which stops every rank together."""
        if self.dist is None:
            fn(*args)
            return
        try:
            fn(*args)
        except Exception as err:
            self._pending_failure = self._pending_failure or err

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def _rank_state(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "chains": self.chains.cpu() if self.chains is not None else None,
            "digest": dist_utils.parameter_digest(self.model) if self.dist is not None else None,
        }

    def save_checkpoint(self) -> None:
        """Every rank's streams and chains, gathered to rank 0, which alone writes
        (atomically: a failure never leaves a half-written checkpoint)."""
        own = self._rank_state()
        ranks = self.dist.gather_objects(own) if self.dist is not None else [own]
        if not self.is_main:
            return
        self._main_io(self._write_checkpoint, ranks)

    def _write_checkpoint(self, ranks: list[dict]) -> None:
        digests = {r["digest"] for r in ranks}
        if len(digests) > 1:
            raise RuntimeError(f"step {self.step}: the ranks' parameters differ; the data-parallel step is broken (not saved)")
        chains = [r["chains"] for r in ranks]
        state = {
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "optimizer_stage": self.optimizer_stage,
            # rank 0's streams at the top level (the single-process layout), all ranks' below
            "generator": ranks[0]["generator"],
            "torch_rng": ranks[0]["torch_rng"],
            "chains": torch.cat(chains) if all(c is not None for c in chains) else None,  # all chains, rank order
            "world_size": self.world_size,
            "ranks": [{k: r[k] for k in ("generator", "torch_rng", "chains")} for r in ranks],
            "energy_shift": self._shift,
        }
        _atomic_save(state, self.checkpoint_path)

    def _read_checkpoint(self) -> dict:
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)

    def load_checkpoint(self, state: dict | None = None) -> None:
        if state is None:
            state = self._read_checkpoint()
        saved = VMCConfig.from_dict(state["config"])
        for key in ("model", "lattice", "size", "pbc", "n_blocks", "channels", "symmetrize", "spin_flip", "sz"):
            if getattr(saved, key) != getattr(self.config, key):
                raise ValueError(
                    f"cannot resume: the checkpoint has {key}={getattr(saved, key)!r}, the run asks for {getattr(self.config, key)!r}"
                )
        self.model.load_state_dict(state["model"])
        self.gradient_step.reset()  # the optimizer's state tensors are replaced below
        self.step = int(state["step"])
        self.optimizer_stage = -1
        if state["optimizer"] is not None:
            self._ensure_optimizer(int(state["optimizer_stage"]))
            self.optimizer.load_state_dict(state["optimizer"])
            # (the saved flag is the saving run's: a CUDA-graph run resumed on the CPU, or
            # the other way, gets the flag this run creates its optimizers with)
            set_capturable(self.optimizer, self.gradient_step.use_graph)
        self._shift = float(state.get("energy_shift", 0.0))
        # checkpoints older than data parallelism hold one rank's state at the top level
        saved_world = int(state.get("world_size", 1))
        ranks = state.get("ranks") or [{"generator": state["generator"], "torch_rng": state["torch_rng"], "chains": state["chains"]}]
        if saved_world == self.world_size:
            mine = ranks[self.rank]
            self.generator.set_state(mine["generator"].cpu() if hasattr(mine["generator"], "cpu") else mine["generator"])
            torch.set_rng_state(mine["torch_rng"].cpu())
            self.chains = mine["chains"].to(self.config.device) if mine["chains"] is not None else None
            return
        dist_utils.warn_stream_rederived(saved_world, self.world_size, self.config.seed, self.step)
        self.generator.manual_seed(dist_utils.stream_seed(self.config.seed, self.rank, self.step))
        # the chains are equilibrated states whoever ran them: re-split them over the
        # new ranks (no new burn-in) when their total still matches the config
        self.chains = None
        chains = state.get("chains")
        if chains is not None and self.config.sampler == "mcmc" and chains.shape[0] == self.config.mcmc_chains:
            per_rank = self.config.mcmc_chains // self.world_size
            self.chains = chains[self.rank * per_rank : (self.rank + 1) * per_rank].to(self.config.device)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, batch: int | None = None) -> dict:
        """Estimates from ``batch`` fresh samples (the GLOBAL count: split over ranks)."""
        batch = batch or self.config.eval_batch
        if self.dist is None:
            spins, eloc = self._evaluate_local(batch)
            return estimate(eloc, spins)
        failure, self._pending_failure = self._pending_failure, None
        sums = None
        if failure is None:
            try:
                spins, eloc = self._evaluate_local(dist_utils.share_of(batch, self.rank, self.world_size))
                sums = dist_utils.local_sums(eloc, spins, self._shift)
            except Exception as err:
                failure = err
        total = self.dist.reduce_sums(sums, failure, "the final evaluation")
        return dist_utils.statistics_from_sums(total, self._shift, self.world_size).as_metrics()

    def _evaluate_local(self, batch: int):
        # the default kernel arithmetic whatever engine_math trained with: the reported
        # energy carries no tensor-core bias
        spins_list, eloc_list = [], []
        chunk = 4096
        for start in range(0, batch, chunk):
            n = min(chunk, batch - start)
            with ops.use_engine_math("ffma"):
                spins, log_psi, _ = self.draw(n)
                eloc_list.append(local_energy(self.model, self.hamiltonian, spins, log_psi=log_psi,
                                              cache=self._take_activations()))
            spins_list.append(spins)
        if not spins_list:  # a rank with no share of a tiny evaluation batch
            dev = self.config.device
            return torch.zeros(0, self.lattice.n_sites, dtype=torch.int8, device=dev), torch.zeros(0, dtype=torch.complex128, device=dev)
        return torch.cat(spins_list), torch.cat(eloc_list)

    def compute_exact(self) -> float | None:
        """Exact ground-state energy when the system is small enough (N <= 24
        for Heisenberg in a sector, N <= 20 for Ising)."""
        if not self.config.exact:
            return None
        n = self.lattice.n_sites
        try:
            from . import ed
        except ImportError:
            return None
        if self.config.model == "ising":
            if n > 20:
                return None
            result = ed.ground_state(self.hamiltonian, sz=None, progress=False)
        else:
            if n > 24:
                return None
            sz = getattr(self.model, "magnetization", None)
            result = ed.ground_state(self.hamiltonian, sz=sz, progress=False)
        return float(result.energy)

    # ------------------------------------------------------------------ main loop
    def _prepare_out_dir(self, resume: bool) -> dict | None:
        """Rank 0's start-up I/O; returns the checkpoint state to resume from."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out_dir / "metrics.jsonl"
        state = None
        if resume:
            if not self.checkpoint_path.exists():
                raise FileNotFoundError(f"--resume: no checkpoint in {self.out_dir}")
            state = self._read_checkpoint()
            # drop metric lines written after the checkpoint, so the log matches the state
            if metrics_path.exists():
                lines = metrics_path.read_text().splitlines()[: int(state["step"])]
                _atomic_write_text("".join(line + "\n" for line in lines), metrics_path)
        else:
            if self.checkpoint_path.exists():
                raise FileExistsError(f"{self.out_dir} already holds a run; pass --resume to continue it or use another --out")
            metrics_path.write_text("")
        _atomic_write_text(json.dumps(self.config.to_dict(), indent=2), self.out_dir / "config.json")
        return state

    def _start(self, resume: bool) -> None:
        """Start-up: rank 0 prepares ``out_dir`` and reads the checkpoint; the outcome
        (the state, or the error) goes to every rank, so a refused start stops all of
        them with rank 0's message instead of leaving them in the first collective."""
        outcome = None
        if self.is_main:
            try:
                outcome = ("ok", self._prepare_out_dir(resume))
            except Exception as err:
                if self.dist is None:
                    raise
                outcome = ("error", err)
        if self.dist is not None:
            if self.is_main and outcome[0] == "error":
                try:
                    pickle.dumps(outcome[1])
                except Exception:
                    outcome = ("error", RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}"))
            outcome = self.dist.broadcast_object(outcome)
        kind, payload = outcome
        if kind == "error":
            raise payload
        if resume:
            self.load_checkpoint(payload)

    def run(self, resume: bool = False) -> dict:
        self._start(resume)
        metrics_path = self.out_dir / "metrics.jsonl"
        if self.is_main:
            self.exact_energy = self.compute_exact()
        total = self.config.total_steps
        started = time.perf_counter()
        bar = tqdm(total=total, initial=self.step, disable=not (self.progress and self.is_main), desc="VMC", unit="step")
        log = metrics_path.open("a") if self.is_main else None
        try:
            while self.step < total:
                metrics = self.train_step()
                if log is not None:
                    self._main_io(log.write, json.dumps(metrics) + "\n")
                if self.step % self.config.checkpoint_every == 0 or self.step == total:
                    if log is not None:
                        self._main_io(log.flush)
                    self.save_checkpoint()
                bar.update(1)
                postfix = {"E": f"{metrics['energy']:.5f}", "var": f"{metrics['variance']:.2e}"}
                if self.exact_energy is not None:
                    postfix["rel"] = f"{abs(metrics['energy'] - self.exact_energy) / abs(self.exact_energy):.1e}"
                bar.set_postfix(postfix)
        finally:
            if log is not None:
                log.close()
            bar.close()
        train_seconds = time.perf_counter() - started
        final = self.evaluate()  # a pending rank-0 I/O error stops every rank here
        summary = self.summary(final, train_seconds)
        if not self.is_main:
            return summary
        _atomic_write_text(json.dumps(summary, indent=2), self.out_dir / "summary.json")
        try:
            from .plots import plot_training

            plot_training(metrics_path, self.out_dir / "training.png", exact_energy=self.exact_energy, units=self.units)
        except Exception as err:  # a plot must never lose a finished run
            summary["plot_error"] = str(err)
        return summary

    @property
    def units(self) -> str:
        return self.hamiltonian.units

    def summary(self, final: dict, seconds: float) -> dict:
        n = self.lattice.n_sites
        out = dict(final)
        out.update(
            energy_per_site=final["energy"] / n,
            steps=self.step,
            seconds=seconds,
            units=self.units,
            n_sites=n,
            eval_batch=self.config.eval_batch,
            system=self.hamiltonian.describe(),
            model=self.model.describe(),
            sampler=self.config.sampler,
            sampler_path=self.sample_path,
            local_energy_path=self.energy_path,
            gradient_path=self.gradient_step.path,
            device=self.config.device,
            processes=self.world_size,
        )
        if self.exact_energy is not None:
            out["exact_energy"] = self.exact_energy
            out["exact_energy_per_site"] = self.exact_energy / n
            out["relative_error"] = abs(final["energy"] - self.exact_energy) / abs(self.exact_energy)
        return out
