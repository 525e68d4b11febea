"""The benchmark's analysis scripts (bench/*.py) on small synthetic inputs."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_spill_lines_counts_by_instance_and_function(tmp_path, monkeypatch):
    """bench/spill_lines.py attributes each STL/LDL of a walk_kernel instance to the
    walk_kernel.cuh function of its line (or to another file), and separates the per-chunk ones."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("spill_lines", None)
    import spill_lines

    source = tmp_path / "walk_kernel.cuh"
    source.write_text(
        "// header\n"
        "__device__ void product(int k) {\n"   # line 2
        "  work();\n"                           # line 3
        "}\n"
        "__global__ void walk_kernel(int a) {\n"  # line 5
        "  setup();\n"                          # line 6
        "}\n"
    )
    sass = tmp_path / "walker.sass"
    sass.write_text(
        ".text._ZN4naqs11walk_kernelIfLi512ELi32ELi0EEEvv:\n"
        '\t//## File "/src/walk_kernel.cuh", line 6\n'
        "        /*0010*/                   STL [R1], R2 ;\n"
        "        /*0020*/                   LDL.64 R4, [R1+0x8] ;\n"
        '\t//## File "/src/walk_kernel.cuh", line 3\n'
        "        /*0030*/                   LDL R6, [R1+0x4] ;\n"
        "        /*0040*/                   FADD R6, R6, R7 ;\n"
        '\t//## File "/src/cone.h", line 40\n'
        "        /*0050*/                   STL [R1+0xc], R9 ;\n"
        ".text._ZN4naqs11walk_kernelIfLi256ELi32ELi2ELb0EEEvv:\n"
        '\t//## File "/src/walk_kernel.cuh", line 3\n'
        "        /*0010*/                   FFMA R1, R2, R3, R4 ;\n"
        ".text._ZN4naqs11walk_kernelIfLi512ELi32ELi0ELb1EEEvv:\n"  # the bulk-weights instance
        '\t//## File "/src/walk_kernel.cuh", line 3\n'
        "        /*0010*/                   STL [R1], R2 ;\n"
    )
    table = spill_lines.spills(str(sass), str(source))
    assert set(table) == {"walk<f,512,32,0>", "walk<f,256,32,2>", "walk<f,512,32,0,bulk>"}
    assert table["walk<f,512,32,0,bulk>"][("product", "STL")] == 1
    big = table["walk<f,512,32,0>"]
    assert big[("walk_kernel", "STL")] == 1 and big[("walk_kernel", "LDL")] == 1
    assert big[("product", "LDL")] == 1 and big[("cone.h", "STL")] == 1
    assert sum(table["walk<f,256,32,2>"].values()) == 0


def test_spill_lines_ptxas_report(tmp_path, monkeypatch):
    """bench/spill_lines.py --ptxas turns a build log's -Xptxas -v lines into one line per
    walk_kernel instance (the gpu_run summary's table), legacy kernels included."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("spill_lines", None)
    import spill_lines

    log = tmp_path / "build.log"
    log.write_text(
        "  [3/14] Building CUDA object walker_legacy.cu.o\n"
        "  ptxas info    : Compiling entry function '_ZN4naqs6legacy11walk_kernelIfEEvNS0_4DimsE' for 'sm_90'\n"
        "  ptxas info    : Function properties for _ZN4naqs6legacy11walk_kernelIfEEvNS0_4DimsE\n"
        "      0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "  ptxas info    : Used 121 registers, used 1 barriers\n"
        "  ptxas info    : Compiling entry function '_ZN4naqs11walk_kernelIfLi512ELi32ELi0ELb1EEEvv' for 'sm_90'\n"
        "  ptxas info    : Function properties for _ZN4naqs11walk_kernelIfLi512ELi32ELi0ELb1EEEvv\n"
        "      24 bytes stack frame, 32 bytes spill stores, 28 bytes spill loads\n"
        "  ptxas info    : Used 128 registers, used 1 barriers, 144 bytes smem\n"
        "  ptxas info    : Compile time = 3337.235 ms\n"
    )
    lines = spill_lines.ptxas_lines(str(log))
    assert lines == [
        "legacy<f>\t0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\tUsed 121 registers, used 1 barriers",
        (
            "walk<f,512,32,0,bulk>\t24 bytes stack frame, 32 bytes spill stores, 28 bytes spill loads\t"
            "Used 128 registers, used 1 barriers, 144 bytes smem"
        ),
    ]
