"""The VMC step's gradient-and-update phase (naqs.gradient_step): replayed from a CUDA
graph it gives the parameters of the eager phase; a model that cannot be captured falls
back to the eager phase; the driver resumes bit-for-bit with the graph on."""

import copy
import json
import warnings

import pytest
import torch

from naqs.gradient_step import GradientStep, make_capturable, set_capturable
from naqs.models import PixelCNN
from naqs.vmc import VMC, Stage, VMCConfig, vmc_loss

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _data(model, batch, seed, device):
    g = torch.Generator().manual_seed(seed)
    spins = (torch.randint(0, 2, (batch, model.n_sites), generator=g) * 2 - 1).to(torch.int8)
    eloc = torch.randn(batch, dtype=torch.complex128, generator=g)
    return spins.to(device), eloc.to(device)


def _eager_step(model, opt, spins, eloc):
    loss = vmc_loss(eloc, model.log_psi(spins))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _optimizer(kind, model, capturable):
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-2, capturable=capturable)
    return torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)


def test_cpu_runs_the_eager_phase():
    torch.manual_seed(0)
    model = PixelCNN(3, 2, 2, 4)
    twin = copy.deepcopy(model)
    step = GradientStep(model, vmc_loss, use_graph=True)
    opt, opt_twin = _optimizer("adam", model, False), _optimizer("adam", twin, False)
    for seed in range(3):
        spins, eloc = _data(model, 16, seed, "cpu")
        step(opt, spins, eloc)
        _eager_step(twin, opt_twin, spins, eloc)
        assert step.path == "eager"
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_of_a_graph_run_resumes_on_the_cpu(tmp_path):
    """A CUDA-graph run saves Adam with capturable=True; resumed where the phase runs
    eagerly (the CPU), the optimizer takes this run's flag and the run goes on bit for
    bit (here the checkpoint is a CPU run's with the flag set as a graph run leaves it)."""

    def config():
        return VMCConfig(model="ising", size="2x3", gamma=1.0, n_blocks=2, channels=4, eval_batch=64,
                         checkpoint_every=2, stages=[Stage(4, 16, "adam", 1e-2)], exact=False)  # fmt: skip

    straight = VMC(config(), tmp_path / "a", progress=False)
    straight.run()
    first = VMC(config(), tmp_path / "b", progress=False)
    first.out_dir.mkdir(parents=True)
    (first.out_dir / "metrics.jsonl").write_text("")
    (first.out_dir / "config.json").write_text(json.dumps(config().to_dict()))
    for _ in range(2):
        first.train_step()
    first.save_checkpoint()
    state = torch.load(first.checkpoint_path, weights_only=False)
    for group in state["optimizer"]["param_groups"]:
        group["capturable"] = True
    torch.save(state, first.checkpoint_path)
    resumed = VMC(config(), tmp_path / "b", progress=False)
    assert resumed.run(resume=True)["steps"] == 4
    assert not resumed.optimizer.param_groups[0]["capturable"]
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


def _small_vmc(tmp_path, device="cpu"):
    config = VMCConfig(model="ising", size="2x3", gamma=1.0, n_blocks=2, channels=4, eval_batch=64,
                       checkpoint_every=100, stages=[Stage(6, 16, "adam", 1e-2)], exact=False,
                       device=device)  # fmt: skip
    return VMC(config, tmp_path, progress=False)


