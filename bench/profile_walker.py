"""One sampling walk and one connected (Ising local-energy) walk of the CUDA engine, for
a profiler: ``ncu -k regex:walk_kernel python bench/profile_walker.py 21 20 32``.

Arguments: L (lattice L x L), blocks, samples drawn, samples whose local energy is walked
(default 21 20 4096 32); 32 channels, float32.
"""

from __future__ import annotations

import sys

import torch

from naqs import ops
from naqs.hamiltonian import TransverseFieldIsing
from naqs.lattice import square
from naqs.models.pixelcnn import PixelCNN


def main(argv: list[str]) -> None:
    lx, blocks, batch, le_batch = (int(v) for v in (argv + ["21", "20", "4096", "32"][len(argv):]))
    torch.manual_seed(0)
    model = PixelCNN(lx, lx, blocks, 32).cuda()
    u = torch.rand(batch, lx * lx, dtype=torch.float64, device="cuda")
    spins, _ = ops.pixelcnn_sample(model, u)
    spins = spins[:le_batch]
    conn = TransverseFieldIsing(square(lx, lx), gamma=1.0).connections(spins)
    ops.connected_log_psi(model, spins, conn.flips, conn.counts)
    torch.cuda.synchronize()
    print(f"profiled {lx}x{lx}, {blocks} blocks, {batch} samples drawn, connected walks of {len(spins)}")


if __name__ == "__main__":
    main(sys.argv[1:])
