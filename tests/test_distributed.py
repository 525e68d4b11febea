"""Data-parallel VMC (naqs.distributed) with gloo on the CPU, 2 processes.

The global-batch estimator must be the single-process one: given the same global
samples, the energy statistics and the gradient of 2 ranks equal those of 1 process
(1e-10, float64). Training: ranks end with identical parameters and rank 0 writes the
summary; a rank that raises at step k stops every rank together and leaves the last
checkpoint intact; resuming works under the same and a different number of processes;
a rank that hangs is caught by the process-group timeout."""

import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from naqs import distributed
from naqs.local_energy import local_energy
from naqs.vmc import VMC, Stage, VMCConfig, estimate, vmc_loss

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(worker, *args):
    port = _free_port()
    mp.spawn(worker, args=(port, *args), nprocs=WORLD, join=True)


def _init(rank: int, port: int, timeout_s: float = 60.0) -> distributed.DistributedContext:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # 2 processes on 2 CI cores
    warnings.simplefilter("ignore", RuntimeWarning)  # missing-kernel fallbacks, per process
    return distributed.init_process_group(rank, WORLD, rank, "cpu", timeout_s=timeout_s)


def _config(**kw) -> VMCConfig:
    base = dict(
        model="ising", size="2x3", gamma=1.0, n_blocks=2, channels=4, eval_batch=128, checkpoint_every=2, exact=False,
        stages=[Stage(3, 32, "adam", 1e-2), Stage(2, 64, "sgd", 1e-2)],
    )  # fmt: skip
    base.update(kw)
    return VMCConfig(**base)


def _fixed_samples(n: int, n_sites: int) -> torch.Tensor:
    """n fixed configurations with total spin 0 (the Heisenberg model's sector)."""
    g = torch.Generator().manual_seed(1234)
    keys = torch.rand(n, n_sites, generator=g)
    half = torch.argsort(keys, dim=1) < n_sites // 2
    return torch.where(half, 1, -1).to(torch.int8)


# ---------------------------------------------------------------------- no processes
def test_streams_batches_and_environment(monkeypatch):
    assert distributed.stream_seed(7, 0) == 8  # rank 0 of a fresh run: the single-process seed
    seeds = {distributed.stream_seed(7, r, s) for r in range(4) for s in (0, 10)}
    assert len(seeds) == 8 and all(0 <= x < 2**63 for x in seeds)
    assert distributed.stream_seed(7, 1) != distributed.stream_seed(8, 0)
    assert distributed.split_batch(64, 2) == 32
    with pytest.raises(ValueError, match="not divisible by the number of processes"):
        distributed.split_batch(33, 2)
    assert [distributed.share_of(5, r, 2) for r in range(2)] == [3, 2]
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.environment() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="RANK is not set"):
        distributed.environment()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(RuntimeError, match="RANK < WORLD_SIZE"):
        distributed.environment()
    monkeypatch.setenv("RANK", "1")
    assert distributed.environment() == {"rank": 1, "world_size": 2, "local_rank": 0}


def test_global_sums_equal_estimate():
    torch.manual_seed(0)
    eloc = torch.randn(50, dtype=torch.complex128) * 0.1 - 300.0  # large |E|, small variance
    spins = _fixed_samples(50, 6)
    reference = estimate(eloc, spins)
    parts = [distributed.local_sums(eloc[a:b], spins[a:b], shift=-299.9) for a, b in ((0, 20), (20, 50))]
    stats = distributed.statistics_from_sums(parts[0] + parts[1], -299.9, 2).as_metrics()
    for key, value in reference.items():
        assert stats[key] == pytest.approx(value, rel=1e-12, abs=1e-14), key


