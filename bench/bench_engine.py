"""Engine benchmark: the reference (naive PyTorch) paths and the row-cached kernels side
by side in one process, plus a whole VMC step.

Per configuration: median time (CUDA events after warm-up on the GPU), samples/s,
ratio to one batched forward pass (``model.raw_outputs``) of the same network and
batch, achieved TFLOP/s (FLOPs counted analytically) and its fraction of the fp32 /
TF32 matmul ceilings measured in the same run.

    python bench/bench_engine.py --device cuda --out bench/results/engine-<device>-<date>.md
    python bench/bench_engine.py --device cpu  --out bench/results/engine-cpu-<date>.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

from naqs import ops
from naqs.hamiltonian import TransverseFieldIsing
from naqs.lattice import square
from naqs.local_energy import connected_log_psi_reference, local_energy
from naqs.models.pixelcnn import PixelCNN
from naqs.gradient_step import GradientStep
from naqs.sampling import exact_sample
from naqs.vmc import vmc_loss


# ---------------------------------------------------------------------- timing
def timeit(fn, device, reps=3, warmup=1):
    """Median seconds of ``fn()`` (CUDA events on the GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_ceiling(device, tf32: bool) -> float:
    """TFLOP/s of a large float32 matmul (TF32 tensor cores or plain fp32)."""
    n = 8192 if device.type == "cuda" else 2048
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        t = timeit(lambda: a @ b, device, reps=5, warmup=2)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * n**3 / t / 1e12


# ---------------------------------------------------------------------- FLOP counts
def position_flops(blocks, c) -> tuple[list[int], list[int]]:
    """FLOPs of one position of each block: (horizontal branch, vertical branch), both
    3x3 windows; block 0 reads the spins (one channel) instead of the previous block."""
    cprev = [1 if layer == 0 else c for layer in range(blocks)]
    return [2 * 9 * c * (cp + c) for cp in cprev], [2 * 9 * c * cp for cp in cprev]


def forward_flops(lx, ly, blocks, c) -> float:
    """One forward pass of one sample: every site, every block, both branches, output."""
    h_pos, v_pos = position_flops(blocks, c)
    return lx * ly * (sum(h_pos) + sum(v_pos) + 2 * 4 * c)


def connected_flops(lx, ly, blocks, c) -> float:
    """Ising local energy by the kernel, one sample: its own forward plus, for each
    single flip at site k, the activations of the flip's light cone (what the kernel
    computes: ``ops.pixelcnn_cone``; the rest is read from the sample's storage) and the
    outputs of sites k..N-1. With NAQS_PIXELCNN_CONE=0 the kernel walks more (the
    horizontal branch at every site from k, the vertical branch of every row from
    row(k)); this count stays the cone's, so it is the useful work in both cases."""
    n = lx * ly
    h_pos, v_pos = position_flops(blocks, c)
    total = forward_flops(lx, ly, blocks, c)
    for k in range(n):
        h, v = ops.pixelcnn_cone(lx, ly, blocks, [k])
        h_count, v_count = h.sum((1, 2)).tolist(), v.sum((1, 2)).tolist()
        total += sum(a * b for a, b in zip(h_count, h_pos)) + sum(a * b for a, b in zip(v_count, v_pos))
        total += (n - k) * 2 * 4 * c
    return total


def full_walk_flops(lx, ly, blocks, c) -> float:
    """connected_flops without the light cone: the horizontal branch at sites k..N-1
    and the vertical branch of rows row(k)..Ly-2 for every flip (the work of the
    NAQS_PIXELCNN_CONE=0 walk; used for the floors in docs/engine.md)."""
    n = lx * ly
    h_pos, v_pos = position_flops(blocks, c)
    h_site, v_site = sum(h_pos), sum(v_pos)
    total = forward_flops(lx, ly, blocks, c)
    for k in range(n):
        total += (n - k) * (h_site + 2 * 4 * c) + max(0, ly - 1 - k // lx) * lx * v_site
    return total


# ---------------------------------------------------------------------- benches
@contextlib.contextmanager
def kernel_switches(env: dict[str, str]):
    """Context: the engine's switches (environment variables, read at every call) set to
    env, and restored on the way out."""
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, val in old.items():
            os.environ.pop(key) if val is None else os.environ.__setitem__(key, val)


def _legacy_kernel():
    """Context: the first CUDA kernel (NAQS_PIXELCNN_CUDA_KERNEL=legacy)."""
    return kernel_switches({"NAQS_PIXELCNN_CUDA_KERNEL": "legacy"})


def bench_config(lx, blocks, c, batch, device, ceilings, run_reference, le_batch, legacy=False):
    torch.manual_seed(0)
    model = PixelCNN(lx, lx, blocks, c).to(device)
    n = lx * lx
    u = torch.rand(batch, n, dtype=torch.float64, device=device)
    spins_in = torch.where(u < 0.5, 1.0, -1.0).float()
    with torch.no_grad():
        t_fwd = timeit(lambda: model.raw_outputs(spins_in), device, reps=5, warmup=2)
        t_fwd_nchw = None
        if device.type == "cuda":  # the NCHW forward the ratios were taken against before 4adce5c
            model.channels_last = False
            t_fwd_nchw = timeit(lambda: model.raw_outputs(spins_in), device, reps=5, warmup=2)
            model.channels_last = None
        t_kernel = timeit(lambda: ops.pixelcnn_sample(model, u), device, reps=3, warmup=1)
        if run_reference:
            t_ref = timeit(lambda: model.sample_reference(batch, uniforms=u), device, reps=1, warmup=0)
        else:
            t_ref = None
        t_legacy = None
        if legacy:
            with _legacy_kernel():
                t_legacy = timeit(lambda: ops.pixelcnn_sample(model, u), device, reps=3, warmup=1)
    f_fwd = forward_flops(lx, lx, blocks, c) * batch
    rows = [
        dict(what="forward (raw_outputs)", t=t_fwd, samples=batch, flops=f_fwd, fwd=t_fwd),
        dict(what="sample: kernel", t=t_kernel, samples=batch, flops=f_fwd, fwd=t_fwd),
    ]
    if t_fwd_nchw is not None:
        rows.insert(1, dict(what="forward, NCHW activations", t=t_fwd_nchw, samples=batch, flops=f_fwd, fwd=t_fwd))
    if t_legacy is not None:
        rows.append(dict(what="sample: legacy kernel", t=t_legacy, samples=batch, flops=f_fwd, fwd=t_fwd))
    if t_ref is not None:
        rows.append(dict(what="sample: reference", t=t_ref, samples=batch, flops=f_fwd * n, fwd=t_fwd))
    # Ising local energy (the connected log psi of all N single flips) on le_batch samples
    nb = min(batch, le_batch)
    ham = TransverseFieldIsing(square(lx, lx), gamma=1.0)
    spins, log_psi = ops.pixelcnn_sample(model, u[:nb])
    conn = ham.connections(spins)
    small = ham.connections(spins[:2])
    with torch.no_grad():
        ops.connected_log_psi(model, spins[:2], small.flips, small.counts)  # warm-up
        t_le = timeit(lambda: ops.connected_log_psi(model, spins, conn.flips, conn.counts), device, reps=1, warmup=0)
        t_le_legacy = None
        if legacy:
            with _legacy_kernel():
                t_le_legacy = timeit(lambda: ops.connected_log_psi(model, spins, conn.flips, conn.counts), device,
                                     reps=1, warmup=0)
        t_le_ref = None
        if run_reference:
            # (16384 rows a forward pass: all 112896 of 21x21 at once need more than 80 GB)
            t_le_ref = timeit(
                lambda: connected_log_psi_reference(model, spins, conn.flips, conn.counts, max_rows=16384), device,
                reps=1, warmup=0,
            )
    # the forward pass of the same batch size for the ratio
    with torch.no_grad():
        t_fwd_nb = timeit(lambda: model.raw_outputs(spins_in[:nb]), device, reps=5, warmup=1)
    f_conn = connected_flops(lx, lx, blocks, c) * nb
    rows.append(dict(what=f"Ising E_loc: kernel (B={nb})", t=t_le, samples=nb, flops=f_conn, fwd=t_fwd_nb))
    if t_le_legacy is not None:
        rows.append(dict(what=f"Ising E_loc: legacy kernel (B={nb})", t=t_le_legacy, samples=nb, flops=f_conn,
                         fwd=t_fwd_nb))
    if t_le_ref is not None:
        rows.append(dict(what=f"Ising E_loc: reference (B={nb})", t=t_le_ref, samples=nb,
                         flops=f_fwd / batch * nb * (n + 0), fwd=t_fwd_nb))
    out = []
    for r in rows:
        tflops = r["flops"] / r["t"] / 1e12
        out.append(
            dict(
                config=f"{lx}x{lx} L={blocks} C={c} B={batch}",
                what=r["what"],
                ms=r["t"] * 1e3,
                sps=r["samples"] / r["t"],
                fwd_ratio=r["t"] / r["fwd"],
                tflops=tflops,
                frac_fp32=tflops / ceilings["fp32"],
                frac_tf32=tflops / ceilings["tf32"],
            )
        )
    return out


def vmc_step(model, ham, batch, use_kernel, opt, grad_step, phases=None):
    """One VMC step; ``phases`` (a dict) collects the CUDA events between its parts."""
    mark = (lambda key: phases.setdefault(key, _event())) if phases is not None else (lambda key: None)
    mark("start")
    # (as naqs.vmc does: the kernel path's sampling walk keeps its activations for the
    # local energy)
    spins, log_psi, cache = exact_sample(model, batch, use_kernel=use_kernel, return_cache=True)
    mark("sampled")
    e_loc = local_energy(model, ham, spins, log_psi=log_psi if use_kernel else None,
                         memory_budget=1 << 40 if use_kernel else 1 << 30, use_kernel=use_kernel, cache=cache)
    del cache  # (as the driver does: the activations are not kept through the backward)
    mark("energies")
    # the gradient as the VMC driver takes it (naqs.vmc, naqs.gradient_step): PyTorch's
    # forward and backward of the batch and the optimizer step, replayed from a CUDA
    # graph on the kernel path, eager on the naive one
    grad_step(opt, spins, e_loc)
    mark("end")
    return e_loc.real.mean().item()


def _event():
    ev = torch.cuda.Event(enable_timing=True)
    ev.record()
    return ev


def bench_vmc(lx, blocks, batch, device, naive=True, maths=()):
    """Seconds of one VMC step per path: "kernel" (default arithmetic), "kernel-<math>"
    for each tensor-core mode in ``maths``, and "naive" (the reference path; PyTorch
    convolutions, with cuDNN's TF32 as torch sets it). Every path: the median of 3 steps
    after a warm-up (so cuDNN's autotuning of the reference's convolution shapes is not
    counted; single naive steps varied by 1.3x between runs), with the split sample /
    local energy / gradient+update of the median step on CUDA."""
    torch.manual_seed(0)
    model = PixelCNN(lx, lx, blocks, 32).to(device)
    ham = TransverseFieldIsing(square(lx, lx), gamma=1.0)
    res = {}
    runs = [("kernel", True, None)] + [(f"kernel-{m}", True, m) for m in maths]
    if naive:
        runs.append(("naive", False, None))
    for name, use_kernel, math_mode in runs:
        # each path its own optimizer and gradient phase (the kernel path's: a CUDA graph
        # as in the driver, captured on the second step, so after the warm-up)
        graph = use_kernel and device.type == "cuda"
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=graph)
        grad_step = GradientStep(model, vmc_loss, use_graph=graph)
        with ops.use_engine_math(math_mode) if math_mode else contextlib.nullcontext():
            for _ in range(2):  # warm-up (and the graph's capture)
                vmc_step(model, ham, batch, use_kernel, opt, grad_step)
            steps = []
            for _ in range(3):
                ph = {} if device.type == "cuda" else None
                t0 = time.perf_counter()
                vmc_step(model, ham, batch, use_kernel, opt, grad_step, ph)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    split = (ph["start"].elapsed_time(ph["sampled"]) / 1e3,
                             ph["sampled"].elapsed_time(ph["energies"]) / 1e3,
                             ph["energies"].elapsed_time(ph["end"]) / 1e3)
                    steps.append((ph["start"].elapsed_time(ph["end"]) / 1e3, split))
                else:
                    steps.append((time.perf_counter() - t0, None))
            steps.sort(key=lambda x: x[0])
            res[name] = steps[len(steps) // 2]
    return res


def precision_table(device, math_modes, n_samples=200):
    """Local energies of float32 networks through the kernels in each math mode
    (NAQS_PIXELCNN_MATH) against the float64 evaluation of the same network (float64
    kernels): max and norm-wise relative error, and the bias of the mean energy. A mode
    may carry other switches after '+': "tf32+NAQS_PIXELCNN_WGMMA=1+NAQS_PIXELCNN_WG_ROUND=3"."""
    lines = ["| network | math | max rel | norm rel | energy bias (rel) | time ms |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for lx, blocks, scale in [(6, 10, None), (6, 10, 0.3), (12, 10, None)]:
        torch.manual_seed(0)
        kw = {} if scale is None else {"output_scale": scale}
        model = PixelCNN(lx, lx, blocks, 32, **kw).to(device)
        model64 = PixelCNN(lx, lx, blocks, 32, **kw).to(device=device, dtype=torch.float64)
        model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
        ham = TransverseFieldIsing(square(lx, lx), gamma=1.0)
        u = torch.rand(n_samples, lx * lx, dtype=torch.float64, device=device)
        with torch.no_grad():
            spins, _ = ops.pixelcnn_sample(model64, u)
            e64 = local_energy(model64, ham, spins)
            for mode in math_modes:
                math, *extra = mode.split("+")
                env = {"NAQS_PIXELCNN_MATH": math, **dict(kv.split("=", 1) for kv in extra)}
                with kernel_switches(env):
                    t = timeit(lambda: local_energy(model, ham, spins), device, reps=1, warmup=1)
                    e32 = local_energy(model, ham, spins)
                rel = ((e32 - e64).abs() / e64.abs().clamp_min(1e-12)).max().item()
                nrel = ((e32 - e64).norm() / e64.norm()).item()
                bias = abs((e32.mean() - e64.mean()).real.item()) / abs(e64.mean().real.item())
                name = f"{lx}x{lx} L={blocks} C=32 scale {scale or 'default'}"
                lines.append(f"| {name} | {mode} | {rel:.1e} | {nrel:.1e} | {bias:.1e} | {t*1e3:.1f} |")
                print(lines[-1], flush=True)
    return lines


def git_commit() -> str:
    import os

    if os.environ.get("NAQS_GIT_COMMIT"):
        return os.environ["NAQS_GIT_COMMIT"] + " + working tree"
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip() + (
            "+dirty" if subprocess.check_output(["git", "status", "--porcelain"], text=True).strip() else ""
        )
    except Exception:
        return "unknown"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="markdown results file")
    p.add_argument("--quick", action="store_true", help="fewer configurations")
    p.add_argument("--le-batch", type=int, default=256, help="samples for the local-energy timing")
    p.add_argument("--legacy", action="store_true",
                   help="also time the first CUDA kernel (NAQS_PIXELCNN_CUDA_KERNEL=legacy) side by side")
    p.add_argument("--configs", default=None,
                   help="comma-separated LxBLOCKSxBATCH[r] (r: also the reference), e.g. 21x20x4096,12x10x1000r")
    p.add_argument("--ab", default=None, help="';'-separated VAR=VALUE kernel switches timed on the first config")
    p.add_argument("--precision", default=None,
                   help="comma-separated NAQS_PIXELCNN_MATH modes for the local-energy precision table "
                        "(e.g. ffma,3xtf32,tf32; other switches after '+': tf32+NAQS_PIXELCNN_WGMMA=1)")
    p.add_argument("--vmc-math", default=None,
                   help="comma-separated tensor-core modes (3xtf32, tf32) whose VMC step is timed too")
    p.add_argument("--profile", action="store_true", help="first, one profiled walk per config (CUDA)")
    p.add_argument("--vmc", default=None, help="comma-separated LxBLOCKSxBATCH[n] VMC steps (n: also naive); "
                   "'none' for no VMC step")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        torch.backends.cudnn.benchmark = True
    else:
        name = f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    ceilings = {"fp32": matmul_ceiling(device, False), "tf32": matmul_ceiling(device, True)}
    print(f"device {name}; matmul ceilings fp32 {ceilings['fp32']:.1f} TFLOP/s, tf32 {ceilings['tf32']:.1f} TFLOP/s",
          flush=True)
    if device.type == "cuda":
        configs = [(10, 10, 1000, True), (10, 10, 4096, False), (12, 10, 1000, True), (12, 10, 4096, False),
                   (12, 20, 4096, False), (21, 10, 4096, False), (21, 20, 1000, True), (21, 20, 4096, False)]
        vmc_cfgs = [(12, 10, 1000), (21, 20, 1000)]
        if args.quick:
            configs = [(12, 10, 1000, True)]
            vmc_cfgs = [(12, 10, 1000)]
    else:
        configs = [(4, 10, 256, True), (6, 10, 256, True)]
        vmc_cfgs = [(6, 10, 256)]
    def parse(spec, flag):
        out = []
        for item in spec.split(","):
            item = item.strip()
            if not item or item == "none":
                continue
            extra = item.endswith(flag)
            lx, blocks, batch = (int(v) for v in item.rstrip(flag).split("x"))
            out.append((lx, blocks, batch, extra))
        return out

    if args.configs:
        configs = parse(args.configs, "r")
    vmc_naive = {cfg: True for cfg in vmc_cfgs}
    if args.vmc:
        vmc_cfgs, vmc_naive = [], {}
        for lx, blocks, batch, naive in parse(args.vmc, "n"):
            vmc_cfgs.append((lx, blocks, batch))
            vmc_naive[(lx, blocks, batch)] = naive
    if args.profile:
        # one walk of each kind per configuration with the kernel's clock64 counters
        # (NAQS_PIXELCNN_PROFILE=1: a line per walk on stderr)
        os.environ["NAQS_PIXELCNN_PROFILE"] = "1"
        math_env = os.environ.get("NAQS_PIXELCNN_MATH")
        modes = [m for m in (args.precision or "").split(",") if m] or [os.environ.get("NAQS_PIXELCNN_MATH", "")]
        for (lx, blocks, batch, _), mode in [(c, m) for c in configs for m in modes]:
            if mode:
                os.environ["NAQS_PIXELCNN_MATH"] = mode
            torch.manual_seed(0)
            model = PixelCNN(lx, lx, blocks, 32).to(device)
            u = torch.rand(batch, lx * lx, dtype=torch.float64, device=device)
            print(f"profile {lx}x{lx} L={blocks} B={batch} math={mode or 'default'}: sample, then E_loc of "
                  f"{min(batch, args.le_batch)}",
                  file=sys.stderr, flush=True)
            spins, _ = ops.pixelcnn_sample(model, u)
            ham = TransverseFieldIsing(square(lx, lx), gamma=1.0)
            nb = min(batch, args.le_batch)
            conn = ham.connections(spins[:nb])
            with torch.no_grad():
                ops.connected_log_psi(model, spins[:nb], conn.flips, conn.counts)
            torch.cuda.synchronize() if device.type == "cuda" else None
        os.environ.pop("NAQS_PIXELCNN_PROFILE")
        os.environ.pop("NAQS_PIXELCNN_MATH", None)
        if math_env is not None:
            os.environ["NAQS_PIXELCNN_MATH"] = math_env
    ab_lines = []
    if args.ab and configs:
        # A/B of kernel switches (environment variables read per call) on the first config
        lx, blocks, batch, _ = configs[0]
        torch.manual_seed(0)
        model = PixelCNN(lx, lx, blocks, 32).to(device)
        u = torch.rand(batch, lx * lx, dtype=torch.float64, device=device)
        nb = min(batch, args.le_batch)
        spins, _ = ops.pixelcnn_sample(model, u[:nb])
        conn = TransverseFieldIsing(square(lx, lx), gamma=1.0).connections(spins)
        for setting in [""] + [v for v in args.ab.split(";") if v]:
            env = dict(kv.partition("=")[::2] for kv in setting.split(",") if kv)
            with kernel_switches(env), torch.no_grad():
                ts = timeit(lambda: ops.pixelcnn_sample(model, u), device, reps=3, warmup=1)
                te = timeit(lambda: ops.connected_log_psi(model, spins, conn.flips, conn.counts), device,
                            reps=3, warmup=1)
            line = (f"A/B {lx}x{lx} L={blocks} B={batch} [{setting or 'default'}]: sample {ts*1e3:.2f} ms, "
                    f"Ising E_loc (B={nb}) {te*1e3:.2f} ms")
            print(line, flush=True)
            ab_lines.append("- " + line)
    rows, vmc_rows = [], []

    def report(final: bool) -> str:
        """The markdown table of what has run so far (rewritten after every configuration,
        so a run cut by a time limit still leaves its finished rows)."""
        date = datetime.date.today().isoformat()
        lines = [
            f"# Engine benchmark: {name}",
            "",
            f"- date {date}, git commit {git_commit()}, torch {torch.__version__}, build {ops.build_info()}",
            f"- command: `python {' '.join(sys.argv)}`",
            f"- matmul ceilings (float32 {8192 if device.type == 'cuda' else 1024}^3): fp32 {ceilings['fp32']:.1f} "
            f"TFLOP/s, TF32 {ceilings['tf32']:.1f} TFLOP/s",
            "- float32 networks, 32 channels; forward = one batched `model.raw_outputs` (channels-last activations on "
            "CUDA; the NCHW row is the layout used before 4adce5c); 'fwd' = time / forward time "
            "of the same batch; FLOPs counted analytically (bench_engine.forward_flops / connected_flops); the "
            "reference sampler's FLOPs are N forward passes, the reference local energy's N forward passes per sample",
            "",
            "| config | what | ms | samples/s | x forward | TFLOP/s | % fp32 | % TF32 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            lines.append(f"| {r['config']} | {r['what']} | {r['ms']:.2f} | {r['sps']:.0f} | {r['fwd_ratio']:.2f} | "
                         f"{r['tflops']:.2f} | {100*r['frac_fp32']:.1f} | {100*r['frac_tf32']:.1f} |")
        lines += ["", "VMC step (exact sample + Ising local energy + gradient + Adam update); the naive path "
                  f"runs PyTorch convolutions with cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'} "
                  "(torch's default) and its gradient phase eagerly; the kernel paths replay the gradient phase "
                  "from a CUDA graph as the VMC driver does (naqs.gradient_step); kernel-<math>: the kernels' "
                  "tensor-core mode (ops.use_engine_math):", "",
                  "| config | path | step ms | sample ms | E_loc ms | gradient + update ms | speed-up vs naive |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for cfg, res in vmc_rows:
            naive = res.get("naive")
            for path, (total, split) in res.items():
                parts = " | ".join(f"{t*1e3:.1f}" for t in split) if split else "- | - | -"
                speed = f"{naive[0] / total:.1f}x" if naive else "-"
                lines.append(f"| {cfg} | {path} | {total*1e3:.1f} | {parts} | {speed} |")
        if ab_lines:
            lines += ["", "Kernel switches (A/B, first configuration):", ""] + ab_lines
        if args.precision and final:  # measured once, at the end (it runs the networks)
            lines += ["", "Local-energy precision of float32 networks per math mode (NAQS_PIXELCNN_MATH) vs the "
                      "float64 network, Ising, 200 samples:", ""]
            lines += precision_table(device, [m for m in args.precision.split(",") if m])
        text = "\n".join(lines) + "\n"
        if not final:
            text += "\n(partial: the run was still going when this was written)\n"
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        return text

    for lx, blocks, batch, ref in configs:
        r = bench_config(lx, blocks, 32, batch, device, ceilings, ref, args.le_batch, legacy=args.legacy)
        for row in r:
            print(f"{row['config']:>24} | {row['what']:<32} | {row['ms']:10.2f} ms | {row['sps']:10.0f} /s | "
                  f"{row['fwd_ratio']:8.2f} fwd | {row['tflops']:6.2f} TF/s | {100*row['frac_tf32']:5.1f}% tf32",
                  flush=True)
        rows += r
        report(final=False)
    vmc_maths = [m for m in (args.vmc_math or "").split(",") if m]
    for lx, blocks, batch in vmc_cfgs:
        res = bench_vmc(lx, blocks, batch, device, naive=vmc_naive[(lx, blocks, batch)], maths=vmc_maths)
        vmc_rows.append((f"{lx}x{lx} L={blocks} C=32 B={batch}", res))
        naive = res.get("naive", (float("nan"), None))[0]
        print(f"VMC step {lx}x{lx} L={blocks} B={batch}: "
              + ", ".join(f"{k} {t*1e3:.1f} ms ({naive / t:.1f}x)" for k, (t, _) in res.items()), flush=True)
        report(final=False)

    print(report(final=True))


if __name__ == "__main__":
    main()
