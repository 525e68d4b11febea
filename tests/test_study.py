"""Tests of naqs.study: datasets, overlaps, fits (single, vectorized, full basis), the
CNN layout, sweeps (CSV resume, plots) and bad input.

Ground states come from study.small_ground_state (sparse eigsh in the sz = 0 sector),
checked here against the known 4x4 energy, so the tests need no naqs.ed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from naqs import study
from naqs.hamiltonian import Heisenberg
from naqs.study import FitConfig, FitData


@pytest.fixture(scope="module")
def gs_4x4():
    lat = study.resolve_lattice("square-4x4")
    return lat, study.small_ground_state(Heisenberg(lat, 1.0, 0.0, units="pauli"))


def test_small_ground_state_energy(gs_4x4):
    lat, gs = gs_4x4
    # 4x4 periodic Heisenberg: E = -11.228483 in S units (published), x4 in Pauli units
    assert gs.dim == math.comb(16, 8)
    assert abs(gs.energy - 4 * -11.228483) < 1e-5
    assert abs(np.linalg.norm(gs.state) - 1) < 1e-12
    # Marshall: sign = (-1)^(ups on sublattice A), up to a global sign
    spins = study.basis_to_spins(gs.basis, 16).numpy()
    marshall = (-1.0) ** ((spins[:, lat.sublattice == 0] == 1).sum(1))
    big = np.abs(gs.state) > 1e-8
    agree = np.sign(gs.state[big]) * marshall[big]
    assert abs(agree.mean()) == 1.0


def test_basis_to_spins_round_trip():
    basis = study.sector_basis(6, 3)
    assert len(basis) == 20 and np.all(np.diff(basis.astype(np.int64)) > 0)
    spins = study.basis_to_spins(basis, 6)
    assert spins.dtype == torch.int8 and torch.all(spins.sum(1) == 0)
    assert np.array_equal(study._spins_to_basis(spins), basis)
    # bit i = site i, set = +1
    assert study.basis_to_spins(np.array([0b000101], dtype=np.uint64), 6).tolist() == [[1, -1, 1, -1, -1, -1]]


# ------------------------------------------------------------------ datasets
def test_split_properties():
    rng = np.random.default_rng(0)
    k = 5000
    p = rng.random(k) ** 4
    p[:100] = 0.0  # states of zero weight can never be drawn
    split = study.make_split(p, 0.02, 0.01, np.random.default_rng(1))
    assert len(split.train) == 100 and len(split.val) == 50
    assert np.all(p[split.train] > 0) and np.all(p[split.val] > 0)
    seen = set(split.train.tolist()) | set(split.val.tolist())
    test = set(split.test.tolist())
    assert not (seen & test)
    assert seen | test == set(range(k))
    assert np.all(np.diff(split.test) > 0)
    # drawn with replacement from p: the heaviest states repeat in a large draw
    big = study.make_split(p, 1.0, 0.1, np.random.default_rng(2))
    assert len(big.train) == k and len(np.unique(big.train)) < k
    # the same seed gives the same split
    again = study.make_split(p, 0.02, 0.01, np.random.default_rng(1))
    assert np.array_equal(again.train, split.train) and np.array_equal(again.test, split.test)


def test_sampling_follows_probabilities():
    p = np.array([0.1, 0.0, 0.6, 0.3])
    idx = study.sample_indices(p * 7.0, 200_000, np.random.default_rng(3))  # unnormalized is fine
    freq = np.bincount(idx, minlength=4) / len(idx)
    assert np.allclose(freq, p, atol=5e-3)


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.5, float("nan")])
def test_split_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match="eps_train"):
        study.make_split(np.ones(10), eps, 0.1, np.random.default_rng(0))


def test_split_rejects_bad_probabilities():
    with pytest.raises(ValueError):
        study.make_split(np.array([1.0, -1.0]), 0.5, 0.5, np.random.default_rng(0))
    with pytest.raises(TypeError):
        study.make_split(np.ones(4), 0.5, 0.5, 0)


# ------------------------------------------------------------------ overlaps
def test_sign_overlap_hand_values():
    psi = np.array([0.6, -0.48, 0.64, 0.0])  # norm 1 (0.36 + 0.2304 + 0.4096)
    exact = np.sign(psi)
    assert study.sign_overlap(psi, exact) == pytest.approx(1.0)
    assert study.sign_overlap(psi, -exact) == pytest.approx(1.0)  # a global sign is no error
    wrong = exact.copy()
    wrong[0] = -wrong[0]
    assert study.sign_overlap(psi, wrong) == pytest.approx(abs(-0.36 + 0.2304 + 0.4096))
    # restricted to the mask and normalized there
    mask = np.array([False, True, True, False])
    flipped = np.array([1, 1, 1, 1])  # wrong on index 1
    assert study.sign_overlap(psi, flipped, mask) == pytest.approx(abs(-0.2304 + 0.4096) / (0.2304 + 0.4096))


def test_sign_overlap_random_signs_small():
    rng = np.random.default_rng(0)
    psi = rng.normal(size=100_000)
    assert study.sign_overlap(psi, rng.choice([-1, 1], size=psi.size)) < 0.02


def test_amplitude_overlap_hand_values():
    psi = np.array([0.6, -0.8])
    assert study.amplitude_overlap(psi, np.log(np.abs(psi)) + 3.0) == pytest.approx(1.0)  # scale-free
    # predicted amplitudes (1, 1)/sqrt(2): overlap (0.6 + 0.8)/sqrt(2)
    assert study.amplitude_overlap(psi, np.zeros(2)) == pytest.approx(1.4 / math.sqrt(2))
    assert study.amplitude_overlap(psi, np.array([0.0, -50.0])) == pytest.approx(0.6, abs=1e-12)
    with pytest.raises(ValueError):
        study.amplitude_overlap(psi, np.array([0.0, np.inf]))
    with pytest.raises(ValueError):
        study.sign_overlap(psi, np.ones(3))


# ------------------------------------------------------------------ models
def test_make_model_rejects_bad_input():
    lat = study.resolve_lattice("square-4x4")
    with pytest.raises(ValueError, match="unknown architecture"):
        study.make_model("resnet", lat, "sign")
    with pytest.raises(ValueError, match="unknown target"):
        study.make_model("dense1", lat, "phase")
    with pytest.raises(ValueError, match="unknown architecture"):
        FitConfig(arch="transformer")


def test_unknown_cluster():
    with pytest.raises(ValueError, match="unknown cluster"):
        study.resolve_lattice("hexagon-24")
    with pytest.raises(ValueError, match="unknown cluster"):
        study.run_generalization("hexagon-24", "0", out="/nonexistent")


def test_cnn_translation_invariance_and_kagome_layout():
    from naqs.models.cnn import CircularCNN, grid_layout

    for name in ("square-24", "triangle-24", "kagome-24"):
        lat = study.resolve_lattice(name)
        layout = grid_layout(lat)
        assert sorted(layout.reshape(-1).tolist()) == list(range(lat.n_sites))
        net = CircularCNN(lat).init_parameters(torch.Generator().manual_seed(0)).double()
        spins = (torch.randint(0, 2, (8, lat.n_sites), generator=torch.Generator().manual_seed(1)) * 2 - 1).to(torch.int8)
        ref = net(spins)
        # a cyclic shift of the image by one cell along x: a translation of the cluster
        c, ly, lx = layout.shape
        shifted = np.roll(layout, shift=-1, axis=2)
        perm = np.empty(lat.n_sites, dtype=np.int64)
        perm[layout.reshape(-1)] = shifted.reshape(-1)
        assert lat._preserves_edges(perm)
        assert torch.allclose(net(spins[:, torch.as_tensor(perm)]), ref, atol=1e-12)
        # but not invariant under an arbitrary permutation (the test can fail)
        rand_perm = torch.randperm(lat.n_sites, generator=torch.Generator().manual_seed(5))
        assert not torch.allclose(net(spins[:, rand_perm]), ref, atol=1e-6)
    assert grid_layout(study.resolve_lattice("kagome-24")).shape == (3, 4, 2)
    with pytest.raises(ValueError, match="dense"):
        grid_layout(study.resolve_lattice("kagome-30"))


# ------------------------------------------------------------------ fits
def _datasets(gs, eps, seeds, eps_val=0.05):
    psi = torch.as_tensor(gs.state)
    out, excluded = [], []
    for seed in seeds:
        split = study.make_split(gs.state**2, eps, eps_val, np.random.default_rng(seed))
        out.append(FitData(study.basis_to_spins(gs.basis[split.train], 16), psi[split.train],
                           study.basis_to_spins(gs.basis[split.val], 16), psi[split.val], seed))
        excluded.append(split.seen)
    return out, excluded


@pytest.mark.slow
def test_sign_net_learns_marshall_signs(gs_4x4):
    lat, gs = gs_4x4
    config = FitConfig("dense1", "sign", lr=3e-3, batch_size=64, max_epochs=150, patience=20)
    data, excluded = _datasets(gs, 0.2, [11])
    (res,) = study.fit_many(lat, data, config)
    (overlap,) = study.evaluate_overlaps(lat, config, [res], [gs], excluded)
    assert overlap > 0.9, overlap
    # the same network at initialization is no better than chance: the fit did the work
    untrained = study.fit_many(lat, data, FitConfig("dense1", "sign", lr=1e-12, max_epochs=1, patience=1))
    assert study.evaluate_overlaps(lat, config, untrained, [gs], excluded)[0] < 0.3


@pytest.mark.slow
def test_amplitude_net_generalizes(gs_4x4):
    lat, gs = gs_4x4
    config = FitConfig("dense2", "amplitude", lr=1e-3, batch_size=64, max_epochs=60, patience=10)
    data, excluded = _datasets(gs, 0.05, [3])
    (res,) = study.fit_many(lat, data, config)
    (overlap,) = study.evaluate_overlaps(lat, config, [res], [gs], excluded)
    # overlap of a uniform amplitude guess on this state, the baseline to beat
    uniform = study.amplitude_overlap(gs.state, np.zeros(gs.dim))
    assert overlap > 0.9 and overlap > uniform + 0.05, (overlap, uniform)


def test_vectorized_fits_equal_individual(gs_4x4):
    lat, gs = gs_4x4
    config = FitConfig("dense2", "sign", lr=1e-3, batch_size=32, max_epochs=6, patience=2, dtype=torch.float64)
    data, excluded = _datasets(gs, 0.02, [1, 2, 3])
    stacked = study.fit_many(lat, data, config)
    for i, d in enumerate(data):
        (alone,) = study.fit_many(lat, [d], config)
        assert alone.epochs == stacked[i].epochs and alone.best_epoch == stacked[i].best_epoch
        for k in alone.params:
            assert torch.allclose(alone.params[k], stacked[i].params[k], atol=1e-10), k
    # different seeds give different networks (the comparison above is not vacuous)
    assert not torch.allclose(stacked[0].params["layers.0.weight"], stacked[1].params["layers.0.weight"])


@pytest.mark.parametrize("arch", ["dense1", "dense2"])
def test_stacked_forward_equals_vmap(arch):
    from torch.func import functional_call, stack_module_state, vmap

    lat = study.resolve_lattice("square-4x4")
    models = [study.make_model(arch, lat, "sign").init_parameters(torch.Generator().manual_seed(i)) for i in range(3)]
    params, _ = stack_module_state(models)
    x = torch.randint(0, 2, (3, 10, 16)).float() * 2 - 1
    ref = vmap(lambda p, s: functional_call(models[0], p, (s,)), in_dims=(0, 0))(params, x)
    torch.testing.assert_close(models[0].stacked_forward(params, x), ref)
    shared = vmap(lambda p, s: functional_call(models[0], p, (s,)), in_dims=(0, None))(params, x[0])
    torch.testing.assert_close(models[0].stacked_forward(params, x[0]), shared)
    with pytest.raises(ValueError, match="16"):
        models[0].stacked_forward(params, x[..., :5])


def test_cnn_fit_runs_vectorized():
    lat = study.resolve_lattice("square-4x4")
    gs = study.small_ground_state(Heisenberg(lat, 1.0, 0.5, units="pauli"))
    config = FitConfig("cnn", "sign", max_epochs=2, patience=1)
    data, excluded = _datasets(gs, 0.01, [1, 2])
    results = study.fit_many(lat, data, config)
    overlaps = study.evaluate_overlaps(lat, config, results, [gs, gs], excluded)
    assert all(0.0 <= o <= 1.0 + 1e-9 for o in overlaps)


@pytest.mark.slow
def test_expressibility_small_system(tmp_path):
    # full basis of a 12-site kagome cluster (2x2 cells, K = 924), frustrated point J2 = 1
    path = study.run_expressibility("kagome-2x2", "1.0", arch="dense2", target="sign", out=tmp_path,
                                    batch_size=64, lr=3e-3, max_epochs=150, patience=30, progress=False)
    rows = study.read_rows(path)
    assert len(rows) == 1 and float(rows[0]["overlap"]) > 0.94, rows


def test_fit_rejects_unequal_sizes(gs_4x4):
    lat, gs = gs_4x4
    a, _ = _datasets(gs, 0.01, [1])
    b, _ = _datasets(gs, 0.02, [2])
    with pytest.raises(ValueError, match="equal dataset sizes"):
        study.fit_many(lat, a + b, FitConfig())


# ------------------------------------------------------------------ sweeps, CSV, plots, CLI
def test_generalization_sweep_resume_and_plot(tmp_path, monkeypatch):
    kwargs = dict(eps=0.02, arch="dense1", target=["sign", "amplitude"], repeats=2, out=tmp_path,
                  max_epochs=2, patience=1, progress=False)
    path = study.run_generalization("square-4x4", "0:0.5:0.5", **kwargs)
    rows = study.read_rows(path)
    assert len(rows) == 2 * 2 * 2
    assert {r["units"] for r in rows} == {"pauli"}
    for r in rows:
        assert 0.0 <= float(r["overlap"]) <= 1.0 + 1e-9
        assert int(r["n_train"]) == round(0.02 * 12870)
    info = (tmp_path / "generalization.json").read_text()
    assert '"units": "pauli"' in info
    # a rerun skips every row: fit_many must not be called again
    monkeypatch.setattr(study, "fit_many", lambda *a, **k: pytest.fail("resume refit a finished row"))
    study.run_generalization("square-4x4", "0:0.5:0.5", **kwargs)
    assert len(study.read_rows(path)) == 8
    pngs = study.plot_directory(tmp_path)
    assert any(p.name.endswith("_vs_j2.png") for p in pngs) and all(p.stat().st_size > 1000 for p in pngs)


def test_critical_eps_from_rows():
    rows = []
    for eps, ov in ((0.001, [0.01, 0.03]), (0.01, [0.1, 0.3]), (0.1, [0.9, 0.95])):
        for o in ov:
            rows.append(dict(cluster="c", j2="0", arch="dense2", target="sign", dim="1000", eps_train=str(eps), overlap=str(o)))
    (res,) = study.critical_eps(rows)
    assert res["eps_critical"] == 0.01 and res["n_train_critical"] == 10
    (none,) = study.critical_eps(rows, threshold=0.99)
    assert none["eps_critical"] is None


def test_parse_j2():
    assert study.parse_j2("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert study.parse_j2("0.4,0.5") == [0.4, 0.5]
    assert study.parse_j2(0.3) == [0.3]
    for bad in ("1:0:0.1", "0:1:0", "a,b", ""):
        with pytest.raises(ValueError, match="J2"):
            study.parse_j2(bad)


def test_cli_parses_and_rejects(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    study.add_study_arguments(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["generalization", "--cluster", "square-4x4", "--j2", "0", "--eps", "1.5",
                              "--arch", "dense1", "--out", str(tmp_path), "--quiet"])
    with pytest.raises(ValueError, match="eps_train"):
        study.run_study_cli(args)
    args = parser.parse_args(["generalization", "--cluster", "square-4x4", "--j2", "0", "--arch", "mlp",
                              "--out", str(tmp_path), "--quiet"])
    with pytest.raises(ValueError, match="unknown architecture"):
        study.run_study_cli(args)
    args = parser.parse_args(["plot", str(tmp_path)])
    assert study.run_study_cli(args) == 0


# ------------------------------------------------------------------ sampled ground states (N > 32)
@pytest.fixture(scope="module")
def sampled_4x4(gs_4x4):
    lat, gs = gs_4x4
    sgs = study.ground_state(Heisenberg(lat, 1.0, 0.0, units="pauli"), sampled=True)
    return lat, gs, sgs


def test_sampled_ground_state_matches_full(sampled_4x4):
    lat, gs, sgs = sampled_4x4
    assert isinstance(sgs, study.SampledGroundState) and sgs.dim == gs.dim
    assert sgs.energy == pytest.approx(gs.energy, abs=1e-8)
    states, psi = sgs.sample(5000, np.random.default_rng(1))
    idx = np.searchsorted(gs.basis, states)
    assert np.array_equal(gs.basis[idx], states)
    ref = gs.state[idx]
    sign = np.sign(ref[0] * psi[0])  # eigenvectors are defined up to a global sign
    np.testing.assert_allclose(psi, sign * ref, atol=1e-8)


def test_sampled_test_overlap_estimates_the_exact_one(sampled_4x4):
    lat, gs, sgs = sampled_4x4
    rng = np.random.default_rng(3)
    st, pt = sgs.sample(1500, rng)
    sv, pv = sgs.sample(400, rng)
    data = FitData(study.basis_to_spins(st, 16), torch.as_tensor(pt), study.basis_to_spins(sv, 16),
                   torch.as_tensor(pv), 7)
    config = FitConfig("dense1", "sign", lr=3e-3, batch_size=64, max_epochs=8, patience=8)
    (res,) = study.fit_many(lat, [data], config)
    seen = np.union1d(st, sv)
    (exact,) = study.evaluate_overlaps(lat, config, [res], [gs], [np.searchsorted(gs.basis, seen)])
    (est, err, weight), = study.evaluate_overlaps_sampled(lat, config, [res], [sgs], [seen], 200_000,
                                                          np.random.default_rng(4))
    assert 0.0 < err < 0.01
    assert abs(est - exact) < 5 * err + 1e-3, (est, exact, err)
    test_weight = float(np.sum(np.delete(gs.state, np.searchsorted(gs.basis, seen)) ** 2))
    assert abs(weight - test_weight) < 5 * math.sqrt(test_weight * (1 - test_weight) / 200_000) + 1e-3


def test_sampled_sweep_rows(sampled_4x4, tmp_path):
    lat, gs, sgs = sampled_4x4
    states = study._GroundStates(lat, "cpu", None, False)
    states.cache[0.0] = sgs
    path = study.run_generalization("square-4x4", "0", eps=0.05, arch="dense1", target="sign", repeats=1,
                                    out=tmp_path, max_epochs=2, patience=1, progress=False, states=states,
                                    n_eval=20_000)
    (row,) = study.read_rows(path)
    n_seen = gs.dim - int(row["n_test"])
    assert int(row["n_train"]) == round(0.05 * gs.dim) and 0 < n_seen <= int(row["n_train"]) + int(row["n_val"])
    assert 0.0 <= float(row["overlap"]) <= 1.0 and 0.0 < float(row["test_weight"]) < 1.0
    with pytest.raises(ValueError, match="amplitude"):
        study.run_generalization("square-4x4", "0", eps=0.05, arch="dense1", target="amplitude", repeats=1,
                                 out=tmp_path / "amp", max_epochs=1, patience=1, progress=False, states=states)


def test_eval_chunk_bounds_activation_memory():
    lat = study.resolve_lattice("square-24")
    assert study.eval_chunk(lat, "dense2", 1) == 1 << 17
    cnn = study.eval_chunk(lat, "cnn", 15)
    assert 1024 <= cnn and 4 * 100 * 24 * 15 * cnn <= 2**30
    assert study.eval_chunk(lat, "cnn", 10**6) == 1024
