"""The CUDA walker's kernel instances, checked on the sources (CI builds no CUDA).

walker.cu launches instances of walk_kernel (walk_kernel.cuh) through walk_kernel_of<...>(),
which each walk_*.cu file instantiates for the instances it compiles. The extension
module links with undefined symbols allowed, so an instance launched but compiled
nowhere would only show as an import error of naqs._C on a GPU machine; one compiled
twice as a duplicate symbol there."""

import re
from pathlib import Path

CUDA = Path(__file__).resolve().parent.parent / "csrc" / "pixelcnn" / "cuda"
DEFAULTS = ("false", "false", "false")  # kBulkW, kPipe, kWG


def _instance(args: str, dtype: str) -> tuple[str, ...]:
    parts = [a.strip() for a in args.split(",")]
    parts[0] = dtype if parts[0] == "T" else parts[0]
    return tuple(parts + list(DEFAULTS[len(parts) - 4:]))


def launched() -> set[tuple[str, ...]]:
    """The instances kernel_for (walker.cu) can return: float only inside its
    `if constexpr (sizeof(T) == 4)` block, float and double after it."""
    src = (CUDA / "walker.cu").read_text()
    body = src[src.index("WalkKernel<T> kernel_for("):]
    body = body[: body.index("\n}\n")]
    float_only, _, both = body.partition("if constexpr (sizeof(T) == 4) {")[2].partition("\n  }\n")
    out = {_instance(a, "float") for a in re.findall(r"walk_kernel_of<([^>]*)>\(\)", float_only)}
    for dtype in ("float", "double"):
        out |= {_instance(a, dtype) for a in re.findall(r"walk_kernel_of<([^>]*)>\(\)", both)}
    return out


def compiled() -> list[tuple[str, ...]]:
    out = []
    for path in sorted(CUDA.glob("walk_*.cu")):
        for dtype, args in re.findall(r"template WalkKernel<(\w+)> walk_kernel_of<([^>]*)>\(\);", path.read_text()):
            inst = _instance(args, dtype)
            assert inst[0] == dtype, (path.name, inst)
            out.append(inst)
    return out


def test_every_launched_instance_is_compiled_once():
    use, made = launched(), compiled()
    assert len(use) >= 16 and ("float", "256", "32", "kTF32", "false", "true", "true") in use
    assert len(made) == len(set(made)), "an instance is compiled in two walk_*.cu files"
    assert use == set(made), (sorted(use - set(made)), sorted(set(made) - use))


def test_instance_files_are_listed_in_walk_instances_h():
    header = (CUDA / "walk_instances.h").read_text()
    for path in CUDA.glob("walk_*.cu"):
        assert path.name in header, f"{path.name} is not in walk_instances.h's list"
