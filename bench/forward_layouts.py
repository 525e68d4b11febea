"""One batched forward pass (``PixelCNN.raw_outputs``) with NCHW and with channels-last
(NHWC) activations, side by side in one process: the layout decides the 'x forward'
baseline of bench_engine.py (median of ``--reps`` after cuDNN's autotuning).

    python bench/forward_layouts.py --configs 12x10x1000,21x20x4096
"""

from __future__ import annotations

import argparse

import torch
from bench_engine import timeit  # (bench/ is the script's directory: on sys.path)

from naqs.models import PixelCNN


def time_forward(model, spins, reps):
    """Median ms of one forward (bench_engine.timeit, after 3 warm-up calls)."""
    with torch.no_grad():
        return 1e3 * timeit(lambda: model.raw_outputs(spins), torch.device("cuda"), reps=reps, warmup=3)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="10x10x1000,12x10x1000,12x10x4096,21x10x4096,21x20x1000,21x20x4096")
    p.add_argument("--reps", type=int, default=9)
    args = p.parse_args(argv)
    torch.backends.cudnn.benchmark = True
    print(f"device {torch.cuda.get_device_name()}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}")
    print("| config | NCHW ms | NHWC ms | NCHW / NHWC | max rel diff |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for cfg in args.configs.split(","):
        lx, blocks, batch = (int(v) for v in cfg.split("x"))
        torch.manual_seed(0)
        model = PixelCNN(lx, lx, blocks, 32).cuda()
        spins = (torch.randint(0, 2, (batch, lx * lx), device="cuda") * 2 - 1).to(torch.int8)
        out = {}
        for nhwc in (False, True):
            model.channels_last = nhwc
            out[nhwc] = (time_forward(model, spins, args.reps), model.raw_outputs(spins).detach())
        diff = ((out[True][1] - out[False][1]).abs().max() / out[False][1].abs().max()).item()
        print(f"| {lx}x{lx} L={blocks} B={batch} | {out[False][0]:.2f} | {out[True][0]:.2f} | "
              f"{out[False][0] / out[True][0]:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
