"""A/B of the VMC step's gradient-and-update phase (PyTorch forward + backward of the
batch + Adam), the same on the naive and the kernel paths (bench_engine.py's VMC step).

Variants of how the reference network's forward is written (same function, checked
against the model's own log psi before timing) and of how the step is launched:

- ``eager``: the model as it is (naqs.models.pixelcnn.PixelCNN.log_psi);
- ``fold``: the causal pads folded into the convolutions' own zero padding (the
  output is cropped: a few % more FLOPs, no pad copies);
- ``channels_last`` / ``nchw``: the activation layout forced (the model's default on
  CUDA is channels-last since it measured faster here);
- ``graph``: the whole phase (forward, backward, Adam with ``capturable=True``) replayed
  from one CUDA graph (no host launch overhead).

Prints, per variant, the median of ``--reps`` phases (CUDA events) and, for ``eager``,
the sum of the CUDA kernels' times from torch.profiler (how much of the phase is the
GPU working rather than waiting for the host).

    python bench/grad_phase_ab.py --lx 12 --blocks 10 --batch 1000
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from naqs.models import PixelCNN
from naqs.vmc import vmc_loss


def raw_outputs_fold(model: PixelCNN, spins: torch.Tensor) -> torch.Tensor:
    """model.raw_outputs with the pads folded into conv2d's padding and cropped."""
    batch, ly, lx = spins.shape[0], model.ly, model.lx
    x = spins.to(model.out_weight.dtype).reshape(batch, 1, ly, lx)
    v_prev, h_prev = x, x
    for layer in range(model.n_blocks):
        wv, bv, wh, bh = model.layer_weights(layer)
        # rows y-2..y, cols x-1..x+1: symmetric padding (2, 1), keep the first ly rows
        v = F.relu(F.conv2d(v_prev, wv, bv, padding=(2, 1))[:, :, :ly, :])
        if layer > 0:
            v = v + v_prev
        v_down = F.pad(v, (0, 0, 1, 0))[:, :, :ly, :]
        h_in = torch.cat([h_prev, v_down], dim=1)
        # rows y-2..y, cols x-2..x: padding (2, 2), keep [:ly, :lx]
        h = F.relu(F.conv2d(h_in, wh, bh, padding=(2, 2))[:, :, :ly, :lx])
        if layer > 0:
            h = h + h_prev
        v_prev, h_prev = v, h
    out = F.conv2d(h_prev, model.out_weight[:, :, None, None], model.out_bias)
    return out.reshape(batch, 4, model.n_sites).transpose(1, 2)


def raw_outputs_layout(nhwc: bool):
    """model.raw_outputs with its activation layout forced (PixelCNN.channels_last)."""

    def raw(model: PixelCNN, spins: torch.Tensor) -> torch.Tensor:
        old, model.channels_last = model.channels_last, nhwc
        try:
            return model.raw_outputs(spins)
        finally:
            model.channels_last = old

    return raw


def log_psi_with(model: PixelCNN, spins: torch.Tensor, raw_fn) -> torch.Tensor:
    raw = raw_fn(model, spins)
    return model.select(model.normalize(raw, spins), spins)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lx", type=int, default=12)
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--variants", default="eager,nchw,fold,graph,graph-nchw,graph-fold")
    args = p.parse_args(argv)
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = PixelCNN(args.lx, args.lx, args.blocks, 32).to(dev)
    spins = (torch.randint(0, 2, (args.batch, args.lx * args.lx), device=dev) * 2 - 1).to(torch.int8)
    eloc = torch.randn(args.batch, dtype=torch.complex128, device=dev)
    raw_fns = {
        "eager": lambda m, s: m.raw_outputs(s),  # (the model's layout: channels-last on CUDA)
        "fold": raw_outputs_fold,
        "channels_last": raw_outputs_layout(True),
        "nchw": raw_outputs_layout(False),
    }
    with torch.no_grad():
        ref = model.log_psi(spins)
        for name in ("fold", "channels_last", "nchw"):
            got = log_psi_with(model, spins, raw_fns[name])
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            print(f"{name}: max |log psi - reference| / max |log psi| = {err:.2e}")
            if err > 1e-3:  # (cuDNN's TF32 algorithms differ by ~1e-4 between layouts)
                raise SystemExit(f"{name} does not compute the model's log psi")

    def phase(opt, raw_fn):
        lp = log_psi_with(model, spins, raw_fn)
        loss = vmc_loss(eloc, lp)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    def time_phase(fn):
        times = []
        for _ in range(3):
            fn()
        for _ in range(args.reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times), min(times)

    rows = []
    for variant in args.variants.split(","):
        graphed = variant.startswith("graph")
        base = variant[len("graph-"):] if variant.startswith("graph-") else ("eager" if graphed else variant)
        raw_fn = raw_fns[base]
        opt = torch.optim.Adam(model.parameters(), lr=1e-6, capturable=graphed)
        if graphed:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up on a side stream, as torch.cuda.graphs asks
                    phase(opt, raw_fn)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                phase(opt, raw_fn)
            med, best = time_phase(graph.replay)
        else:
            med, best = time_phase(lambda: phase(opt, raw_fn))
        rows.append((variant, med, best))
        print(f"{variant:14s} median {med:7.2f} ms  best {best:7.2f} ms", flush=True)

    # how much of the eager phase the GPU is busy
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    phase(opt, raw_fns["eager"])
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            phase(opt, raw_fns["eager"])
        torch.cuda.synchronize()
    events = prof.key_averages()
    cuda_us = sum(e.self_device_time_total for e in events) / 3
    n_kernels = sum(e.count for e in events if e.self_device_time_total > 0) / 3
    print(f"eager: CUDA kernel time {cuda_us / 1e3:.2f} ms per phase over ~{n_kernels:.0f} GPU ops")
    print(events.table(sort_by="self_device_time_total", row_limit=15))
    print("| variant | median ms | best ms |")
    print("| --- | ---: | ---: |")
    for v, m, b in rows:
        print(f"| {v} | {m:.2f} | {b:.2f} |")


if __name__ == "__main__":
    main()
