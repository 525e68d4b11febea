"""Exact sampling reproduces |psi|^2; the Metropolis baseline converges to it."""

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import all_configurations
from naqs.lattice import square
from naqs.models import PixelCNN, SymmetricModel
from naqs.sampling import exact_sample, metropolis_sample


def _index(spins: torch.Tensor) -> np.ndarray:
    bits = (spins > 0).long()
    return (bits << torch.arange(spins.shape[1])).sum(1).numpy()


def _chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson chi-square p-value, pooling cells with expected count < 5."""
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] < 5:  # merge the pooled cell into the smallest big one
        obs, exp = obs[:-1], exp[:-1]
        obs[-1] += counts[~big].sum()
        exp[-1] += expected[~big].sum()
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


def _model(magnetization=None, seed=0):
    torch.manual_seed(seed)
    return PixelCNN(3, 3, 3, 6, magnetization=magnetization, output_scale=1.0).double()


def _exact_probs(model):
    configs = all_configurations(9)
    return torch.exp(2 * model.log_psi(configs).real).detach().numpy()


@pytest.mark.parametrize("magnetization", [None, 1])
def test_exact_sampler_matches_born_distribution(magnetization):
    model = _model(magnetization)
    probs = _exact_probs(model)
    gen = torch.Generator().manual_seed(11)
    spins, log_psi = exact_sample(model, 60_000, generator=gen)
    counts = np.bincount(_index(spins), minlength=512)
    assert _chi2_pvalue(counts, probs) > 1e-4
    assert torch.allclose(log_psi, model.log_psi(spins))
    if magnetization is not None:
        assert (spins.sum(1) == magnetization).all()


def test_chi2_detects_a_biased_sampler():
    """The statistical test has power: samples from a tempered |psi|^1.8 fail it."""
    model = _model()
    probs = _exact_probs(model)
    biased = probs**0.9
    biased /= biased.sum()
    rng = np.random.default_rng(0)
    counts = np.bincount(rng.choice(512, size=60_000, p=biased), minlength=512)
    assert _chi2_pvalue(counts, probs) < 1e-6


def test_symmetrized_sampler_matches_mixture():
    lat = square(3, 3)
    model = SymmetricModel(_model(seed=2), lat.perms)
    probs = torch.exp(2 * model.log_psi(all_configurations(9)).real).detach().numpy()
    spins, _ = exact_sample(model, 30_000, generator=torch.Generator().manual_seed(4))
    counts = np.bincount(_index(spins), minlength=512)
    assert _chi2_pvalue(counts, probs) > 1e-4


def test_given_uniforms_fix_the_samples():
    model = _model()
    u = torch.rand(100, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, _ = model.sample_reference(100, uniforms=u)
    b, _ = exact_sample(model, 100, uniforms=u)
    assert torch.equal(a, b)


@pytest.mark.parametrize("move,magnetization", [("flip", None), ("exchange", 1)])
def test_metropolis_converges(move, magnetization):
    model = _model(magnetization, seed=3)
    probs = _exact_probs(model)
    gen = torch.Generator().manual_seed(7)
    result = metropolis_sample(
        model.log_psi, 9, 40_000, n_chains=2000, move=move, magnetization=magnetization, burn_in=60, thin=4, generator=gen
    )
    assert 0.0 < result.acceptance <= 1.0
    counts = np.bincount(_index(result.samples), minlength=512)
    tv = 0.5 * np.abs(counts / counts.sum() - probs).sum()
    assert tv < 0.05
    if magnetization is not None:
        assert (result.samples.sum(1) == magnetization).all()


def test_sampler_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="n_samples"):
        exact_sample(model, -1)
    with pytest.raises(ValueError, match="move"):
        metropolis_sample(model.log_psi, 9, 10, move="swap")
    with pytest.raises(ValueError, match="initial"):
        metropolis_sample(model.log_psi, 9, 10, n_chains=2, initial=torch.ones(3, 9))
    with pytest.raises(TypeError, match="PixelCNN"):
        exact_sample(torch.nn.Linear(2, 2), 3)
