"""The NAQS reference model: exact normalization, the autoregressive property, the
sector restriction, the sign rule and self-ensemble symmetrization."""

import math

import pytest
import torch

from conftest import all_configurations
from naqs.lattice import square
from naqs.models import PixelCNN, SymmetricModel


def _model(lx, ly, blocks=3, channels=4, seed=0, **kw):
    torch.manual_seed(seed)
    # output_scale=1 so the conditionals are far from uniform and the checks are sharp
    return PixelCNN(lx, ly, blocks, channels, output_scale=1.0, **kw).double()


def _norm(model, n):
    configs = all_configurations(n)
    return torch.exp(2 * model.log_psi(configs).real).sum().item()


@pytest.mark.parametrize("lx,ly", [(3, 3), (4, 4), (1, 5), (5, 1), (1, 1), (2, 3)])
def test_normalized_plain(lx, ly):
    assert _norm(_model(lx, ly), lx * ly) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("lx,ly,m", [(3, 3, 1), (4, 4, 0), (4, 4, -4), (3, 3, -9)])
def test_normalized_sector(lx, ly, m):
    model = _model(lx, ly, magnetization=m)
    configs = all_configurations(lx * ly)
    prob = torch.exp(2 * model.log_psi(configs).real)
    assert prob.sum().item() == pytest.approx(1.0, abs=1e-12)
    outside = configs.sum(1) != m
    assert prob[outside].max().item() == 0.0


@pytest.mark.parametrize("lx,ly,spin_flip,blocks", [(3, 3, False, 3), (2, 4, True, 3), (4, 4, False, 1)])
def test_normalized_symmetrized(lx, ly, spin_flip, blocks):
    lat = square(lx, ly, pbc=False)
    perms, flips = lat.symmetry_group(spin_flip=spin_flip)
    model = SymmetricModel(_model(lx, ly, blocks=blocks, magnetization=0 if spin_flip else None), perms, flips)
    assert _norm(model, lx * ly) == pytest.approx(1.0, abs=1e-12)
    # the symmetrized amplitude is invariant under the group
    configs = all_configurations(lx * ly)[:50]
    base = model.log_psi(configs)
    for g in range(model.n_transforms):
        image = model.transform(configs)[g]
        assert torch.allclose(torch.exp(model.log_psi(image).real), torch.exp(base.real), atol=1e-12)


def test_autoregressive_property():
    """Conditional i is unchanged by any change of sites >= i."""
    model = _model(4, 3, blocks=4)
    gen = torch.Generator().manual_seed(5)
    n = 12
    spins = (torch.randint(0, 2, (8, n), generator=gen) * 2 - 1).to(torch.int8)
    base = model.conditionals(spins)
    for i in range(n):
        changed = spins.clone()
        changed[:, i:] = (torch.randint(0, 2, (8, n - i), generator=gen) * 2 - 1).to(torch.int8)
        other = model.conditionals(changed)
        assert torch.allclose(other[:, : i + 1], base[:, : i + 1], atol=1e-13), f"site {i} sees the future"
        # and the conditional does depend on the past (the test could otherwise pass trivially)
    past_changed = spins.clone()
    past_changed[:, 0] = -past_changed[:, 0]
    assert not torch.allclose(model.conditionals(past_changed)[:, 5:], base[:, 5:])


def test_sign_rule_is_a_sign():
    lat = square(3, 3)
    plain = _model(3, 3, seed=1)
    signed = _model(3, 3, seed=1, sign_rule=lat.sublattice)
    configs = all_configurations(9)
    a, b = plain.log_psi(configs), signed.log_psi(configs)
    assert torch.allclose(a.real, b.real)
    count = ((configs > 0).double() * torch.as_tensor(lat.sublattice, dtype=torch.float64)).sum(1)
    assert torch.allclose(torch.exp(b - a), torch.cos(math.pi * count).to(torch.complex128), atol=1e-12)


def test_packed_weights_layout():
    model = _model(3, 4, blocks=3, channels=5)
    w = model.packed_weights()
    assert w["wv0"].shape == (5, 1, 3, 3) and w["wv"].shape == (2, 5, 5, 3, 3)
    assert w["wh0"].shape == (5, 6, 3, 3) and w["wh"].shape == (2, 5, 10, 3, 3)
    assert w["bv"].shape == (3, 5) and w["bh"].shape == (3, 5)
    assert w["wo"].shape == (4, 5) and w["bo"].shape == (4,)
    assert torch.all(w["wh0"][:, 0, 2, 2] == 0)


def test_bad_input():
    with pytest.raises(ValueError, match="parity"):
        PixelCNN(3, 3, magnetization=0)
    with pytest.raises(ValueError, match="at least 1x1"):
        PixelCNN(0, 3)
    model = _model(2, 2)
    with pytest.raises(ValueError, match="shape"):
        model.log_psi(torch.ones(3, 5))
    with pytest.raises(ValueError, match="uniforms"):
        model.sample_reference(2, uniforms=torch.full((2, 4), 1.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="permutation"):
        SymmetricModel(model, [[0, 0, 1, 2]])
    with pytest.raises(ValueError, match="spin inversion"):
        SymmetricModel(PixelCNN(2, 2, 1, 2, magnetization=2), [[0, 1, 2, 3]], [True])