def _raise_oom_once(vmc, monkeypatch):
    """The VMC object's sampler raises CUDA's out-of-memory error on its first call."""
    calls = {"n": 0}
    draw = vmc.draw

    def failing_draw(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return draw(batch)

    monkeypatch.setattr(vmc, "draw", failing_draw)
    return calls


def test_out_of_memory_releases_the_graph_and_retries(tmp_path, monkeypatch):
    """Out of GPU memory while sampling with the gradient phase's graph alive: the driver
    releases the graph (its memory pool), warns, retries the step once and runs the
    phase eagerly from then on. (The held graph is simulated: the CPU has none.)"""
    vmc = _small_vmc(tmp_path)
    vmc.train_step()  # (creates the optimizer, which resets the gradient step)
    vmc.gradient_step._graph = object()  # stands for a captured graph and its pool
    calls = _raise_oom_once(vmc, monkeypatch)
    with pytest.warns(RuntimeWarning, match="released the gradient phase's CUDA graph"):
        metrics = vmc.train_step()
    assert calls["n"] == 2 and metrics["step"] == 1 and vmc.step == 2
    assert not vmc.gradient_step.holds_graph
    assert "out of GPU memory" in vmc.gradient_step.disabled_reason
    vmc.train_step()
    assert vmc.gradient_step.path == "eager"


@cuda
@pytest.mark.cuda
def test_out_of_memory_releases_a_captured_graph(tmp_path, monkeypatch):
    """The same on the GPU with a real graph: captured at the second step, released by
    the out-of-memory error of the third, whose retry and the later steps run eagerly."""
    vmc = _small_vmc(tmp_path, "cuda")
    vmc.train_step()
    vmc.train_step()
    assert vmc.gradient_step.path == "cuda-graph" and vmc.gradient_step.holds_graph
    _raise_oom_once(vmc, monkeypatch)
    with pytest.warns(RuntimeWarning, match="released the gradient phase's CUDA graph"):
        vmc.train_step()
    assert not vmc.gradient_step.holds_graph and vmc.gradient_step.path == "eager"
    vmc.train_step()
    assert vmc.gradient_step.path == "eager" and vmc.step == 4


def test_out_of_memory_without_a_graph_is_raised(tmp_path, monkeypatch):
    """With no graph to give memory back, the out-of-memory error reaches the caller."""
    vmc = _small_vmc(tmp_path)
    _raise_oom_once(vmc, monkeypatch)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        vmc.train_step()
    assert vmc.step == 0


def test_make_capturable_moves_adam_steps():
    model = PixelCNN(2, 2, 1, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    spins, eloc = _data(model, 4, 0, "cpu")
    _eager_step(model, opt, spins, eloc)
    make_capturable(opt)
    assert all(g["capturable"] for g in opt.param_groups)
    assert all(s["step"].dtype == torch.float32 for s in opt.state.values())
    set_capturable(opt, False)
    assert not any(g["capturable"] for g in opt.param_groups)
    assert all(s["step"].device.type == "cpu" for s in opt.state.values())
    sgd = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    make_capturable(sgd)  # no flag: nothing to do
    assert "capturable" not in sgd.param_groups[0]


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_graph_replay_equals_eager(kind):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = PixelCNN(5, 4, 3, 8).to(dev)
    twin = copy.deepcopy(model)
    start = [p.detach().clone() for p in model.parameters()]
    step = GradientStep(model, vmc_loss, use_graph=True)
    opt, opt_twin = _optimizer(kind, model, True), _optimizer(kind, twin, True)
    paths = []
    # batch 32 x 4 steps, then 64 (a new graph: eager, capture), then 32 again
    for seed, batch in enumerate([32, 32, 32, 32, 64, 64, 64, 32, 32]):
        spins, eloc = _data(model, batch, seed, dev)
        step(opt, spins, eloc)
        _eager_step(twin, opt_twin, spins, eloc)
        paths.append(step.path)
        for p, q in zip(model.parameters(), twin.parameters()):
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), (seed, batch)
    assert paths == ["eager", "cuda-graph", "cuda-graph", "cuda-graph", "eager", "cuda-graph", "cuda-graph",
                     "eager", "cuda-graph"]  # fmt: skip
    assert max((p - p0).abs().max().item() for p, p0 in zip(model.parameters(), start)) > 1e-3


class _Syncing(torch.nn.Module):
    """A model whose log psi synchronizes with the host (cannot be captured)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def log_psi(self, spins):
        out = self.inner.log_psi(spins)
        if out.real.max().item() > 1e9:  # a host read inside the forward
            raise AssertionError
        return out


@cuda
@pytest.mark.cuda
def test_uncapturable_model_falls_back_to_eager():
    dev = torch.device("cuda")
    torch.manual_seed(1)
    inner = PixelCNN(3, 3, 2, 4).to(dev)
    twin = copy.deepcopy(inner)
    model = _Syncing(inner)
    step = GradientStep(model, vmc_loss, use_graph=True)
    opt, opt_twin = _optimizer("adam", inner, True), _optimizer("adam", twin, True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(3):
            spins, eloc = _data(inner, 16, seed, dev)
            step(opt, spins, eloc)
            _eager_step(twin, opt_twin, spins, eloc)
    assert step.path == "eager"
    assert any("CUDA graph" in str(w.message) for w in caught)
    for p, q in zip(inner.parameters(), twin.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)


@cuda
@pytest.mark.cuda
def test_driver_resumes_bit_for_bit_with_the_graph(tmp_path):
    def config():
        return VMCConfig(model="ising", size="3x3", gamma=1.0, n_blocks=2, channels=4, eval_batch=64,
                         checkpoint_every=3, stages=[Stage(4, 32, "adam", 1e-2), Stage(3, 64, "sgd", 1e-2)],
                         exact=False, device="cuda")  # fmt: skip

    straight = VMC(config(), tmp_path / "a", progress=False)
    summary = straight.run()
    assert summary["gradient_path"] == "cuda-graph"
    interrupted = VMC(config(), tmp_path / "b", progress=False)
    interrupted.out_dir.mkdir(parents=True)
    with (interrupted.out_dir / "metrics.jsonl").open("w") as log:
        for _ in range(3):
            log.write(json.dumps(interrupted.train_step()) + "\n")
    interrupted.save_checkpoint()
    resumed = VMC(config(), tmp_path / "b", progress=False)
    resumed.run(resume=True)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    eager = VMC(VMCConfig(**{**config().to_dict(), "gradient_graph": False, "stages": config().stages}),
                tmp_path / "c", progress=False)
    assert eager.run()["gradient_path"] == "eager"
    for p, q in zip(straight.model.parameters(), eager.model.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize(
    "system",
    [dict(model="heisenberg", size="4x4", symmetrize=True),  # self-ensemble, Sz sector, Marshall sign
     dict(model="ising", size="3x4", spin_flip=True)],  # the {1, inversion} ensemble
)
def test_driver_graph_equals_eager_for_symmetrized_models(tmp_path, system):
    # (SGD: with these ensembles some gradients vanish by symmetry, e.g. the phase biases'
    # under spin inversion, and Adam turns their ~1e-10 rounding residue into steps of
    # size lr whose sign differs between any two summation orders, graph or not)
    def config(graph):
        return VMCConfig(**system, n_blocks=2, channels=4, eval_batch=64, checkpoint_every=10,
                         stages=[Stage(4, 32, "sgd", 1e-2)], exact=False, device="cuda",
                         gradient_graph=graph)  # fmt: skip

    graphed = VMC(config(True), tmp_path / "graph", progress=False)
    eager = VMC(config(False), tmp_path / "eager", progress=False)
    assert graphed.run()["gradient_path"] == "cuda-graph"
    assert eager.run()["gradient_path"] == "eager"
    for p, q in zip(graphed.model.parameters(), eager.model.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5)
