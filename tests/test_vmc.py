"""The VMC driver: the eq. 6 gradient, bit-for-bit resume, and ground states of small
systems against exact diagonalization."""

import json

import pytest
import torch

from conftest import all_configurations
from naqs.hamiltonian import TransverseFieldIsing
from naqs.lattice import square
from naqs.local_energy import local_energy
from naqs.models import PixelCNN
from naqs.vmc import VMC, Stage, VMCConfig, vmc_loss


def test_eq6_gradient_is_the_energy_gradient():
    """With |psi|^2 weights over the whole basis, the surrogate's gradient equals the
    autograd gradient of <psi|H|psi> (psi normalized) computed from the dense H."""
    torch.manual_seed(0)
    lat = square(2, 3)
    ham = TransverseFieldIsing(lat, 1.3)
    model = PixelCNN(2, 3, 2, 3, output_scale=1.0).double()
    configs = all_configurations(6)
    h = torch.as_tensor(ham.to_dense())
    psi = torch.exp(model.log_psi(configs))
    energy = (psi.conj() @ (h.to(psi.dtype) @ psi)).real
    exact = torch.autograd.grad(energy, list(model.parameters()))
    log_psi = model.log_psi(configs)
    with torch.no_grad():
        eloc = local_energy(model, ham, configs, log_psi=log_psi.detach())
        weights = torch.exp(2 * log_psi.real)
    surrogate = torch.autograd.grad(vmc_loss(eloc, log_psi, weights), list(model.parameters()))
    for a, b in zip(surrogate, exact):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-8)
    assert max(float(g.abs().max()) for g in exact) > 1e-3  # not trivially zero


def _tiny_config(**kw):
    base = dict(
        model="ising", size="2x3", gamma=1.0, n_blocks=2, channels=4, eval_batch=256, checkpoint_every=3,
        stages=[Stage(4, 32, "adam", 1e-2), Stage(3, 64, "sgd", 1e-2)], exact=False,
    )  # fmt: skip
    base.update(kw)
    return VMCConfig(**base)


@pytest.mark.parametrize("sampler", ["exact", "mcmc"])
def test_resume_is_bit_for_bit(tmp_path, sampler):
    straight = VMC(_tiny_config(sampler=sampler, mcmc_chains=8, mcmc_burn_in=5, mcmc_thin=2), tmp_path / "a", progress=False)
    straight.run()
    interrupted = VMC(_tiny_config(sampler=sampler, mcmc_chains=8, mcmc_burn_in=5, mcmc_thin=2, stages=[Stage(4, 32, "adam", 1e-2), Stage(3, 64, "sgd", 1e-2)]), tmp_path / "b", progress=False)
    # stop after the step-3 checkpoint by training 3 steps by hand, then resume
    interrupted.out_dir.mkdir(parents=True)
    (interrupted.out_dir / "metrics.jsonl").write_text("")
    with (interrupted.out_dir / "metrics.jsonl").open("a") as log:
        for _ in range(3):
            log.write(json.dumps(interrupted.train_step()) + "\n")
        log.write('{"step": 3, "garbage": "a line written after the checkpoint"}\n')
    interrupted.save_checkpoint()
    resumed = VMC(_tiny_config(sampler=sampler, mcmc_chains=8, mcmc_burn_in=5, mcmc_thin=2), tmp_path / "b", progress=False)
    resumed.run(resume=True)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["energy"] for r in a] == [r["energy"] for r in b]
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["steps"] == 7 and summary["units"] == "pauli"


def test_refuses_to_overwrite_and_bad_config(tmp_path):
    VMC(_tiny_config(stages=[Stage(1, 8)]), tmp_path, progress=False).run()
    with pytest.raises(FileExistsError):
        VMC(_tiny_config(stages=[Stage(1, 8)]), tmp_path, progress=False).run()
    with pytest.raises(ValueError, match="optimizer"):
        _tiny_config(stages=[Stage(1, 8, "lbfgs")]).validate()
    with pytest.raises(ValueError, match="unknown configuration keys"):
        VMCConfig.from_dict({"temperature": 3})
    with pytest.raises(ValueError, match="grid"):
        VMC(VMCConfig(lattice="kagome-24"), tmp_path / "k", progress=False)


def test_engine_math_is_scoped_to_the_training_step(tmp_path, monkeypatch):
    """engine_math holds inside each training step only: the final evaluation runs the
    default arithmetic, and nothing leaks into the process environment."""
    import os

    import naqs.vmc as vmc_module
    from naqs import ops

    monkeypatch.delenv("NAQS_PIXELCNN_MATH", raising=False)
    cfg = _tiny_config(stages=[Stage(2, 8)], engine_math="tf32")
    assert VMCConfig.from_dict(cfg.to_dict()).engine_math == "tf32"
    seen = []
    real = vmc_module.local_energy

    def spy(*args, **kwargs):
        seen.append(ops.engine_math())
        return real(*args, **kwargs)

    monkeypatch.setattr(vmc_module, "local_energy", spy)
    VMC(cfg, tmp_path, progress=False).run()
    assert seen == ["tf32", "tf32", "ffma"]  # two steps, then the final evaluation
    assert "NAQS_PIXELCNN_MATH" not in os.environ


def test_ising_4x4_reaches_ed(tmp_path):
    """4x4 open Ising at Gamma = 3: relative error below 1e-3 against ED
    (E0/N = -3.1366640, Pauli units)."""
    config = VMCConfig(
        model="ising", size="4x4", gamma=3.0, n_blocks=3, channels=8, seed=0, eval_batch=8192, checkpoint_every=500,
        stages=[Stage(200, 128, "adam", 3e-3), Stage(100, 512, "adam", 1e-3), Stage(50, 1024, "sgd", 2e-3)],
    )  # fmt: skip
    summary = VMC(config, tmp_path, progress=False).run()
    assert summary["exact_energy"] / 16 == pytest.approx(-3.1366640, abs=1e-6)
    assert summary["relative_error"] < 1e-3
    assert abs(summary["magnetization"]) < 0.1  # no symmetry breaking at Gamma = 3


def test_heisenberg_small_reaches_ed(tmp_path):
    """2x4 open Heisenberg (S units) in the S^z = 0 sector with the Marshall sign."""
    config = VMCConfig(
        model="heisenberg", size="2x4", n_blocks=3, channels=8, seed=1, eval_batch=8192, checkpoint_every=500,
        stages=[Stage(200, 128, "adam", 3e-3), Stage(100, 512, "adam", 1e-3)],
    )  # fmt: skip
    summary = VMC(config, tmp_path, progress=False).run()
    assert summary["units"] == "S"
    assert summary["relative_error"] < 1e-3
    assert summary["magnetization"] == 0.0