# ---------------------------------------------------------------------- estimator: 2 ranks == 1 process
def _estimator_worker(rank, port, out):
    ctx = _init(rank, port)
    vmc = VMC(_config(dtype="float64", model="heisenberg", size="2x4"), Path(out) / "unused", progress=False, dist=ctx)
    vmc._ensure_optimizer(0)
    spins = _fixed_samples(64, vmc.lattice.n_sites)[rank * 32 : (rank + 1) * 32]
    eloc = local_energy(vmc.model, vmc.hamiltonian, spins)
    shift = -3.0
    sums = distributed.local_sums(eloc, spins, shift)
    stats = distributed.statistics_from_sums(ctx.reduce_sums(sums, None, "test"), shift, WORLD)
    vmc.local_gradient(spins, eloc, stats)
    params = [p for p in vmc.model.parameters() if p.requires_grad]
    ctx.allreduce_gradients(params, None, "test")
    torch.save({"grads": [p.grad for p in params], "stats": stats.as_metrics()}, Path(out) / f"rank{rank}.pt")
    ctx.shutdown()


def test_two_ranks_equal_one_process(tmp_path):
    _spawn(_estimator_worker, str(tmp_path))
    single = VMC(_config(dtype="float64", model="heisenberg", size="2x4"), tmp_path / "unused", progress=False)
    spins = _fixed_samples(64, single.lattice.n_sites)
    log_psi = single.model.log_psi(spins)
    with torch.no_grad():
        eloc = local_energy(single.model, single.hamiltonian, spins, log_psi=log_psi.detach())
    params = [p for p in single.model.parameters() if p.requires_grad]
    expected = torch.autograd.grad(vmc_loss(eloc, log_psi), params)
    reference = estimate(eloc, spins)
    assert max(float(g.abs().max()) for g in expected) > 1e-3  # not trivially zero
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for a, b in zip(got["grads"], expected):
            assert torch.allclose(a, b, atol=1e-10, rtol=0), float((a - b).abs().max())
        for key, value in reference.items():
            assert got["stats"][key] == pytest.approx(value, rel=1e-10, abs=1e-12), key


# ---------------------------------------------------------------------- training, failure, resume
class _Injected(RuntimeError):
    pass


def _training_worker(rank, port, out, mcmc_only=False):
    out = Path(out)
    ctx = _init(rank, port)
    if mcmc_only:
        _mcmc_run(ctx, out)
        ctx.shutdown()
        return
    digests = {}
    # a straight run: 5 steps, checkpoints at 2, 4, 5
    vmc = VMC(_config(), out / "straight", progress=False, dist=ctx)
    summary = vmc.run()
    digests["straight"] = distributed.parameter_digest(vmc.model)
    assert summary["processes"] == WORLD
    # the same run, with rank 1 raising at step 3: both ranks stop, checkpoint 2 survives
    vmc = VMC(_config(), out / "failed", progress=False, dist=ctx)
    if rank == 1:
        draw = vmc.draw

        def failing_draw(batch):
            if vmc.step == 3:
                raise _Injected("injected failure at step 3")
            return draw(batch)

        vmc.draw = failing_draw
    try:
        vmc.run()
        raise AssertionError("the failing run did not stop")
    except distributed.RankFailure as err:
        (out / f"failure{rank}.txt").write_text(str(err))
    # resume the failed run under the same P: it must end where the straight run ended
    vmc = VMC(_config(), out / "failed", progress=False, dist=ctx)
    vmc.run(resume=True)
    digests["resumed"] = distributed.parameter_digest(vmc.model)
    digests["mcmc"] = _mcmc_run(ctx, out)
    (out / f"digests{rank}.json").write_text(json.dumps(digests))
    ctx.shutdown()


def _mcmc_run(ctx, out):
    """The Metropolis baseline, 8 chains split over the 2 ranks."""
    vmc = VMC(_config(sampler="mcmc", mcmc_chains=8, mcmc_burn_in=4, mcmc_thin=2, stages=[Stage(3, 32)]), out / "mcmc", progress=False, dist=ctx)
    vmc.run()
    assert vmc.chains.shape[0] == 4
    return distributed.parameter_digest(vmc.model)


