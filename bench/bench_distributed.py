"""Weak and strong scaling of one data-parallel VMC step (naqs.distributed).

Run it once per process count under torchrun; each run appends its timings to a JSON
lines file, and ``--table`` turns the file into the markdown table:

    torchrun --nproc-per-node 1 bench/bench_distributed.py --device cuda --results R.jsonl
    torchrun --nproc-per-node 2 bench/bench_distributed.py --device cuda --results R.jsonl
    python bench/bench_distributed.py --table R.jsonl --out bench/results/distributed-....md

A step is ``VMC.train_step`` itself (exact sampling, local energies, the two
all-reduces, the optimizer step; it synchronizes the device before returning), on
the transverse-field Ising model at Gamma = 3, float32. For each lattice a base batch
B is timed with P = 1; with P processes:

- weak scaling: B samples per rank (global batch P*B); efficiency T_1(B) / T_P;
- strong scaling: B samples in all (B/P per rank); efficiency T_1(B) / (P * T_P).

Times are medians over the timed steps, after warm-up steps (kernel autotuning, CUDA
context, caches). The gradient all-reduce alone is timed too (its share of the step
is the communication cost).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from naqs import distributed
from naqs.vmc import VMC, Stage, VMCConfig

# (name, lattice side, blocks, base batch); batches sized from the H200 engine table:
# the 21x21 local energy runs at ~37 samples/s per GPU, the 12x12 one at ~680.
CASES = {
    "12x12": (12, 10, 512),
    "21x21": (21, 20, 192),
    "6x6": (6, 4, 128),  # a CPU-sized case (gloo smoke runs, the fallback table)
}


def git_commit() -> str:
    if os.environ.get("NAQS_GIT_COMMIT"):
        return os.environ["NAQS_GIT_COMMIT"] + " + working tree"
    try:
        dirty = subprocess.check_output(["git", "status", "--porcelain"], text=True).strip()
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip() + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} CPU ({torch.get_num_threads()} threads/process)"


def time_allreduce(ctx, n_values: int, dtype, reps: int = 10) -> float:
    """Median seconds of one all-reduce of ``n_values`` (the gradient buffer)."""
    buffer = torch.zeros(n_values, dtype=dtype, device=ctx.device)
    times = []
    for i in range(reps + 2):
        if ctx.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.distributed.all_reduce(buffer)
        if ctx.device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_case(ctx, name, side, blocks, channels, global_batch, mode, warmup, reps, budget_s, tmp):
    config = VMCConfig(
        model="ising", size=f"{side}x{side}", gamma=3.0, n_blocks=blocks, channels=channels, seed=0,
        stages=[Stage(10**6, global_batch, "adam", 1e-4)], device=ctx.device, exact=False,
    )  # fmt: skip
    vmc = VMC(config, Path(tmp) / "unused", progress=False, dist=ctx)
    n_params = sum(p.numel() for p in vmc.model.parameters())
    times = []
    for i in range(warmup):
        times.append(vmc.train_step()["seconds"])
    # every rank must take the same number of steps: rank 0 picks it from the warm-up time
    first = max(times[-1] if times else 1.0, 1e-6)
    n = ctx.broadcast_object(max(2, min(reps, int(budget_s / first))) if ctx.is_main else None)
    times = [vmc.train_step()["seconds"] for _ in range(n)]
    comm = time_allreduce(ctx, n_params + ctx.world_size, next(vmc.model.parameters()).dtype)
    # the step time of the slowest rank is the step time (they wait for each other in the
    # collectives anyway, so rank 0's time already includes it)
    step_s = statistics.median(times)
    return {
        "case": name, "mode": mode, "processes": ctx.world_size, "global_batch": global_batch,
        "batch_per_rank": global_batch // ctx.world_size, "blocks": blocks, "channels": channels,
        "step_s": step_s, "min_s": min(times), "steps_timed": n, "samples_per_s": global_batch / step_s,
        "allreduce_s": comm, "n_params": n_params, "sampler_path": vmc.sample_path,
        "local_energy_path": vmc.energy_path, "backend": ctx.backend, "device": device_name(ctx.device),
    }  # fmt: skip


def run(args) -> None:
    ctx = distributed.init_from_environment(args.device, timeout_s=args.timeout_s)
    if ctx is None:
        raise SystemExit("start this under torchrun (--nproc-per-node 1, then 2), or pass --table")
    if not ctx.device.startswith("cuda"):
        torch.set_num_threads(max(1, args.threads))
    warnings.simplefilter("once")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            side, blocks, base = CASES[name]
            base = args.batch.get(name, base)
            modes = [("base", base)] if ctx.world_size == 1 else [("weak", base * ctx.world_size), ("strong", base)]
            for mode, global_batch in modes:
                left = args.budget_s - (time.perf_counter() - started)
                left = ctx.broadcast_object(left if ctx.is_main else None)  # one decision for all ranks
                if left < 10:
                    if ctx.is_main:
                        print(f"skipped {name} {mode}: time budget spent", flush=True)
                    continue
                row = bench_case(ctx, name, side, blocks, args.channels, global_batch, mode, args.warmup, args.reps,
                                 min(args.case_budget_s, left), tmp)  # fmt: skip
                if ctx.is_main:
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    if args.results:
                        with open(args.results, "a") as f:
                            f.write(json.dumps(row) + "\n")
    ctx.shutdown()


def table(paths, out, note="") -> str:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    base = {r["case"]: r for r in rows if r["processes"] == 1}
    lines = [
        "| lattice | blocks | mode | P | global batch | batch/rank | step s | samples/s | all-reduce ms | efficiency |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (r["case"], r["processes"], r["mode"])):
        eff = ""
        b = base.get(r["case"])
        if b is not None and r["processes"] > 1:
            if r["mode"] == "weak" and r["batch_per_rank"] == b["global_batch"]:
                eff = f"{100 * b['step_s'] / r['step_s']:.1f}%"
            elif r["mode"] == "strong" and r["global_batch"] == b["global_batch"]:
                eff = f"{100 * b['step_s'] / (r['processes'] * r['step_s']):.1f}%"
        elif r["processes"] == 1:
            eff = "(base)"
        lines.append(
            f"| {r['case']} | {r['blocks']} | {r['mode']} | {r['processes']} | {r['global_batch']} | {r['batch_per_rank']} | "
            f"{r['step_s']:.3f} | {r['samples_per_s']:.1f} | {1000 * r['allreduce_s']:.2f} | {eff} |"
        )
    first = rows[0] if rows else {}
    head = [
        "# Data-parallel VMC step: weak and strong scaling",
        "",
        f"- date {datetime.date.today()}, git commit {git_commit()}, torch {torch.__version__}",
        f"- device {first.get('device', '?')}, backend {first.get('backend', '?')}; sampler path "
        f"{first.get('sampler_path', '?')}, local energy path {first.get('local_energy_path', '?')}",
        "- one step = `VMC.train_step` (exact samples, Ising local energies at Gamma=3, two all-reduces, Adam), "
        f"float32, {first.get('channels', '?')} channels; median of the timed steps after warm-up",
        "- weak: batch/rank fixed, efficiency T1/TP; strong: global batch fixed, efficiency T1/(P*TP); "
        "all-reduce ms = one gradient all-reduce alone",
    ]
    if note:
        head.append(f"- {note}")
    text = "\n".join(head + [""] + lines) + "\n"
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cases", nargs="+", default=["12x12", "21x21"], choices=list(CASES))
    p.add_argument("--batch", nargs="*", default=[], metavar="CASE=B", help="base batch per case, e.g. 21x21=128")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5, help="timed steps (fewer when a step is slow)")
    p.add_argument("--case-budget-s", type=float, default=40.0, help="time for the timed steps of one case")
    p.add_argument("--budget-s", type=float, default=1e9, help="time for this whole run; later cases are skipped")
    p.add_argument("--timeout-s", type=float, default=300.0, help="process-group timeout")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    p.add_argument("--results", help="JSON lines file to append to (rank 0)")
    p.add_argument("--table", nargs="+", help="JSON lines files to tabulate (no torchrun needed)")
    p.add_argument("--note", default="", help="a line for the table's header")
    p.add_argument("--out", help="markdown file for --table")
    args = p.parse_args(argv)
    try:
        args.batch = {k: int(v) for k, v in (item.split("=") for item in args.batch)}
    except ValueError:
        p.error("--batch takes CASE=B items, e.g. 21x21=128")
    if args.table:
        print(table(args.table, args.out, args.note))
        return
    run(args)


if __name__ == "__main__":
    main()
