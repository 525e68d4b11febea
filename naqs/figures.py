"""Experiments behind the NAQS paper's figures that compare exact sampling with
Metropolis chains.

- :func:`pca_of_samples` (Fig. 2): samples of a trained model drawn by exact sampling
  and by several Metropolis chains, each started in one of the two ferromagnetic
  states, projected on the first two principal components of all samples. In the
  ordered phase the chains stay in their ferromagnetic state; exact samples visit both,
  so <m> ~ 0 for exact samples and <m> ~ +-<|m|> for each chain.
- :func:`compare_samplers` (Fig. 3): the same network and schedule trained with exact
  samples and with Metropolis samples taken every k steps, relative error against the
  best energy found (or the exact one) and the energy variance along training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import sampling
from .vmc import VMC, VMCConfig

__all__ = ["pca_of_samples", "compare_samplers"]


def _load_run(run_dir: Path, device: str | None):
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint.pt in {run_dir}: train a model first (naqs train --out {run_dir})")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = VMCConfig.from_dict(state["config"])
    if device:
        config.device = device
    vmc = VMC(config, run_dir, progress=False)
    vmc.model.load_state_dict(state["model"])
    return vmc


@torch.no_grad()
def pca_of_samples(run_dir, out_png, *, n_samples: int = 2000, chains: int = 4, thin: int = 10, burn_in: int = 500, seed: int = 0, device=None) -> dict:
    """Fig. 2: PCA of exact samples and of ``chains`` Metropolis chains (each started
    in a ferromagnetic state, alternating up and down). Returns the magnetizations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    vmc = _load_run(run_dir, device)
    model, n = vmc.model, vmc.lattice.n_sites
    gen = torch.Generator(device=vmc.config.device).manual_seed(seed)
    direct, _ = sampling.exact_sample(model, n_samples, generator=gen)
    groups = {"direct sampling": direct}
    for c in range(chains):
        start = torch.full((1, n), 1 if c % 2 == 0 else -1, dtype=torch.int8, device=direct.device)
        result = sampling.metropolis_sample(
            model.log_psi, n, n_samples // chains, n_chains=1, move="flip", burn_in=burn_in, thin=thin,
            generator=gen, initial=start, device=vmc.config.device,
        )  # fmt: skip
        groups[f"MCMC {c + 1}"] = result.samples
    data = torch.cat(list(groups.values())).double().cpu().numpy()
    mean = data.mean(0)
    _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    stats = {}
    for i, (label, spins) in enumerate(groups.items()):
        xy = (spins.double().cpu().numpy() - mean) @ vt[:2].T
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5, label=label, color=f"C{i}")
        total = spins.double().sum(1) / n
        stats[label] = {"magnetization": float(total.mean()), "abs_magnetization": float(total.abs().mean())}
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(markerscale=4)
    ax.set_title(f"{vmc.lattice.name}, Gamma = {vmc.config.gamma}")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    summary = {"run": str(run_dir), "n_samples": n_samples, "thin": thin, "groups": stats}
    Path(out_png).with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return summary


def compare_samplers(config: VMCConfig, out_dir, ks=(10, 50), progress: bool = True) -> dict:
    """Fig. 3: train ``config`` once with exact sampling and once per Metropolis
    thinning ``k``; each run goes to ``out_dir/<name>`` (resumable); writes
    ``comparison.png`` and ``comparison.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {"direct": dict(sampler="exact")}
    for k in ks:
        runs[f"mcmc-k{k}"] = dict(sampler="mcmc", mcmc_thin=int(k))
    summaries = {}
    for name, overrides in runs.items():
        cfg = VMCConfig.from_dict({**config.to_dict(), **overrides})
        run_dir = out_dir / name
        if (run_dir / "summary.json").exists():
            summaries[name] = json.loads((run_dir / "summary.json").read_text())
            continue
        vmc = VMC(cfg, run_dir, progress=progress)
        summaries[name] = vmc.run(resume=(run_dir / "checkpoint.pt").exists())
    exact = next((s.get("exact_energy") for s in summaries.values() if s.get("exact_energy") is not None), None)
    reference = exact if exact is not None else min(s["energy"] for s in summaries.values())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax2 = ax.twinx()
    for i, name in enumerate(runs):
        rows = [json.loads(x) for x in (out_dir / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
        step = np.array([r["step"] for r in rows])
        rel = np.abs(np.array([r["energy"] for r in rows]) - reference) / abs(reference)
        var = np.array([r["variance"] for r in rows])
        ax.semilogy(step, np.maximum(rel, 1e-9), color=f"C{i}", lw=0.9, label=name)
        ax2.semilogy(step, np.maximum(var, 1e-12), color=f"C{i}", lw=0.7, ls="--")
    ax.set_xlabel("iteration")
    ax.set_ylabel("relative error (solid)")
    ax2.set_ylabel("energy variance (dashed)")
    ax.legend(loc="upper right")
    ax.set_title("reference: " + ("exact (ED)" if exact is not None else "lowest energy found"))
    fig.tight_layout()
    fig.savefig(out_dir / "comparison.png", dpi=120)
    plt.close(fig)
    table = {
        name: {
            "energy": s["energy"],
            "energy_error": s["energy_error"],
            "variance": s["variance"],
            "relative_error": abs(s["energy"] - reference) / abs(reference),
            "seconds": s["seconds"],
        }
        for name, s in summaries.items()
    }
    result = {"reference_energy": reference, "reference": "exact" if exact is not None else "best", "runs": table}
    (out_dir / "comparison.json").write_text(json.dumps(result, indent=2))
    return result

