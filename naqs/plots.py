"""Plots of training runs (matplotlib, Agg backend: files only, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["plot_training"]


def _load_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_training(metrics_path, out_path, exact_energy: float | None = None, units: str = "", title: str | None = None):
    """Energy (and its relative error against ``exact_energy``) and the energy
    variance against the step, from a ``metrics.jsonl`` file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _load_metrics(metrics_path)
    if not rows:
        raise ValueError(f"{metrics_path} holds no metrics")
    step = np.array([r["step"] for r in rows])
    energy = np.array([r["energy"] for r in rows])
    error = np.array([r["energy_error"] for r in rows])
    variance = np.array([r["variance"] for r in rows])
    panels = 3 if exact_energy is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4))
    ax = axes[0]
    ax.plot(step, energy, lw=0.8, label="E (batch mean)")
    ax.fill_between(step, energy - error, energy + error, alpha=0.3)
    ax.set_ylabel(f"energy [{units}]")
    if exact_energy is not None:
        ax.axhline(exact_energy, color="k", ls="--", lw=0.8, label="exact (ED)")
        rel = np.abs(energy - exact_energy) / abs(exact_energy)
        axes[2].semilogy(step, np.maximum(rel, 1e-12), lw=0.8, color="C2")
        axes[2].set_xlabel("step")
        axes[2].set_ylabel("|E - E_exact| / |E_exact|")
    stages = [r["stage"] for r in rows]
    for i in range(1, len(rows)):
        if stages[i] != stages[i - 1]:
            for a in axes:
                a.axvline(step[i], color="gray", ls=":", lw=0.8)
    ax.set_xlabel("step")
    ax.legend()
    axes[1].semilogy(step, np.maximum(variance, 1e-16), lw=0.8, color="C1")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel(f"energy variance [{units}^2]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
