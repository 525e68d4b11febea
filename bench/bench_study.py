"""Timings of the generalization study: vectorized (vmap-stacked) fits against the same
fits run one by one, and a timed sweep (ED + fits + overlaps) through the public API.

    python bench/bench_study.py --cluster square-4x4 --device cpu           # CPU smoke
    python bench/bench_study.py --cluster kagome-24 --device cuda --sweep   # GPU: Fig. 2c

Prints a table and writes bench/results/study-<device>-<date>.json (or --out DIR).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from naqs import study
from naqs.hamiltonian import Heisenberg


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bench_stacking(cluster, arch, repeats, eps, epochs, device):
    lat = study.resolve_lattice(cluster)
    gs = study.ground_state(Heisenberg(lat, 1.0, 0.5, units="pauli"), device=device, progress=False)
    psi = torch.as_tensor(gs.state)
    data = []
    for seed in range(repeats):
        split = study.make_split(gs.state**2, eps, study.default_eps_val(eps, gs.dim), np.random.default_rng(seed))
        data.append(study.FitData(study.basis_to_spins(gs.basis[split.train], lat.n_sites), psi[split.train],
                                  study.basis_to_spins(gs.basis[split.val], lat.n_sites), psi[split.val], seed))
    # patience > epochs: every fit runs exactly `epochs` epochs, the work is fixed
    config = study.FitConfig(arch, "sign", max_epochs=epochs, patience=epochs + 1, device=device)
    study.fit_many(lat, data[:1], study.FitConfig(arch, "sign", max_epochs=1, patience=2, device=device))  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    study.fit_many(lat, data, config)
    _sync(device)
    stacked = time.perf_counter() - t0
    t0 = time.perf_counter()
    for d in data:
        study.fit_many(lat, [d], config)
    _sync(device)
    sequential = time.perf_counter() - t0
    steps = epochs * -(-len(data[0].x_train) // config.batch_size)
    return dict(cluster=cluster, arch=arch, fits=repeats, n_train=len(data[0].x_train), epochs=epochs,
                steps=steps, stacked_s=round(stacked, 3), sequential_s=round(sequential, 3),
                speedup=round(sequential / stacked, 2), fit_steps_per_s=round(steps * repeats / stacked, 1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default="square-4x4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--archs", default="dense1,dense2,cnn")
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--eps", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sweep", action="store_true", help="also time a generalization sweep (writes CSV/PNG)")
    p.add_argument("--sweep-j2", default="0:2:0.25")
    p.add_argument("--sweep-repeats", type=int, default=5)
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for arch in args.archs.split(","):
        rows.append(bench_stacking(args.cluster, arch, args.repeats, args.eps, args.epochs, args.device))
        r = rows[-1]
        print(f"{r['cluster']:12s} {arch:7s} fits={r['fits']:3d} n_train={r['n_train']:7d} steps={r['steps']:6d} "
              f"stacked={r['stacked_s']:8.2f}s sequential={r['sequential_s']:8.2f}s x{r['speedup']:.1f} "
              f"({r['fit_steps_per_s']:.0f} fit-steps/s)", flush=True)
    sweep = None
    if args.sweep:
        t0 = time.perf_counter()
        path = study.run_generalization(args.cluster, args.sweep_j2, eps=args.eps, arch=args.archs.split(","),
                                        target="sign", repeats=args.sweep_repeats, out=out / "sweep",
                                        device=args.device, max_epochs=args.max_epochs, progress=False)
        seconds = time.perf_counter() - t0
        pngs = study.plot_directory(out / "sweep")
        info = json.loads((out / "sweep" / "generalization.json").read_text())
        sweep = dict(csv=str(path), seconds=round(seconds, 1), ed_seconds=info["ed_seconds"],
                     fit_seconds=info["fit_seconds"], pngs=[str(p) for p in pngs])
        print(f"sweep {args.cluster} J2={args.sweep_j2} repeats={args.sweep_repeats} archs={args.archs}: "
              f"{seconds:.1f} s (ED {info['ed_seconds']:.1f} s, fits {info['fit_seconds']:.1f} s)", flush=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    device_name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else platform.processor()
    report = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), device=device_name, torch=torch.__version__,
                  commit=commit, threads=torch.get_num_threads(), stacking=rows, sweep=sweep, units="seconds")
    name = out / f"study-{torch.device(args.device).type}-{datetime.date.today()}.json"
    name.write_text(json.dumps(report, indent=2) + "\n")
    print(name)


if __name__ == "__main__":
    main()
