"""Data-parallel VMC over ``torch.distributed`` (NCCL on GPUs, gloo on CPUs).

``naqs train`` started by ``torchrun --nproc-per-node P`` runs P ranks. Each rank draws
``batch / P`` samples from its own random stream (derived from the run's seed and the
rank), computes their local energies and its share of the eq. 6 gradient; two
all-reduces per step make every rank take the identical optimizer step:

1. the energy statistics of the GLOBAL batch (count, sums of E, E^2, Im E and the
   magnetizations), so that the surrogate loss is centered by the global mean energy;
2. the gradients, each rank's share weighted by 1/B_global, so that their sum is the
   single-process gradient on the union of the samples (tests hold it to 1e-10).

Failures. Every collective buffer carries one flag per rank. A rank whose local work
raises (sampling, local energy, backward, or rank 0's checkpoint/metrics I/O) still
joins the next collective with its flag set; every rank then raises together
(:class:`RankFailure` on the others, the original error on the failing one), so a
Python exception never leaves the others waiting. A rank that dies or hangs outside
that protocol is caught by the process group's timeout (and by torchrun, which stops
the remaining workers when one exits). Checkpoints are written atomically by rank 0
only, so the last one survives any of this.

Nothing here is a communication layer of its own: only torch.distributed collectives.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistributedContext",
    "GlobalStatistics",
    "RankFailure",
    "environment",
    "init_from_environment",
    "init_process_group",
    "local_sums",
    "parameter_digest",
    "share_of",
    "split_batch",
    "statistics_from_sums",
    "stream_seed",
]

DEFAULT_TIMEOUT_S = 600.0

# Layout of the statistics buffer (float64), followed by one failure flag per rank.
_STAT_FIELDS = ("count", "sum_e", "sum_e2", "sum_imag", "sum_m", "sum_abs_m", "sum_acceptance")


class RankFailure(RuntimeError):
    """Another rank (or this one) failed; every rank stops together."""


@dataclass
class DistributedContext:
    """This process's place in the run and the process group it talks through."""

    rank: int
    world_size: int
    local_rank: int
    device: str
    backend: str
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ failures
    def _flags(self, failure: BaseException | None, dtype, device) -> torch.Tensor:
        flags = torch.zeros(self.world_size, dtype=dtype, device=device)
        if failure is not None:
            flags[self.rank] = 1
        return flags

    def _raise_if_failed(self, flags: torch.Tensor, failure: BaseException | None, where: str) -> None:
        failed = [r for r, f in enumerate(flags.tolist()) if f != 0]
        if not failed:
            return
        if failure is not None:
            # the failing rank raises its own error, with the rank in the message
            raise RankFailure(f"rank {self.rank} failed during {where}: {type(failure).__name__}: {failure}") from failure
        raise RankFailure(
            f"rank(s) {', '.join(map(str, failed))} failed during {where}; all {self.world_size} ranks stop "
            f"(see the failing rank's error; the last checkpoint is intact)"
        )

    def agree(self, failure: BaseException | None, where: str) -> None:
        """All-reduce only the failure flags: every rank raises if any rank failed."""
        flags = self._flags(failure, torch.float64, self.device)
        dist.all_reduce(flags)
        self._raise_if_failed(flags, failure, where)

    # ------------------------------------------------------------------ collectives
    def reduce_sums(self, sums: torch.Tensor | None, failure: BaseException | None, where: str) -> torch.Tensor:
        """All-reduce (sum) a float64 vector of ``len(_STAT_FIELDS)`` sums with the
        failure flags appended. ``sums`` may be None on a failed rank."""
        if sums is None:
            sums = torch.zeros(len(_STAT_FIELDS), dtype=torch.float64, device=self.device)
        buffer = torch.cat([sums.to(device=self.device, dtype=torch.float64), self._flags(failure, torch.float64, self.device)])
        dist.all_reduce(buffer)
        self._raise_if_failed(buffer[len(_STAT_FIELDS) :], failure, where)
        return buffer[: len(_STAT_FIELDS)]

    def allreduce_gradients(self, params: list[torch.nn.Parameter], failure: BaseException | None, where: str) -> None:
        """Sum the gradients of all ranks in place (one flat buffer, one collective).

        Each rank's loss already carries the weight 1/B_global, so the sum is the
        gradient of the global batch; no division by P here. A parameter without a
        gradient contributes zeros (and gets a zero gradient, as on every rank)."""
        dtype = params[0].dtype
        if failure is None:
            flat = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype) for p in params]
        else:
            flat = [torch.zeros(p.numel(), dtype=dtype, device=p.device) for p in params]
        buffer = torch.cat(flat + [self._flags(failure, dtype, params[0].device)])
        dist.all_reduce(buffer)
        self._raise_if_failed(buffer[-self.world_size :], failure, where)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = buffer[offset : offset + n].view_as(p).clone()
            offset += n

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (pickled; for checkpoints and start-up status)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def gather_objects(self, obj) -> list | None:
        """Every rank's ``obj`` as a list on rank 0 (None elsewhere)."""
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def _object_device(self):
        return torch.device(self.device) if self.backend == "nccl" else None

    # ------------------------------------------------------------------ teardown
    def shutdown(self) -> None:
        if dist.is_initialized():
            # Every rank reaches this point before any tears its connections down: a
            # gloo rank destroyed while a peer still talks to it can abort the peer
            # ("terminate called without an active exception", seen once in CI).
            dist.barrier()
            dist.destroy_process_group()

    def abort(self) -> None:
        """Tear the group down without waiting on peers (after a failure that may have
        left collectives pending: a clean destroy could block on them)."""
        if not dist.is_initialized():
            return
        try:
            from torch.distributed.distributed_c10d import (
                _abort_process_group,  # private, torch >= 2.6
            )

            _abort_process_group()
        except Exception:  # pragma: no cover - fall back to exiting, which also frees the group
            pass


