"""The NAQS figure commands run end to end on a tiny system."""

import json

from naqs import figures
from naqs.vmc import VMC, Stage, VMCConfig


def _config(**kw):
    base = dict(model="ising", size="2x3", gamma=0.5, n_blocks=1, channels=4, eval_batch=128, checkpoint_every=5,
                stages=[Stage(5, 32, "adam", 1e-2)], mcmc_chains=8, mcmc_burn_in=5)  # fmt: skip
    base.update(kw)
    return VMCConfig(**base)


def test_pca_of_samples(tmp_path):
    VMC(_config(), tmp_path / "run", progress=False).run()
    out = tmp_path / "pca.png"
    result = figures.pca_of_samples(tmp_path / "run", out, n_samples=200, chains=2, thin=2, burn_in=10)
    assert out.exists() and out.with_suffix(".json").exists()
    assert set(result["groups"]) == {"direct sampling", "MCMC 1", "MCMC 2"}
    for stats in result["groups"].values():
        assert abs(stats["magnetization"]) <= stats["abs_magnetization"] + 1e-12


def test_compare_samplers(tmp_path):
    result = figures.compare_samplers(_config(), tmp_path, ks=(2,), progress=False)
    assert set(result["runs"]) == {"direct", "mcmc-k2"}
    assert result["reference"] == "exact"  # 6 sites: ED is available
    assert (tmp_path / "comparison.png").exists()
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["runs"]["direct"]["relative_error"] >= 0