def test_training_failure_and_resume(tmp_path):
    start = time.perf_counter()
    _spawn(_training_worker, str(tmp_path))
    d0, d1 = (json.loads((tmp_path / f"digests{r}.json").read_text()) for r in range(WORLD))
    assert d0 == d1  # every rank ended with bitwise identical parameters
    assert d0["resumed"] == d0["straight"]  # resume under P=2 is bit-for-bit
    for run in ("straight", "failed", "mcmc"):
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert summary["processes"] == WORLD and summary["units"] == "pauli"
    a = [json.loads(x)["energy"] for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x)["energy"] for x in (tmp_path / "failed" / "metrics.jsonl").read_text().splitlines()]
    assert len(a) == 5 and a == b
    # the failure: rank 1 reports its own error, rank 0 names rank 1
    assert "rank 1 failed during step 3" in (tmp_path / "failure1.txt").read_text()
    assert "injected failure" in (tmp_path / "failure1.txt").read_text()
    assert "rank(s) 1 failed during step 3" in (tmp_path / "failure0.txt").read_text()
    state = torch.load(tmp_path / "mcmc" / "checkpoint.pt", weights_only=False)
    assert state["world_size"] == WORLD and len(state["ranks"]) == WORLD and state["chains"].shape == (8, 6)
    print(f"2-rank training/failure/resume: {time.perf_counter() - start:.1f} s")


def test_resume_with_another_number_of_processes(tmp_path):
    """A 2-rank checkpoint resumed by 1 process: streams re-derived (warning), the
    Metropolis chains of both ranks carried over (no new burn-in), the run finishes.
    The checkpoint comes from test_training_failure_and_resume's 3-step Metropolis run;
    the resumed schedule is 2 steps longer."""
    _spawn(_training_worker, str(tmp_path), True)
    config = _config(sampler="mcmc", mcmc_chains=8, mcmc_burn_in=4, mcmc_thin=2, stages=[Stage(3, 32), Stage(2, 32)])
    vmc = VMC(config, tmp_path / "mcmc", progress=False)
    with pytest.warns(RuntimeWarning, match="re-derived"):
        summary = vmc.run(resume=True)
    assert summary["steps"] == 5 and summary["processes"] == 1
    assert vmc.chains.shape == (8, 6)


# ---------------------------------------------------------------------- a hung rank
def _hang_worker(rank, port, out):
    ctx = _init(rank, port, timeout_s=4.0)  # also bounds the start-up rendezvous: not too short
    vmc = VMC(_config(), Path(out) / "run", progress=False, dist=ctx)
    vmc._start(resume=False)
    vmc.train_step()
    if rank == 1:  # stuck outside any collective (a dead GPU, a deadlock...) until rank 0 is done
        deadline = time.perf_counter() + 10
        while not (Path(out) / "hang.json").exists() and time.perf_counter() < deadline:
            time.sleep(0.2)
        os._exit(0)
    start = time.perf_counter()
    try:
        vmc.train_step()
        message = "no error"
    except Exception as err:  # gloo raises when the timeout expires
        message = f"{type(err).__name__}: {err}"
    (Path(out) / "hang.json").write_text(json.dumps({"seconds": time.perf_counter() - start, "message": message}))
    os._exit(0)  # the group is broken: do not wait for it at exit


def test_hung_rank_hits_the_timeout(tmp_path):
    _spawn(_hang_worker, str(tmp_path))
    result = json.loads((tmp_path / "hang.json").read_text())
    assert result["message"] != "no error"
    assert result["seconds"] < 9  # the 4 s timeout, not the 10 s hang


# ---------------------------------------------------------------------- the command line under torchrun
def _torchrun(out, *extra):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(_free_port()), "-m", "naqs.cli", "train", "--size", "2x3", "--blocks", "2",
        "--channels", "4", "--steps", "3", "--eval-batch", "64", "--no-exact", "--quiet", "--json", "--out", str(out), *extra,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_cli_under_torchrun(tmp_path):
    bad = _torchrun(tmp_path / "bad", "--batch", "33")
    assert bad.returncode != 0 and "not divisible by the number of processes (2)" in bad.stderr
    good = _torchrun(tmp_path / "good", "--batch", "32")
    assert good.returncode == 0, good.stderr[-2000:]
    summary = json.loads((tmp_path / "good" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    assert json.loads(good.stdout)["energy"] == summary["energy"]  # rank 0 alone prints
