"""Where ptxas spilled, per walker kernel instance and per function.

`-Xptxas -v` says how many bytes a kernel spills, not where. This reads the SASS of the
build's kernel instances (bench/walker_sass.sh: ``nvdisasm -g`` of the cubins that
``cuobjdump -xelf all`` extracts from the walk_*.cu objects; the build passes -lineinfo)
and counts the local-memory spill instructions (STL / LDL) of every walk_kernel instance
by the function of walk_kernel.cuh whose line they carry (inlined code carries the line of the inlined function). A spill in the
tile setup or between passes costs a few instructions per tile or pass; one inside the
products or the gathers would cost them per chunk and k-step, so the report names the
hot functions separately.

    python bench/spill_lines.py walker.sass [csrc/pixelcnn/cuda/walk_kernel.cuh]
    python bench/spill_lines.py --ptxas build.log   (the -Xptxas -v lines, one per instance)
"""

from __future__ import annotations

import collections
import re
import sys

from ncu_lines import function_of

# The functions run per chunk or per k-step (the rest run per tile, pass or row).
HOT = ("product", "product_mma", "product_tf32_regs", "mma_tf32", "rna_bits", "to_tf32", "load_b_regs",
       "gather", "gather_seg", "cp_async", "bias_relu", "bias_relu4", "store_mma_partials", "load4_sh",
       "store4_sh", "div", "gather_wg", "round_wg", "finish_wg", "wg_multiply", "wg_keep", "wg_copy",
       "wg_chunk_mmas")


def instance(symbol: str) -> str:
    """walk<dtype,threads,channels,math[,bulk][,pipe]> from a mangled walk_kernel symbol
    (",bulk": the instance that stages its weights by bulk copies, Ctx::kBulkW; ",pipe": the
    pipelined segment passes, Ctx::pass_seg_pipe; ",wg": their wgmma passes, Ctx::pass_seg_wg); legacy<dtype> for the first kernel
    (walker_legacy.cu)."""
    m = re.search(r"walk_kernelI(\w)Li(\d+)ELi(\d+)ELi(\d+)E(?:Lb(\d)E)?(?:Lb(\d)E)?(?:Lb(\d)E)?", symbol)
    if not m:
        legacy = re.search(r"walk_kernelI(\w)E", symbol)
        return f"legacy<{legacy.group(1)}>" if legacy else symbol
    bulk = ",bulk" if m.group(5) == "1" else ""
    pipe = ",pipe" if m.group(6) == "1" else ""
    wg = ",wg" if m.group(7) == "1" else ""
    return f"walk<{m.group(1)},{m.group(2)},{m.group(3)},{m.group(4)}{bulk}{pipe}{wg}>"


def spills(sass_path: str, source: str) -> dict[str, collections.Counter]:
    func_of = function_of(source)

    out: dict[str, collections.Counter] = {}
    kernel, where = None, "?"  # where: the function (walk_kernel.cuh) or file of the current line
    for text in open(sass_path):
        if not text[:1].isspace() and text.rstrip().endswith(":") and "walk_kernel" in text:
            kernel = instance(text)
            out.setdefault(kernel, collections.Counter())
            continue
        if kernel is None:
            continue
        m = re.search(r'//## File ".*?([\w.]+)", line (\d+)', text)
        if m:
            where = func_of(int(m.group(2))) if m.group(1) == "walk_kernel.cuh" else m.group(1)
            continue
        m = re.search(r"\b(STL|LDL)(\.\w+)*\s", text)
        if m:
            out[kernel][(where, m.group(1))] += 1
    return out


def ptxas_lines(build_log: str) -> list[str]:
    """The -Xptxas -v report of every walk_kernel instance in a build log, one line each:
    instance, its stack/spill line, its register line (tab-separated)."""
    out, cur = [], None
    with open(build_log, errors="replace") as log:
        for text in log:
            m = re.search(r"Compiling entry function '(\S*walk_kernel\S*)'", text)
            if m:
                cur = [instance(m.group(1))]
                out.append(cur)
                continue
            if cur is not None and len(cur) < 3 and re.search(r"spill|registers", text):
                cur.append(re.sub(r"^\s*(ptxas info\s*:\s*)?", "", text.rstrip()))
    return ["\t".join(fields) for fields in out]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    if argv[0] == "--ptxas":
        lines = ptxas_lines(argv[1])
        print("\n".join(lines) if lines else f"no walk_kernel instances in {argv[1]}")
        return 0
    table = spills(argv[0], argv[1] if len(argv) > 1 else "csrc/pixelcnn/cuda/walk_kernel.cuh")
    if not table:
        print(f"no walk_kernel instances in {argv[0]}")
        return 1
    for kernel in sorted(table):
        counts = table[kernel]
        total = sum(counts.values())
        hot = sum(n for (f, _), n in counts.items() if f in HOT)
        per_func = collections.Counter()
        for (f, _), n in counts.items():
            per_func[f] += n
        where = ", ".join(f"{f} {n}" for f, n in per_func.most_common(6))
        print(f"{kernel}: {total} spill instructions (STL+LDL), {hot} in per-chunk code"
              + (f" | {where}" if total else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
