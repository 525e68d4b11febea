"""Where a profiled walk spends its time, per source line and per function of the
walker kernel (walk_kernel.cuh).

Joins Nsight Compute's per-instruction table (``ncu --page source --print-source sass
--csv``: stall samples and executed instructions per SASS address) with the line table of
the same kernel's SASS (bench/walker_sass.sh: ``nvdisasm -g`` of the build's cubins, which
bench/ncu_walker.sh runs), then sums by walk_kernel.cuh line and by the function that line lies
in (the last ``name(`` of a ``__device__`` / ``__global__`` definition above it).

    python bench/ncu_lines.py ncu-sass.csv.gz [walker.sass] [csrc/pixelcnn/cuda/walk_kernel.cuh]
"""

from __future__ import annotations

import bisect
import collections
import csv
import gzip
import io
import re
import sys

KERNEL = "walk_kernelIfLi256ELi32ELi2E"  # when the table names no kernel: the TF32 local energies' instance


def mangled(kernel_name: str) -> str:
    """The mangled template prefix of a walk_kernel instance from the demangled name Nsight
    Compute prints: walk_kernel<float, (int)512, (int)32, (int)0, (bool)1, (bool)0> ->
    walk_kernelIfLi512ELi32ELi0ELb1ELb0E (the instance's line table in the SASS)."""
    m = re.search(r"walk_kernel<([^>]*)>", kernel_name)
    if not m:
        return KERNEL
    out = "walk_kernelI"
    for arg in (a.strip() for a in m.group(1).split(",")):
        if arg in ("float", "double"):
            out += arg[0]
        elif arg.startswith("(int)"):
            out += f"Li{arg[5:]}E"
        elif arg.startswith("(bool)"):
            out += f"Lb{arg[6:]}E"
    return out


def read_csv(path: str) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, mangled instance) of an ncu source-page table."""
    raw = gzip.open(path, "rt") if path.endswith(".gz") else open(path)
    text = raw.read()
    rows = list(csv.reader(io.StringIO(text)))
    start = next(i for i, r in enumerate(rows) if any(c.strip() == "Address" for c in r))
    names = [r[1] for r in rows[:start] if len(r) > 1 and r[0].strip() == "Kernel Name"]
    return rows[start], rows[start + 1 :], mangled(names[0]) if names else KERNEL


def column(header: list[str], *words: str) -> int | None:
    for i, name in enumerate(header):
        if all(w.lower() in name.lower() for w in words):
            return i
    return None


def line_table(sass_path: str, kernel: str = KERNEL) -> dict[int, int]:
    """SASS offset -> walk_kernel.cuh line, for the kernel instance `kernel` (mangled prefix)."""
    table, on, line = {}, False, 0
    for text in open(sass_path):
        if not text[:1].isspace() and text.rstrip().endswith(":") and "walk_kernel" in text:
            on = kernel in text
        if not on:
            continue
        m = re.search(r'//## File ".*walk_kernel\.cuh", line (\d+)', text)
        if m:
            line = int(m.group(1))
            continue
        m = re.search(r"/\*([0-9a-f]{4,})\*/", text)
        if m:
            table[int(m.group(1), 16)] = line
    return table


def functions(source: str) -> list[tuple[int, str]]:
    out = []
    for i, text in enumerate(open(source), start=1):
        if "__device__" in text or "__global__" in text:
            names = [n for n in re.findall(r"\b(\w+)\s*\(", text) if n != "__launch_bounds__"]
            if names and not text.strip().startswith("//"):
                out.append((i, names[0]))
    return out


def function_of(source: str):
    """line -> the walk_kernel.cuh function that line lies in ('?' above the first one)."""
    funcs = functions(source)
    starts = [start for start, _ in funcs]

    def func_of(line: int) -> str:
        i = bisect.bisect_right(starts, line) - 1
        return funcs[i][1] if i >= 0 else "?"

    return func_of


def main(argv: list[str]) -> None:
    header, rows, kernel = read_csv(argv[0])
    c_addr = column(header, "Address")
    c_all = column(header, "Stall Sampling", "All")
    c_exe = column(header, "Instructions Executed")
    c_src = column(header, "Source")
    print("columns:", [header[c] for c in (c_addr, c_all, c_exe, c_src) if c is not None], "instance:", kernel)
    # stall reasons (all samples, issued or not) per instruction
    c_why = {name[6:]: i for i, name in enumerate(header) if name.startswith("stall_") and "Not Issued" not in name}
    addrs = [int(r[c_addr], 16) for r in rows if r and r[c_addr].startswith("0x")]
    base = min(addrs)
    lines = line_table(argv[1], kernel) if len(argv) > 1 else {}
    func_of = function_of(argv[2] if len(argv) > 2 else "csrc/pixelcnn/cuda/walk_kernel.cuh")

    def num(text: str) -> float:
        try:
            return float(text.replace(",", ""))
        except ValueError:
            return 0.0

    by_line, by_func, by_op = collections.Counter(), collections.Counter(), collections.Counter()
    exe_line, exe_func = collections.Counter(), collections.Counter()
    why_func: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    why_all = collections.Counter()
    total = total_exe = 0.0
    for r in rows:
        if not r or not r[c_addr].startswith("0x"):
            continue
        samples = num(r[c_all]) if c_all is not None else 0.0
        exe = num(r[c_exe]) if c_exe is not None else 0.0
        line = lines.get(int(r[c_addr], 16) - base, 0)
        by_line[line] += samples
        by_func[func_of(line) if line else "?"] += samples
        exe_line[line] += exe
        exe_func[func_of(line) if line else "?"] += exe
        for why, c in c_why.items():
            n = num(r[c])
            why_all[why] += n
            why_func[func_of(line) if line else "?"][why] += n
        if c_src is not None:
            by_op[r[c_src].split()[0].split(".")[0].lstrip("@!P0123456789 ") if r[c_src].split() else "?"] += samples
        total += samples
        total_exe += exe
    total = total or 1.0
    total_exe = total_exe or 1.0
    print(f"stall samples {total:.0f}, warp instructions executed {total_exe:.3e}, lines mapped {len(lines)}")
    print("\n# per function: % of stall samples, % of warp instructions")
    for f, s in by_func.most_common(25):
        print(f"{100 * s / total:6.2f}% {100 * exe_func[f] / total_exe:6.2f}%  {f}")
    if why_all:
        print("\n# stall reasons: % of stall samples (and the top functions' own top three)")
        print("  " + ", ".join(f"{w} {100 * n / total:.1f}%" for w, n in why_all.most_common(8)))
        for f, _ in by_func.most_common(6):
            print(f"  {f}: " + ", ".join(f"{w} {100 * n / total:.1f}%" for w, n in why_func[f].most_common(3)))
    print("\n# per opcode (stall samples)")
    for op, s in by_op.most_common(15):
        print(f"{100 * s / total:6.2f}%  {op}")
    print("\n# per walk_kernel.cuh line: % of stall samples, % of warp instructions, function")
    for line, s in by_line.most_common(40):
        print(f"{100 * s / total:6.2f}% {100 * exe_line[line] / total_exe:6.2f}%  line {line:5d}  {func_of(line)}")


if __name__ == "__main__":
    main(sys.argv[1:])
