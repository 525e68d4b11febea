"""Benchmark of the exact-diagonalization matvec and ground-state solve.

    python bench/bench_ed.py --device cpu  [--clusters square-4x4 square-24 ...]
    python bench/bench_ed.py --device cuda --clusters square-24 square-30 --lanczos

Prints a table per cluster: dim, device, kernel variant, median time per matvec
(after warm-up; CUDA events on the GPU), rows/s, the memory-traffic floor, the
ratio to it, the total ground-state time and energy. Writes the table with date,
device and git commit to bench/results/ed-<device>-<date>.md.

    python bench/bench_ed.py --device cuda --clusters --symmetric square-24 kagome-24 square-36

Symmetric rows (``--symmetric``, fully symmetric sector with spin inversion): the
representative enumeration time (a scan of all C(N, N/2) sector words), the matvec time
of the group form the solver uses (torus: bit-operation translations; tables: byte
tables, also timed for comparison with ``--compare-tables`` on small clusters), the
Lanczos solve and its energy. Two floors, the larger one is the ratio's denominator:
memory, 32 B per row (representative, x, y, orbit) + 8 B per connection (one x gather);
integer operations, per connection the |G|/2 permutation images the orbit minimum needs
(spin-inverted images come free as the complement of the maximum) times 3 operations
each (byte permute forming the comparison key, compare with the running minimum, with the
running maximum), over the GPU's 32-bit integer rate (64 lanes/clock/SM at the maximum SM
clock). The integer floor leaves out the point-operation tables, column shifts and the
binary search, so it is a bound, not a model.

Bandwidth-floor model (bytes a gather-form matvec must move through memory, each
item once): per row the basis word (8 B), x[r] (8 B) and y[r] (8 B); per off-diagonal
connection one x gather (8 B). The number of connections is exact:
sum over edges with exch != 0 of #{sector states with s_i != s_j} = 2 C(N-2, k-1) each.
The rank tables (<= 1 MiB) stay in cache and are not counted. Random gathers really
move a 32-byte sector for 8 useful bytes when neighbours in x are not reused, so a
ratio near 1 needs locality; the floor is the ideal, not a promise. Bandwidth is
measured on the spot with a large device-to-device (or host) copy, read + write bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from naqs import ed, ops  # noqa: E402
from naqs.hamiltonian import Heisenberg  # noqa: E402
from naqs.lattice import cluster, square  # noqa: E402


def make(name: str):
    if name == "square-4x4":
        return Heisenberg(square(4, 4, pbc=True), 1.0, 0.0, units="pauli")
    if name == "square-5x4":
        return Heisenberg(square(5, 4, pbc=True), 1.0, 0.5, units="pauli")
    j2 = {"square": 0.0, "triangle": 1.0, "kagome": 1.0}[name.split("-")[0]]
    return Heisenberg(cluster(name), 1.0, j2, units="pauli")


def measure_bandwidth(device: str) -> float:
    """Bytes/s of a large copy (read + write)."""
    n = (1 << 28) if device != "cpu" else (1 << 25)  # 2 GiB / 256 MiB of float64
    a = torch.rand(n, dtype=torch.float64, device=device)
    b = torch.empty_like(a)
    times = []
    for _ in range(5):
        if device != "cpu":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            b.copy_(a)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            b.copy_(a)
            times.append(time.perf_counter() - t0)
    del a, b
    return 2 * 8 * n / statistics.median(times[1:])


def time_matvec(op, x, repeats: int, device: str) -> float:
    for _ in range(2):
        op(x)
    times = []
    for _ in range(repeats):
        if device != "cpu":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            y = op(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            y = op(x)
            times.append(time.perf_counter() - t0)
        del y
    return statistics.median(times)


def floor_bytes(h: Heisenberg, n_up: int) -> tuple[float, int]:
    n = h.n_sites
    dim = math.comb(n, n_up)
    n_exchange = int((h.exchange_couplings != 0).sum())
    connections = n_exchange * 2 * math.comb(n - 2, n_up - 1)
    return 24.0 * dim + 8.0 * connections, connections


def max_sm_clock_hz() -> float:
    """Maximum SM clock of GPU 0 (nvidia-smi), 1.98 GHz when it cannot be read."""
    try:
        out = subprocess.check_output(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                                      text=True, stderr=subprocess.DEVNULL)
        return float(out.split()[0]) * 1e6
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return 1.98e9


def count_connections(reps: torch.Tensor, h: Heisenberg) -> int:
    """Exact number of off-diagonal connections of the representative rows."""
    total = 0
    for (i, j), jx in zip(h.edges.tolist(), h.exchange_couplings.tolist()):
        if jx != 0:
            total += int((((reps >> i) ^ (reps >> j)) & 1).sum())
    return total


def command_line() -> str:
    """The arguments, with the output folder of the GPU script written as $OUT."""
    text = " ".join(sys.argv[1:])
    out = os.environ.get("OUT")
    return text.replace(out.rstrip("/") + "/", "$OUT/") if out else text


def sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def bench_symmetric(args, device: str, dev_name: str, bandwidth: float) -> list[str]:
    """Rows of the symmetric-sector table (see the module docstring)."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count if device != "cpu" else 0
    int_rate = sms * 64 * max_sm_clock_hz() if device != "cpu" else float("nan")
    header = ("| cluster | N | |G| | form | reps | enumeration s | words/s | matvec ms | rows/s | connections | "
              "mem floor ms | int floor ms | ratio | solve s | matvecs | E (pauli) | E (S units) | residual |")
    lines = [header, "|" + "---|" * 18]
    print(f"symmetric sector; int32 rate {int_rate / 1e12:.2f} Tops/s ({sms} SMs x 64 lanes x max SM clock)", flush=True)
    print(header, flush=True)
    # Warm-up: module load and first launches stay out of the numbers.
    warm = make("square-4x4")
    ed.ground_state(warm, sz=0, symmetric=True, device=device, cache=False, progress=False, solver="lanczos")
    for name in args.symmetric:
        h = make(name)
        n = h.n_sites
        perms, flips = ed.symmetry_group(h.lattice, spin_flip=True, hamiltonian=h)
        parity = (-1) ** (n // 2)
        torus = ed.torus_structure(h.lattice, perms, flips)
        forms = [("torus", torus)] if torus is not None else [("tables", None)]
        if torus is not None and name in args.compare_tables:
            forms.append(("tables", None))
        for form, group_form in forms:
            sync(device)
            t0 = time.perf_counter()
            reps, orbit = ed.symmetric_representatives_tensors(n, n // 2, perms, flips, parity, device=device,
                                                               torus=group_form)
            sync(device)
            t_enum = time.perf_counter() - t0
            op = ed.SymmetricOperator(h, reps, orbit, perms, flips, parity, device=device, torus=group_form)
            gen = torch.Generator().manual_seed(0)
            x = (torch.rand(op.dim, generator=gen, dtype=torch.float64) - 0.5).to(device)
            t = time_matvec(op, x, args.repeats, device)
            conn = count_connections(reps, h)
            images = len(perms) // 2
            mem_s = (32.0 * op.dim + 8.0 * conn) / bandwidth
            int_s = 3.0 * conn * images / int_rate if device != "cpu" else float("nan")
            floor_s = max(mem_s, int_s) if device != "cpu" else mem_s
            solve = count = energy = energy_s = residual = ""
            if args.lanczos and form == forms[0][0]:
                del x
                sync(device)
                t0 = time.perf_counter()
                res = ed.ground_state(h, sz=0, symmetric=True, device=device, cache=args.cache, progress=False)
                solve = f"{time.perf_counter() - t0:.2f}" + (" (cache)" if res.from_cache else "")
                count, residual = str(res.matvecs), f"{res.residual:.1e}"
                energy, energy_s = f"{res.energy:.10f}", f"{res.energy / 4:.10f}"
                assert res.dim == op.dim and res.units == "pauli"
            row = (f"| {name} | {n} | {len(perms)} | {form} | {op.dim} | {t_enum:.2f} | "
                   f"{math.comb(n, n // 2) / t_enum:.3g} | {t * 1e3:.2f} | {op.dim / t:.3g} | {conn} | "
                   f"{mem_s * 1e3:.2f} | {int_s * 1e3:.2f} | {t / floor_s:.2f} | {solve} | {count} | {energy} | "
                   f"{energy_s} | {residual} |")
            lines.append(row)
            print(row, flush=True)
            del op, reps, orbit
            if device != "cpu":
                torch.cuda.empty_cache()
    return lines


def verify_symmetric(name: str, device: str, tol: float) -> list[str]:
    """Independent checks of a symmetric-sector result (lines for the results file):
    orbit sizes tile the sector (sum = C(N, N/2) when nothing vanishes), the torus-form
    enumeration equals the byte-table one, the operator is symmetric, the torus matvec
    (specialized and run-time sizes) equals the byte-table matvec, and the Rayleigh
    quotient of the ground state is the same under the byte-table operator."""
    h = make(name)
    n = h.n_sites
    perms, flips = ed.symmetry_group(h.lattice, spin_flip=True, hamiltonian=h)
    parity = (-1) ** (n // 2)
    torus = ed.torus_structure(h.lattice, perms, flips)
    out = [f"### checks: {name} (|G| = {len(perms)}, flip parity {parity:+d}, torus form {torus is not None})", ""]

    def note(text):
        print(text, flush=True)
        out.append(f"- {text}")

    def timed(fn):
        sync(device)
        t0 = time.perf_counter()
        value = fn()
        sync(device)
        return value, time.perf_counter() - t0

    (reps, orbit), t_torus = timed(lambda: ed.symmetric_representatives_tensors(
        n, n // 2, perms, flips, parity, device=device, torus=torus))
    total = int(orbit.sum())
    note(f"representatives {len(reps)}; sum of orbit sizes {total} vs C({n},{n // 2}) = {math.comb(n, n // 2)}"
         f" ({'equal' if total == math.comb(n, n // 2) else 'differ: vanishing orbits' if parity < 0 else 'DIFFER'});"
         f" strictly increasing: {bool((reps[1:] > reps[:-1]).all())}; enumeration {t_torus:.2f} s (torus)")
    (reps_t, orbit_t), t_tab = timed(lambda: ed.symmetric_representatives_tensors(
        n, n // 2, perms, flips, parity, device=device, torus=None))
    note(f"byte-table enumeration ({t_tab:.2f} s) equals the torus one: "
         f"{bool(torch.equal(reps, reps_t) and torch.equal(orbit, orbit_t))}")
    del reps_t, orbit_t
    op = ed.SymmetricOperator(h, reps, orbit, perms, flips, parity, device=device, torus=torus)
    op_tab = ed.SymmetricOperator(h, reps, orbit, perms, flips, parity, device=device, torus=None)
    gen = torch.Generator().manual_seed(11)
    a, b = (torch.randn(op.dim, generator=gen, dtype=torch.float64).to(device) for _ in range(2))
    ha, hb = op(a), op(b)
    asym = abs(float(a @ hb) - float(ha @ b)) / (float(a.norm()) * float(hb.norm()))
    note(f"symmetry |a.Hb - Ha.b| / (|a||Hb|) = {asym:.1e}")
    if torus is not None:
        y_rt, t_rt = timed(lambda: ops._C.ed_torus_matvec(op.reps_t, op.orbit_t, a, op.edges, op.zz, op.exch,
                                                          torus.lx, torus.ly, op.points_t, True, parity, False))
        note(f"run-time-size torus matvec ({t_rt * 1e3:.0f} ms) vs specialized: "
             f"max |diff| / max |y| = {float((y_rt - ha).abs().max() / ha.abs().max()):.1e}")
        del y_rt
    res, t_solve = timed(lambda: ed.ground_state(h, sz=0, symmetric=True, device=device, tol=tol, cache=False,
                                                 progress=False))
    note(f"ground state (tol {tol:g}): E = {res.energy:.12f} (pauli) = {res.energy / 4:.12f} (S units), residual "
         f"{res.residual:.1e}, {res.matvecs} matvecs, {t_solve:.1f} s")
    psi = torch.from_numpy(res.state).to(device)
    h_psi, t_mv = timed(lambda: op_tab(psi))
    e_tab = float(psi @ h_psi)
    r_tab = float((h_psi - e_tab * psi).norm())
    note(f"Rayleigh quotient under the byte-table operator ({t_mv:.1f} s per matvec): E = {e_tab:.12f} (pauli) = "
         f"{e_tab / 4:.12f} (S units), residual {r_tab:.1e}; difference to the torus operator {e_tab - res.energy:.1e}")
    del psi, h_psi
    y_tab = op_tab(a)
    note(f"byte-table matvec vs torus on a random vector: max |diff| / max |y| = "
         f"{float((y_tab - ha).abs().max() / ha.abs().max()):.1e}")
    return out + [""]


def verify_translations(name: str, device: str, tol: float) -> list[str]:
    """A second route to the same ground-state energy: the k = 0 sector of the
    translations alone (with the spin inversion), which holds every point-group
    representation at k = 0, so its lowest state is the fully symmetric ground state or
    lies below it. |G| = N * 2 instead of 8 N * 2 at 6x6, so the sector is ~8x larger
    and the orbit arithmetic differs (no point tables)."""
    h = make(name)
    n = h.n_sites
    lx, ly = h.lattice.shape
    trans = ed.torus_translations(lx, ly)
    perms = np.concatenate([trans, trans])
    flips = np.repeat([False, True], len(trans))
    parity = (-1) ** (n // 2)
    torus = ed.torus_structure(h.lattice, perms, flips)
    out = [f"### translations-only sector: {name} (|G| = {len(perms)}, flip parity {parity:+d}, "
           f"torus form {torus is not None})", ""]
    sync(device)
    t0 = time.perf_counter()
    reps, orbit = ed.symmetric_representatives_tensors(n, n // 2, perms, flips, parity, device=device, torus=torus)
    sync(device)
    t_enum = time.perf_counter() - t0
    total = int(orbit.sum())
    line = (f"representatives {len(reps)}; sum of orbit sizes {total} vs C({n},{n // 2}) = {math.comb(n, n // 2)}; "
            f"enumeration {t_enum:.2f} s")
    print(line, flush=True)
    out.append(f"- {line}")
    op = ed.SymmetricOperator(h, reps, orbit, perms, flips, parity, device=device, torus=torus)
    sync(device)
    t0 = time.perf_counter()
    energy, _, residual, matvecs = ed.lanczos_ground_state(op, op.dim, device=device, tol=tol, progress=False,
                                                           store_vectors=False)
    sync(device)
    line = (f"ground state (tol {tol:g}): E = {energy:.12f} (pauli) = {energy / 4:.12f} (S units), residual "
            f"{residual:.1e}, {matvecs} matvecs, {time.perf_counter() - t0:.1f} s")
    print(line, flush=True)
    return out + [f"- {line}", ""]


def git_commit() -> str:
    if os.environ.get("NAQS_GIT_COMMIT"):
        return os.environ["NAQS_GIT_COMMIT"]
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clusters", nargs="*", default=["square-4x4", "square-5x4", "square-24"],
                        help="plain sector rows (none: skip them)")
    parser.add_argument("--symmetric", nargs="*", default=[], help="symmetric-sector rows for these clusters")
    parser.add_argument("--compare-tables", nargs="*", default=[],
                        help="symmetric clusters whose byte-table form is timed too (next to the torus form)")
    parser.add_argument("--cache", action="store_true", help="symmetric solves read/write the ED cache")
    parser.add_argument("--verify", nargs="*", default=[],
                        help="independent checks of the symmetric sector of these clusters (see verify_symmetric)")
    parser.add_argument("--verify-translations", nargs="*", default=[],
                        help="solve these clusters again in the translations-only k = 0 sector (verify_translations)")
    parser.add_argument("--verify-tol", type=float, default=1e-12, help="Lanczos tol of the --verify solves")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lanczos", action="store_true", help="also time the full ground-state solve")
    parser.add_argument("--variants", nargs="+", type=int, default=[0], help="CUDA rank-table variants (0 shared, 1 global)")
    parser.add_argument("--out", default=None, help="results file (default bench/results/ed-<device>-<date>.md)")
    args = parser.parse_args()
    device = args.device
    if device != "cpu" and not ops.cuda_available():
        raise SystemExit(f"--device {device} needs the CUDA build of naqs._C: build_info={ops.build_info()}")
    dev_name = torch.cuda.get_device_name(0) if device != "cpu" else f"CPU x{torch.get_num_threads()} threads"
    bandwidth = measure_bandwidth(device)
    print(f"device: {dev_name}; measured copy bandwidth {bandwidth / 1e9:.0f} GB/s", flush=True)
    sym_lines = bench_symmetric(args, device, dev_name, bandwidth) if args.symmetric else []
    verify_lines = [line for name in args.verify for line in verify_symmetric(name, device, args.verify_tol)]
    verify_lines += [line for name in args.verify_translations
                     for line in verify_translations(name, device, args.verify_tol)]
    header = ("| cluster | N | dim | device | variant | matvec ms | rows/s | floor GB | floor ms | ratio | "
              "solve s | matvecs | energy (pauli) | residual |")
    lines = [header, "|" + "---|" * 14]
    if args.clusters:
        print(header, flush=True)
    for name in args.clusters:
        h = make(name)
        n = h.n_sites
        n_up = n // 2
        op = ed.SectorOperator(h, n_up, device=device)
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(op.dim, generator=gen, dtype=torch.float64) - 0.5).to(device)
        fbytes, _ = floor_bytes(h, n_up)
        floor_s = fbytes / bandwidth
        variants = args.variants if device != "cpu" else [0]
        for variant in variants:
            op.variant = variant
            t = time_matvec(op, x, args.repeats, device)
            solve, energy, residual, count = "", "", "", ""
            if args.lanczos and variant == variants[0]:
                del x
                if device != "cpu":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                res = ed.ground_state(h, sz=0, device=device, cache=False, progress=False)
                solve = f"{time.perf_counter() - t0:.2f}"
                energy, residual, count = f"{res.energy:.8f}", f"{res.residual:.1e}", str(res.matvecs)
                x = (torch.rand(op.dim, generator=gen, dtype=torch.float64) - 0.5).to(device)
            row = (f"| {name} | {n} | {op.dim} | {device} | {variant} | {t * 1e3:.2f} | {op.dim / t:.3g} | "
                   f"{fbytes / 1e9:.2f} | {floor_s * 1e3:.2f} | {t / floor_s:.2f} | {solve} | {count} | {energy} | {residual} |")
            lines.append(row)
            print(row, flush=True)
        del op, x
        if device != "cpu":
            torch.cuda.empty_cache()
    date = dt.date.today().isoformat()
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"ed-{device.split(':')[0]}-{date}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# ED matvec benchmark\n\n- date: {date}\n- device: {dev_name}\n- commit: {git_commit()}\n"
            f"- torch: {torch.__version__}; naqs._C: {ops.build_info()}\n"
            f"- measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s (read + write)\n"
            f"- command: `python bench/bench_ed.py {command_line()}`\n"
            + ("- floor model: 24 B per row (basis, x[r], y[r]) + 8 B per off-diagonal connection (x gather)\n\n"
               + "\n".join(lines) + "\n" if args.clusters else "")
            + ("\n## Symmetric sector (k=0, point group trivial, spin inversion (-1)^(N/2))\n\n"
               "- floors: memory 32 B/row + 8 B/connection; integer 3 ops x |G|/2 images per connection at "
               "64 int32 lanes/clock/SM; ratio = matvec / max(floors)\n\n"
               + "\n".join(sym_lines) + "\n" if sym_lines else "")
            + ("\n## Checks of the symmetric sector\n\n" + "\n".join(verify_lines) + "\n" if verify_lines else ""))
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
