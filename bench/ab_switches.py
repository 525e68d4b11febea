"""A/B of the engine's kernel switches (environment variables read per call), interleaved.

bench_engine.py --ab times each setting once, one after the other; a 1-2% effect then
drowns in the drift between settings. Here every round times every setting (sampling of
the whole batch, and the Ising local energy of the first --le-batch samples), and the
table gives each setting's median over the rounds and its ratio to the first setting,
and how far its results (samples, log psi, connected log psi) are from those of the first
setting with the same NAQS_PIXELCNN_MATH (switches that only move copies around must
give bitwise the same numbers).

    python bench/ab_switches.py --config 21x20x4096 --rounds 3 \\
        --settings ";NAQS_PIXELCNN_BULK_WEIGHTS=0;NAQS_PIXELCNN_MATH=tf32" --out ab.md

A setting is "VAR=VALUE,VAR=VALUE" (empty: the defaults); BATCH=n in a setting samples
only the first n samples (a scaling probe: with NAQS_PIXELCNN_TILE=32, n / 32 CTAs).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from bench_engine import git_commit, kernel_switches, timeit  # (bench/ is the script's directory: on sys.path)

from naqs import ops
from naqs.hamiltonian import TransverseFieldIsing
from naqs.lattice import square
from naqs.models.pixelcnn import PixelCNN


def parse_setting(setting: str) -> dict[str, str]:
    out = {}
    for kv in setting.split(","):
        if not kv.strip():
            continue
        key, sep, val = kv.partition("=")
        if not sep:
            raise SystemExit(f"setting {setting!r}: {kv!r} is not VAR=VALUE")
        out[key.strip()] = val.strip()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="21x20x4096", help="LxBLOCKSxBATCH (square lattice, 32 channels)")
    p.add_argument("--settings", default="", help="';'-separated settings, the first is the baseline")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--le-batch", type=int, default=256, help="samples of the local-energy timing (0: none)")
    p.add_argument("--out", default=None, help="markdown file for the table")
    p.add_argument("--device", default="cuda", help="cuda (the switches are the CUDA kernel's); cpu: a dry run")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("ab_switches.py times the CUDA kernels: no CUDA device (--device cpu for a dry run)")
    device = torch.device(args.device)
    try:
        lx, blocks, batch = (int(v) for v in args.config.split("x"))
    except ValueError:
        raise SystemExit(f"--config {args.config!r}: expected LxBLOCKSxBATCH, e.g. 21x20x4096")
    settings = args.settings.split(";") if args.settings else [""]
    parsed = [parse_setting(s) for s in settings]
    torch.manual_seed(0)
    model = PixelCNN(lx, lx, blocks, 32).to(device)
    u = torch.rand(batch, lx * lx, dtype=torch.float64, device=device)
    nb = min(batch, args.le_batch)
    conn = None
    if nb > 0:
        spins, _ = ops.pixelcnn_sample(model, u[:nb])
        conn = TransverseFieldIsing(square(lx, lx), gamma=1.0).connections(spins)
    times = {s: {"sample": [], "eloc": []} for s in settings}
    results, diffs = {}, {}
    for rnd in range(args.rounds):
        for setting, env in zip(settings, parsed):
            env = dict(env)
            nbatch = int(env.pop("BATCH", batch))
            with kernel_switches(env), torch.no_grad():
                ts = timeit(lambda: ops.pixelcnn_sample(model, u[:nbatch]), device, reps=3, warmup=1)
                te = None
                if conn is not None:
                    te = timeit(lambda: ops.connected_log_psi(model, spins, conn.flips, conn.counts), device,
                                reps=1, warmup=1)
                if rnd == 0:
                    s_out, lp = ops.pixelcnn_sample(model, u[:nbatch])
                    cl = ops.connected_log_psi(model, spins, conn.flips, conn.counts) if conn is not None else None
                    results[setting] = (env.get("NAQS_PIXELCNN_MATH", ""), s_out, lp, cl)
            times[setting]["sample"].append(ts)
            if te is not None:
                times[setting]["eloc"].append(te)
            print(f"round {rnd} [{setting or 'default'}]: sample {ts * 1e3:.2f} ms"
                  + (f", E_loc (B={nb}) {te * 1e3:.2f} ms" if te is not None else ""), flush=True)
    base = settings[0]
    for setting in settings:  # against the first setting of the same math
        math, s_out, lp, cl = results[setting]
        ref = next(results[q] for q in settings if results[q][0] == math)
        n = min(len(s_out), len(ref[1]))
        same = int((s_out[:n] != ref[1][:n]).any(dim=1).sum())
        d_lp = float((lp[:n] - ref[2][:n]).abs().max()) if n else 0.0
        d_cl = float((cl - ref[3]).abs().max()) if cl is not None else 0.0
        diffs[setting] = f"{same} / {d_lp:.1e} / {d_cl:.1e}"
    lines = [
        f"A/B {lx}x{lx} L={blocks} C=32 B={batch}, {args.rounds} interleaved rounds, commit {git_commit()}, "
        f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}",
        "",
        f"| setting | sample (ms) | vs first | E_loc B={nb} (ms) | vs first | samples differing / max diff log psi / "
        "connected log psi (vs first of its math) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for setting in settings:
        ms = statistics.median(times[setting]["sample"]) * 1e3
        ms0 = statistics.median(times[base]["sample"]) * 1e3
        row = f"| `{setting or 'default'}` | {ms:.2f} | {ms / ms0:.3f} |"
        if times[setting]["eloc"]:
            me = statistics.median(times[setting]["eloc"]) * 1e3
            me0 = statistics.median(times[base]["eloc"]) * 1e3
            row += f" {me:.1f} | {me / me0:.3f} |"
        else:
            row += " | |"
        lines.append(row + f" {diffs[setting]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