# ---------------------------------------------------------------------- set-up
def environment() -> dict | None:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` as set by torchrun, or None when the
    process was not started by a launcher."""
    if "WORLD_SIZE" not in os.environ and "RANK" not in os.environ:
        return None
    values = {}
    for key, default in (("RANK", None), ("WORLD_SIZE", None), ("LOCAL_RANK", "0")):
        text = os.environ.get(key, default)
        if text is None:
            raise RuntimeError(f"torch.distributed launch: {key} is not set (RANK and WORLD_SIZE come together; use torchrun)")
        try:
            values[key.lower()] = int(text)
        except ValueError:
            raise RuntimeError(f"torch.distributed launch: {key}={text!r} is not an integer") from None
    if values["world_size"] < 1 or not 0 <= values["rank"] < values["world_size"]:
        raise RuntimeError(f"torch.distributed launch: need 0 <= RANK < WORLD_SIZE, got RANK={values['rank']}, WORLD_SIZE={values['world_size']}")
    return values


def init_process_group(
    rank: int, world_size: int, local_rank: int, device: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> DistributedContext:
    """Join the process group (``MASTER_ADDR``/``MASTER_PORT`` from the environment):
    NCCL and ``cuda:LOCAL_RANK`` when ``device`` is cuda, gloo on the CPU otherwise."""
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"the process-group timeout must be a positive number of seconds, got {timeout_s}")
    device = str(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for but CUDA is not available on rank {rank}")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible: "
                f"start at most one process per GPU (--nproc-per-node)"
            )
        # one GPU per process, picked by LOCAL_RANK whatever index the user wrote
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    elif device == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"distributed VMC runs on 'cpu' (gloo) or 'cuda' (nccl), got device {device!r}")
    timeout = datetime.timedelta(seconds=timeout_s)
    kwargs = {"device_id": torch.device(device)} if backend == "nccl" else {}
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout, **kwargs)
    return DistributedContext(rank, world_size, local_rank, device, backend, timeout_s)


def init_from_environment(device: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistributedContext | None:
    """The context of a torchrun-launched process, or None for a plain one."""
    env = environment()
    if env is None:
        return None
    return init_process_group(env["rank"], env["world_size"], env["local_rank"], device, timeout_s)


# ---------------------------------------------------------------------- random streams
def stream_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of rank ``rank``'s sample stream for a run started (or re-derived) at ``step``.

    Rank 0 of a fresh run keeps the single-process seed (``seed + 1``), so that a
    one-process torchrun reproduces a plain run. Every other (rank, step) goes through
    numpy's SeedSequence, whose outputs for different keys are statistically
    independent (unlike ``seed + rank``, which would make run ``seed``'s rank 1 equal
    to run ``seed + 1``'s rank 0)."""
    if rank == 0 and step == 0:
        return seed + 1
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(rank), int(step)]).generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)  # 63 bits: a valid torch seed


def split_batch(batch: int, world_size: int, what: str = "batch") -> int:
    """Per-rank share of a global ``batch``; it must divide evenly (every rank then
    holds the same number of samples and the same work)."""
    if batch % world_size:
        raise ValueError(
            f"{what} {batch} is not divisible by the number of processes ({world_size}); "
            f"choose a multiple of {world_size}"
        )
    return batch // world_size


def share_of(total: int, rank: int, world_size: int) -> int:
    """An as-even-as-possible split, for counts that need not divide (evaluation)."""
    return total // world_size + (1 if rank < total % world_size else 0)


# ---------------------------------------------------------------------- statistics
@dataclass
class GlobalStatistics:
    count: int
    energy: float
    energy_imag: float
    variance: float
    magnetization: float
    abs_magnetization: float
    acceptance: float

    @property
    def energy_complex(self) -> complex:
        return complex(self.energy, self.energy_imag)

    def as_metrics(self) -> dict:
        """The keys of naqs.vmc.estimate."""
        n = self.count
        return {
            "energy": self.energy,
            "energy_error": math.sqrt(self.variance / n) if n > 1 else float("nan"),
            "variance": self.variance,
            "energy_imag": self.energy_imag,
            "magnetization": self.magnetization,
            "abs_magnetization": self.abs_magnetization,
        }


def local_sums(eloc: torch.Tensor, spins: torch.Tensor, shift: float, acceptance: float = float("nan")) -> torch.Tensor:
    """This rank's sums for the global statistics, as float64 on the samples' device.

    The energies are shifted by ``shift`` (a value every rank knows, e.g. the previous
    step's global mean) before E and E^2 are summed: the one-pass variance
    ``(S2 - S1^2/n) / (n - 1)`` then loses no digits to cancellation, which it would for
    a large |E| and a small variance, and it needs no second collective."""
    e = eloc.real.double() - shift
    total = spins.double().sum(1)
    n_sites = spins.shape[1]
    return torch.stack(
        [
            torch.tensor(float(e.numel()), dtype=torch.float64, device=e.device),
            e.sum(),
            (e * e).sum(),
            eloc.imag.double().sum(),
            total.sum() / n_sites,
            total.abs().sum() / n_sites,
            torch.tensor(acceptance, dtype=torch.float64, device=e.device),
        ]
    )


def statistics_from_sums(sums: torch.Tensor, shift: float, world_size: int) -> GlobalStatistics:
    values = dict(zip(_STAT_FIELDS, sums.tolist()))
    n = values["count"]
    if n < 1:
        raise ValueError("no samples in the global batch")
    mean = values["sum_e"] / n
    variance = (values["sum_e2"] - values["sum_e"] * mean) / (n - 1) if n > 1 else float("nan")
    return GlobalStatistics(
        count=int(round(n)),
        energy=shift + mean,
        energy_imag=values["sum_imag"] / n,
        variance=max(variance, 0.0) if n > 1 else variance,
        magnetization=values["sum_m"] / n,
        abs_magnetization=values["sum_abs_m"] / n,
        # every rank runs the same number of chains and steps: the plain mean is the global rate
        acceptance=values["sum_acceptance"] / world_size,
    )


def parameter_digest(module: torch.nn.Module) -> str:
    """A hash of the parameters' bytes: ranks whose digests differ have diverged."""
    h = hashlib.sha1()
    for p in module.parameters():
        h.update(p.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def warn_stream_rederived(saved_world_size: int, world_size: int, seed: int, step: int) -> None:
    warnings.warn(
        f"naqs: the checkpoint was written by {saved_world_size} process(es) and this run has {world_size}: "
        f"each rank's random stream is re-derived from (seed={seed}, rank, step={step}); the run goes on "
        f"reproducibly for {world_size} processes but is not the continuation a {saved_world_size}-process run would have had",
        RuntimeWarning,
        stacklevel=3,
    )
