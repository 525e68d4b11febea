"""The row-cached engine (csrc/pixelcnn) against the PyTorch references.

Every test runs on the CPU kernel and, with the ``cuda`` marker, on the CUDA kernel
(skipped without a CUDA device; FAILING when NAQS_EXPECT_CUDA=1 and the extension was
built without CUDA).

Tolerances (why):
- float64: samples identical; log psi within 1e-10 (the kernels sum the same per-site
  terms in another order, rounding ~1e-15 per term).
- float32: the kernel and the reference compute each conditional with different
  summation orders (~1e-7 relative), so a uniform within ~1e-7 of |psi_i(+1)|^2 can
  go either way: we allow at most 2% of the rows to differ (observed: none in these
  sizes); log psi within 1e-4 absolute (the reference sums N float32 terms).
- connected log psi: same as log psi; local energies of a float32 network through the
  kernels stay within 1e-6 relative of the float64 evaluation (the log ratio is formed
  from the differing suffix only, accumulated in float64).
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from naqs import ops
from naqs.hamiltonian import Heisenberg, TransverseFieldIsing
from naqs.lattice import square
from naqs.local_energy import connected_log_psi_reference, last_local_energy_path, local_energy
from naqs.models.pixelcnn import PixelCNN
from naqs.models.symmetric import SymmetricModel
from naqs.sampling import exact_sample, last_sampler_path


def _require_cuda():
    info = ops.build_info()
    expect = os.environ.get("NAQS_EXPECT_CUDA") == "1"
    if not info["cuda"]:
        if expect:
            pytest.fail("NAQS_EXPECT_CUDA=1 but naqs._C was built without CUDA")
        pytest.skip("naqs._C built without CUDA")
    if not torch.cuda.is_available():
        if expect:
            pytest.fail("NAQS_EXPECT_CUDA=1 but no CUDA device is visible")
        pytest.skip("no CUDA device")


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param != "cuda":
        yield torch.device("cpu")
        return
    _require_cuda()
    # The reference must be float32 arithmetic, not cuDNN/cuBLAS TF32 (on by default
    # for convolutions), else it is the reference that is off by ~1e-3.
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield torch.device("cuda")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _model(lx, ly, blocks, channels, dtype, device, magnetization=None, seed=0, scale=0.5, sign_rule=None):
    torch.manual_seed(seed)
    # output_scale 0.5: conditionals far from uniform, so a wrong kernel cannot hide
    return PixelCNN(lx, ly, blocks, channels, magnetization=magnetization, output_scale=scale,
                    sign_rule=sign_rule).to(device=device, dtype=dtype)


def _uniforms(batch, n, device, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, generator=g, dtype=torch.float64).to(device)


# (lx, ly, blocks, channels, magnetization)
SHAPES = [
    (1, 1, 1, 1, None),
    (1, 6, 2, 3, None),
    (6, 1, 2, 4, 0),
    (3, 4, 3, 5, None),
    (4, 3, 2, 8, 2),
    (4, 4, 1, 32, 0),
    (3, 5, 4, 6, -1),
    (3, 3, 40, 2, None),
]


def _ids(shape):
    return "x".join(map(str, shape[:2])) + f"-L{shape[2]}-C{shape[3]}-M{shape[4]}"


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sample_matches_reference(device, shape, dtype):
    lx, ly, blocks, channels, mag = shape
    model = _model(lx, ly, blocks, channels, dtype, device, mag)
    batch = 48
    u = _uniforms(batch, model.n_sites, device)
    s_ref, lp_ref = model.sample_reference(batch, uniforms=u)
    s_k, lp_k = ops.pixelcnn_sample(model, u)
    assert s_k.dtype == torch.int8 and s_k.shape == (batch, model.n_sites)
    assert lp_k.dtype == torch.complex128
    if mag is not None:
        assert (s_k.long().sum(1) == mag).all()
    same = (s_k == s_ref).all(1)
    if dtype == torch.float64:
        assert same.all(), f"{int((~same).sum())} samples differ"
        torch.testing.assert_close(lp_k, lp_ref.to(torch.complex128), atol=1e-10, rtol=0)
    else:
        assert (~same).float().mean() <= 0.02
        torch.testing.assert_close(lp_k[same], lp_ref[same].to(torch.complex128), atol=1e-4, rtol=0)


@pytest.mark.parametrize("batch", [0, 1])
def test_sample_small_batches(device, batch):
    model = _model(3, 2, 2, 4, torch.float64, device)
    u = _uniforms(batch, 6, device)
    s_ref, lp_ref = model.sample_reference(batch, uniforms=u)
    s_k, lp_k = ops.pixelcnn_sample(model, u)
    assert s_k.shape == (batch, 6) and lp_k.shape == (batch,)
    assert torch.equal(s_k, s_ref)
    torch.testing.assert_close(lp_k, lp_ref, atol=1e-10, rtol=0)


def test_random_networks_match(device):
    """Random shapes, depths, widths and sectors, float64: identical samples, equal
    log psi and connected log psi."""
    gen = torch.Generator().manual_seed(123)
    for trial in range(6):
        lx, ly = (int(v) for v in torch.randint(1, 5, (2,), generator=gen))
        blocks = int(torch.randint(1, 5, (1,), generator=gen))
        channels = int(torch.randint(1, 10, (1,), generator=gen))
        n = lx * ly
        mag = None if trial % 2 == 0 else (n % 2)
        model = _model(lx, ly, blocks, channels, torch.float64, device, mag, seed=trial)
        u = _uniforms(16, n, device, seed=trial)
        s_ref, lp_ref = model.sample_reference(16, uniforms=u)
        s_k, lp_k = ops.pixelcnn_sample(model, u)
        assert torch.equal(s_k, s_ref), (lx, ly, blocks, channels, mag)
        torch.testing.assert_close(lp_k, lp_ref, atol=1e-10, rtol=0)
        flips, counts = _mixed_flips(16, n, device, gen)
        ref = connected_log_psi_reference(model, s_ref, flips, counts)
        got = ops.connected_log_psi(model, s_ref, flips, counts)
        _assert_connected_close(got, ref, 1e-10)


def _mixed_flips(batch, n, device, gen):
    """Single flips of every site, then random pairs (unordered), padded; random counts."""
    m = n + 4
    flips = torch.full((batch, m, 2), -1, dtype=torch.int64)
    flips[:, :n, 0] = torch.arange(n)
    if n > 1:
        for r in range(4):
            pair = torch.stack([torch.randperm(n, generator=gen)[:2] for _ in range(batch)])
            flips[:, n + r] = pair
    else:
        m = n
        flips = flips[:, :n]
    counts = torch.randint(0, m + 1, (batch,), generator=gen)
    counts[0] = m
    valid = torch.arange(m)[None, :] < counts[:, None]
    flips = torch.where(valid[..., None], flips, torch.full_like(flips, -1))
    return flips.to(device), counts.to(device)


def _assert_connected_close(got, ref, atol, rtol=0.0):
    assert got.shape == ref.shape
    fin = torch.isfinite(ref.real)
    assert torch.equal(fin, torch.isfinite(got.real))
    assert torch.equal(torch.isneginf(ref.real), torch.isneginf(got.real))
    torch.testing.assert_close(got[fin], ref[fin].to(got.dtype), atol=atol, rtol=rtol)


@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_connected_matches_reference(device, shape, dtype):
    lx, ly, blocks, channels, mag = shape
    model = _model(lx, ly, blocks, channels, dtype, device, mag)
    n = model.n_sites
    batch = 12
    spins, _ = model.sample_reference(batch, uniforms=_uniforms(batch, n, device))
    gen = torch.Generator().manual_seed(5)
    flips, counts = _mixed_flips(batch, n, device, gen)
    ref = connected_log_psi_reference(model, spins, flips, counts)
    got = ops.connected_log_psi(model, spins, flips, counts)
    assert got.dtype == torch.complex128
    _assert_connected_close(got, ref, 1e-10 if dtype == torch.float64 else 1e-4)
    # a tiny memory budget forces one sample per chunk: same numbers
    got_small = ops.connected_log_psi(model, spins, flips, counts, memory_budget=1)
    _assert_connected_close(got_small, got, 0.0)


def _changed_positions(lx, ly, blocks, sites):
    """Positions of h_l and v_l ([blocks, ly, lx] masks) that can change when ``sites``
    are flipped, following the receptive fields of PixelCNN one block at a time: v_l at
    (y, x) reads rows y-2..y, cols x-1..x+1 of v_(l-1) (the spins for l = 0); h_l reads
    rows y-2..y, cols x-2..x of h_(l-1) (block 0: the spins, its own site masked) and of
    down(v_l), i.e. v_l at rows y-3..y-1."""

    def spread(src, offsets):
        out = torch.zeros(ly, lx, dtype=torch.bool)
        for y, x in src.nonzero().tolist():
            for dy, dx in offsets:
                if 0 <= y + dy < ly and 0 <= x + dx < lx:
                    out[y + dy, x + dx] = True
        return out

    flipped = torch.zeros(ly, lx, dtype=torch.bool)
    for i in sites:
        flipped[i // lx, i % lx] = True
    v_reads = [(dy, dx) for dy in range(3) for dx in (-1, 0, 1)]
    h_reads = [(dy, dx) for dy in range(3) for dx in range(3)]
    down_reads = [(dy + 1, dx) for dy, dx in h_reads]
    hs, vs = [], []
    h = v = flipped
    for block in range(blocks):
        v = spread(v, v_reads)
        h = spread(h, h_reads if block else [o for o in h_reads if o != (0, 0)]) | spread(v, down_reads)
        hs.append(h)
        vs.append(v)
    return torch.stack(hs), torch.stack(vs)


def test_light_cone_covers_every_change():
    """The kernels' light cone (cone.h) contains every activation a flip can change,
    and is exactly that set for one flipped site (the last row's v_l is never computed:
    nothing reads it)."""
    gen = torch.Generator().manual_seed(7)
    for trial in range(60):
        lx, ly = (int(v) for v in torch.randint(1, 11, (2,), generator=gen))
        blocks = int(torch.randint(1, 7, (1,), generator=gen))
        n = lx * ly
        n_flips = 1 if trial % 3 == 0 or n == 1 else int(torch.randint(2, min(n, 5) + 1, (1,), generator=gen))
        sites = torch.randperm(n, generator=gen)[:n_flips].tolist()
        h_k, v_k = ops.pixelcnn_cone(lx, ly, blocks, sites)
        h_x, v_x = _changed_positions(lx, ly, blocks, sites)
        v_x[:, ly - 1] = False
        assert h_k.shape == (blocks, ly, lx) and v_k.shape == (blocks, ly, lx)
        assert not (h_x & ~h_k).any() and not (v_x & ~v_k).any(), (lx, ly, blocks, sites)
        if n_flips == 1:
            assert torch.equal(h_k, h_x) and torch.equal(v_k, v_x), (lx, ly, blocks, sites)
    # the cone skips work: one flip in the middle of 12x12 with 2 blocks
    h_k, v_k = ops.pixelcnn_cone(12, 12, 2, [5 * 12 + 6])
    assert h_k.sum() < 0.3 * h_k.numel() and v_k.sum() < 0.3 * v_k.numel()
    with pytest.raises(ValueError, match="outside the lattice"):
        ops.pixelcnn_cone(3, 3, 2, [9])


# lattices wider and taller than the receptive field of their few blocks: most positions
# after a flip are outside its light cone
CONE_SHAPES = [
    (9, 7, 2, 5, None),
    (6, 10, 3, 4, 0),
    (11, 4, 1, 3, None),
    (8, 8, 4, 8, None),
    (7, 9, 3, 32, -1),  # 32 channels: the specialized CUDA kernel
]


@pytest.mark.parametrize("shape", CONE_SHAPES, ids=_ids)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_connected_light_cone(device, monkeypatch, shape, dtype):
    """Connected log psi on lattices where the light cone skips most of the walk:
    equal to the reference, and to the walk of everything after k
    (NAQS_PIXELCNN_CONE=0), which recomputes the skipped positions."""
    lx, ly, blocks, channels, mag = shape
    model = _model(lx, ly, blocks, channels, dtype, device, mag)
    n = model.n_sites
    batch = 10
    spins, _ = model.sample_reference(batch, uniforms=_uniforms(batch, n, device))
    flips, counts = _mixed_flips(batch, n, device, torch.Generator().manual_seed(11))
    ref = connected_log_psi_reference(model, spins, flips, counts)
    got = ops.connected_log_psi(model, spins, flips, counts)
    _assert_connected_close(got, ref, 1e-10 if dtype == torch.float64 else 1e-4)
    monkeypatch.setenv("NAQS_PIXELCNN_CONE", "0")
    full = ops.connected_log_psi(model, spins, flips, counts)
    _assert_connected_close(got, full, 1e-12 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize(
    "switch,values,channels",
    [
        ("NAQS_PIXELCNN_SPECIALIZE", ("1", "0"), 32),
        ("NAQS_PIXELCNN_SEGMENTS", ("1", "0", "2"), 8),
        ("NAQS_PIXELCNN_BULK_WEIGHTS", ("1", "0"), 32),
        ("NAQS_PIXELCNN_WIDE_V", ("1", "0"), 32),
        ("NAQS_PIXELCNN_TILE_MAP", ("1", "0", "2", "3"), 32),
        ("NAQS_PIXELCNN_TILE", ("32", "64"), 32),
    ],
    ids=["specialize", "segments", "bulk_weights", "wide_v", "tile_map", "tile64"],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_kernel_switches_agree(device, monkeypatch, switch, values, channels, dtype):
    """Switches of the CUDA walker that change how it computes, not what, give the same
    samples, log psi and connected log psi: the 32-channel kernel (compile-time channel
    count) and the generic one (NAQS_PIXELCNN_SPECIALIZE=0); the input layouts
    (NAQS_PIXELCNN_SEGMENTS: 0 windows tap by tap, 1 row segments on passes of >= 3
    positions per job, 2 segments on every pass over rows); the weights staged by one bulk
    copy (the default of the 32-channel float FFMA walks) or by cp.async
    (NAQS_PIXELCNN_BULK_WEIGHTS=0); the vertical segment passes in chunks of up to 64
    pairs (default) or 32 (NAQS_PIXELCNN_WIDE_V=0; tiles of 32 jobs, so that a pass has
    more than 32 pairs); the FFMA product's thread tiles over channels and rows
    (NAQS_PIXELCNN_TILE_MAP, default 1); row walks of 64 jobs a CTA (the local energies'
    default for large batches; the sampler stays at 32)."""
    if device.type != "cuda":
        pytest.skip("a switch of the CUDA kernel")
    if switch == "NAQS_PIXELCNN_WIDE_V":
        monkeypatch.setenv("NAQS_PIXELCNN_TILE", "32")
    model = _model(5, 6, 3, channels, dtype, device, seed=3)
    n = model.n_sites
    u = _uniforms(40, n, device, seed=4)
    flips, counts = _mixed_flips(40, n, device, torch.Generator().manual_seed(2))
    results = []
    for value in values:
        monkeypatch.setenv(switch, value)
        spins, lp = ops.pixelcnn_sample(model, u)
        results.append((spins, lp, ops.connected_log_psi(model, spins, flips, counts)))
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    # The tile decides the light cone's bounding box (../cone.h), so which positions a
    # connected walk recomputes and which it reads from the sample's storage; recomputed
    # in other chunks, their K-split sums round differently: float32 rounding, relative
    # (1.2e-7 of log psi ~ 10 on this network).
    rtol = 1e-6 if switch == "NAQS_PIXELCNN_TILE" and dtype == torch.float32 else 0.0
    s1, lp1, c1 = results[0]
    for s, lp, c in results[1:]:
        assert torch.equal(s, s1)
        torch.testing.assert_close(lp, lp1, atol=tol, rtol=0)
        _assert_connected_close(c, c1, tol, rtol)


def test_cuda_width_limit(device):
    """Lattices wider than the CUDA walker's index arithmetic allows are refused with a
    clear error (the CPU kernel takes them)."""
    if device.type != "cuda":
        pytest.skip("a limit of the CUDA kernel")
    model = _model(2048, 1, 1, 2, torch.float32, device)
    with pytest.raises(ValueError, match="at most 2047 sites wide"):
        ops.pixelcnn_sample(model, _uniforms(2, 2048, device))


def test_log_psi_kernel_and_sign_rule(device):
    n = 12
    sign = torch.tensor([(i % 4 + i // 4) % 2 for i in range(n)], dtype=torch.float32)
    model = _model(4, 3, 3, 6, torch.float64, device, 0, sign_rule=sign)
    spins, _ = model.sample_reference(20, uniforms=_uniforms(20, n, device))
    torch.testing.assert_close(ops.pixelcnn_log_psi_kernel(model, spins), model.log_psi(spins), atol=1e-10, rtol=0)
    ham = Heisenberg(square(4, 3))
    conn = ham.connections(spins)
    ref = connected_log_psi_reference(model, spins, conn.flips, conn.counts)
    got = ops.connected_log_psi(model, spins, conn.flips, conn.counts)
    # the sign-rule phase is pi * count: compare modulo 2 pi
    fin = torch.isfinite(ref.real)
    torch.testing.assert_close(got.real[fin], ref.real[fin], atol=1e-10, rtol=0)
    dphi = torch.remainder(got.imag[fin] - ref.imag[fin] + math.pi, 2 * math.pi) - math.pi
    assert dphi.abs().max() < 1e-9
    # exact_sample adds the sign rule to the kernel's log psi
    s2, lp2 = exact_sample(model, 20, uniforms=_uniforms(20, n, device))
    assert last_sampler_path() == f"kernel-{device.type}"
    torch.testing.assert_close(lp2, model.log_psi(s2).to(lp2.dtype), atol=1e-10, rtol=0)


@pytest.mark.parametrize("hamiltonian", ["ising", "heisenberg"])
def test_local_energy_precision_float32(device, hamiltonian):
    """Default mode: local energies of a float32 network through the kernels within
    1e-6 relative of the float64 evaluation of the same network."""
    # The model's default output scale (1e-2). With outputs of O(1) the float32
    # network's own arithmetic (~1e-6 on each raw output) dominates both paths alike:
    # see docs/engine.md, "Precision".
    lx, ly = 4, 4
    model = _model(lx, ly, 4, 16, torch.float32, device, None if hamiltonian == "ising" else 0, scale=1e-2)
    model64 = _model(lx, ly, 4, 16, torch.float64, device, None if hamiltonian == "ising" else 0, scale=1e-2)
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    lat = square(lx, ly)
    ham = TransverseFieldIsing(lat, gamma=1.0) if hamiltonian == "ising" else Heisenberg(lat)
    spins, log_psi = exact_sample(model, 64, uniforms=_uniforms(64, lx * ly, device))
    assert log_psi.dtype == torch.complex128
    e_kernel = local_energy(model, ham, spins, log_psi=log_psi)
    e_ref = local_energy(model64, ham, spins, use_kernel=False)
    rel = ((e_kernel - e_ref).abs() / e_ref.abs().clamp_min(1e-12)).max().item()
    assert rel < 1e-6, rel
    # norm-wise, the kernel path is at least as close as the float32 reference path
    e_ref32 = local_energy(model, ham, spins, use_kernel=False)
    assert (e_kernel - e_ref).norm() <= 1.05 * (e_ref32 - e_ref).norm() + 1e-12


@pytest.mark.parametrize("math_mode,tol", [("3xtf32", 1e-5), ("tf32", 1e-3)])
def test_tensor_core_math(device, monkeypatch, math_mode, tol):
    """NAQS_PIXELCNN_MATH selects tensor-core products on CUDA (float32 networks with
    8 | C <= 32): 3xtf32 (split operands, near FP32: local energies within 1e-6 on this
    network, 2.3e-6 on a 6x6 32-channel one, see docs/engine.md) and tf32 (one MMA,
    10-bit mantissas). Neither is the default (FFMA, the 1e-6 test above)."""
    if device.type != "cuda":
        pytest.skip("a CUDA kernel switch")
    monkeypatch.setenv("NAQS_PIXELCNN_MATH", math_mode)
    # small batches would sample with FFMA products (test_small_batches_sample_with_ffma)
    monkeypatch.setenv("NAQS_PIXELCNN_TF32_SMALL_SAMPLES", "1")
    lx, ly = 4, 4
    model = _model(lx, ly, 4, 16, torch.float32, device, None, scale=1e-2)
    model64 = _model(lx, ly, 4, 16, torch.float64, device, None, scale=1e-2)
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    ham = TransverseFieldIsing(square(lx, ly), gamma=1.0)
    spins, log_psi = exact_sample(model, 64, uniforms=_uniforms(64, lx * ly, device))
    e_kernel = local_energy(model, ham, spins, log_psi=log_psi)
    assert last_local_energy_path() == f"kernel-cuda-{math_mode}"
    e_ref = local_energy(model64, ham, spins, use_kernel=False)
    rel = ((e_kernel - e_ref).abs() / e_ref.abs().clamp_min(1e-12)).max().item()
    assert rel < tol, rel
    # a wider network through the same switch: samples and connected log psi
    model = _model(4, 4, 3, 32, torch.float32, device, 0)
    u = _uniforms(48, 16, device)
    s_ref, lp_ref = model.sample_reference(48, uniforms=u)
    s_k, lp_k = ops.pixelcnn_sample(model, u)
    same = (s_k == s_ref).all(1)
    assert (~same).float().mean() <= (0.02 if math_mode == "3xtf32" else 0.25)
    torch.testing.assert_close(lp_k[same], lp_ref[same].to(torch.complex128), atol=1e2 * tol, rtol=0)
    # Row walks over >= 3 columns take the segment path (several jobs per chunk here:
    # 9 columns, 16 jobs per CTA); the same products through the windows
    # (NAQS_PIXELCNN_SEGMENTS=0) only sum in another order. Both CTA sizes: in TF32 mode
    # the 32-channel segment products are the register-B ones, 256 threads (8 warps,
    # all four n-tiles a warp) and 512 (16 warps, two n-tiles a warp).
    model = _model(9, 6, 3, 32, torch.float32, device, None, scale=0.3)
    ham = TransverseFieldIsing(square(9, 6), gamma=1.0)
    spins, log_psi = exact_sample(model, 40, uniforms=_uniforms(40, 54, device))
    # (the mma.sync products: the wgmma passes round and sum the same operands in their own
    # order, test_tf32_wgmma_passes)
    monkeypatch.setenv("NAQS_PIXELCNN_WGMMA", "0")
    for threads in ("256", "512"):
        monkeypatch.setenv("NAQS_PIXELCNN_THREADS", threads)
        monkeypatch.delenv("NAQS_PIXELCNN_SEGMENTS", raising=False)
        e_seg = local_energy(model, ham, spins, log_psi=log_psi)
        monkeypatch.setenv("NAQS_PIXELCNN_SEGMENTS", "0")
        e_win = local_energy(model, ham, spins, log_psi=log_psi)
        rel = ((e_seg - e_win).abs() / e_win.abs().clamp_min(1e-12)).max().item()
        assert rel < 1e-5, (threads, rel)


def _profiled_walks(monkeypatch, capfd, model, spins, flips, counts):
    """The profile line of a log-psi walk (stderr: which kernel instance ran), then log psi
    and connected log psi, under the kernel switches set now."""
    monkeypatch.setenv("NAQS_PIXELCNN_PROFILE", "1")
    capfd.readouterr()
    ops.pixelcnn_log_psi_kernel(model, spins[:4])
    profile = capfd.readouterr().err
    monkeypatch.delenv("NAQS_PIXELCNN_PROFILE")
    return profile, ops.pixelcnn_log_psi_kernel(model, spins), ops.connected_log_psi(model, spins, flips, counts)


def test_tf32_overlapped_passes_agree(device, monkeypatch, capfd):
    """The TF32 row walks of 32-channel networks (256 threads) run pipelined segment
    passes: one chunk's finishing beside the next chunk's product, one barrier a chunk,
    the B fragments from global memory; block 0's vertical pass by FFMA on the spins, its
    horizontal windows in a K order with 16-byte copies. With block 0 by the windows as
    before (NAQS_PIXELCNN_BLOCK0=window), the segment path on every pass of a block l > 0
    (NAQS_PIXELCNN_SEGMENTS=2) and the same tiles, they give bitwise the log psi and
    connected log psi of pass_seg's chunks (NAQS_PIXELCNN_OVERLAP=0); the profile line
    says which ran. Block 0's new passes sum in another order, and tiles of 128 jobs (this
    instance only, on request) change the light cones' bounding boxes: float32 rounding."""
    if device.type != "cuda":
        pytest.skip("a CUDA kernel switch")
    monkeypatch.setenv("NAQS_PIXELCNN_MATH", "tf32")
    monkeypatch.setenv("NAQS_PIXELCNN_SEGMENTS", "2")
    monkeypatch.setenv("NAQS_PIXELCNN_TILE", "64")
    model = _model(9, 6, 3, 32, torch.float32, device, None, scale=0.3)
    n = model.n_sites
    spins, _ = model.sample_reference(150, uniforms=_uniforms(150, n, device))
    flips, counts = _mixed_flips(150, n, device, torch.Generator().manual_seed(5))

    def walks(**env):
        for key in ("NAQS_PIXELCNN_OVERLAP", "NAQS_PIXELCNN_BLOCK0", "NAQS_PIXELCNN_TILE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("NAQS_PIXELCNN_TILE", "64")
        monkeypatch.setenv("NAQS_PIXELCNN_WGMMA", "0")  # pass_seg_pipe, not the wgmma passes
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return _profiled_walks(monkeypatch, capfd, model, spins, flips, counts)

    prof_old, lp_old, c_old = walks(NAQS_PIXELCNN_OVERLAP="0")
    prof_win, lp_win, c_win = walks(NAQS_PIXELCNN_BLOCK0="window")
    prof_new, lp_new, c_new = walks()
    assert "threads=256 pipe=0" in prof_old
    assert "threads=256 pipe=1" in prof_win and "threads=256 pipe=1" in prof_new
    assert torch.equal(lp_win, lp_old)
    assert torch.equal(c_win, c_old)
    torch.testing.assert_close(lp_new, lp_old, atol=0, rtol=1e-5)
    _assert_connected_close(c_new, c_old, 0.0, 1e-5)
    _, _, c128 = walks(NAQS_PIXELCNN_TILE="128")
    _assert_connected_close(c128, c_new, 0.0, 1e-5)


def _skip_without_wgmma(device):
    """The wgmma passes need a CUDA device of compute capability 9.0 and an sm_90a build."""
    if device.type != "cuda":
        pytest.skip("a CUDA kernel")
    if not ops.build_info().get("cuda_wgmma") or torch.cuda.get_device_capability(device) != (9, 0):
        pytest.skip("wgmma passes need an sm_90a build on a 9.0 GPU")


@pytest.mark.parametrize("lx,ly,blocks", [(9, 6, 3), (12, 5, 4), (1, 7, 3), (23, 3, 2), (5, 4, 1)])
def test_tf32_wgmma_passes(device, monkeypatch, capfd, lx, ly, blocks):
    """On an sm_90a build and a 9.0 GPU the TF32 row walks (NAQS_PIXELCNN_WGMMA=1, the
    default there) of 32-channel networks run their blocks l > 0 on wgmma (pass_seg_wg: 64-row chunks of
    segment columns; warpgroup 0 multiplies and finishes, warpgroup 1 copies), block 0 as
    in the pipelined passes. Log psi, connected log psi (single flips of every site and
    pairs: light cones of all widths, chunks that span jobs, one-column lattices) and
    local energies are TF32 evaluations close to float64 as the pipelined passes'
    (NAQS_PIXELCNN_WGMMA=0) are, and the profile line says which ran. With activations
    stored biased by half a TF32 unit (NAQS_PIXELCNN_WG_ROUND=3) the MMAs round their
    operands as the pipelined passes' do and every exact reader takes the stored value
    back: as close to float64 as those (one block: only block 0's passes and the output
    layer read the biased values); that is the default, without either switch."""
    _skip_without_wgmma(device)
    monkeypatch.setenv("NAQS_PIXELCNN_MATH", "tf32")
    monkeypatch.setenv("NAQS_PIXELCNN_WG_ROUND", "2")
    model = _model(lx, ly, blocks, 32, torch.float32, device, None, scale=0.3)
    model64 = _model(lx, ly, blocks, 32, torch.float64, device, None, scale=0.3)
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    n = model.n_sites
    spins, _ = model.sample_reference(150, uniforms=_uniforms(150, n, device))
    flips, counts = _mixed_flips(150, n, device, torch.Generator().manual_seed(7))
    lp64 = ops.pixelcnn_log_psi_kernel(model64, spins)
    c64 = ops.connected_log_psi(model64, spins, flips, counts)

    def walks(wgmma):
        if wgmma is None:
            monkeypatch.delenv("NAQS_PIXELCNN_WGMMA", raising=False)
        else:
            monkeypatch.setenv("NAQS_PIXELCNN_WGMMA", wgmma)
        return _profiled_walks(monkeypatch, capfd, model, spins, flips, counts)

    prof_wg, lp_wg, c_wg = walks("1")
    prof_pipe, lp_pipe, c_pipe = walks("0")
    assert "threads=256 pipe=2" in prof_wg
    assert "threads=256 pipe=1" in prof_pipe
    err_wg = (lp_wg - lp64).abs().max().item()
    err_pipe = (lp_pipe - lp64).abs().max().item()
    assert err_wg <= 3 * err_pipe + 1e-5, (err_wg, err_pipe)
    fin = torch.isfinite(c64.real)
    assert torch.equal(fin, torch.isfinite(c_wg.real))
    cerr_wg = (c_wg[fin] - c64[fin]).abs().max().item()
    cerr_pipe = (c_pipe[fin] - c64[fin]).abs().max().item()
    assert cerr_wg <= 3 * cerr_pipe + 1e-5, (cerr_wg, cerr_pipe)
    # local energies (Ising) against float64: as close as the pipelined passes' (both TF32
    # evaluations: at scale 0.3, ~1e-3 relative, see docs/engine.md, Precision)
    ham = TransverseFieldIsing(square(lx, ly), gamma=1.0)
    e_ref = local_energy(model64, ham, spins)

    def e_err(wgmma):
        monkeypatch.setenv("NAQS_PIXELCNN_WGMMA", wgmma)
        e = local_energy(model, ham, spins)
        return ((e - e_ref).abs() / e_ref.abs().clamp_min(1e-12)).max().item()

    e_wg, e_pipe = e_err("1"), e_err("0")
    # every activation stored rounded to TF32 (NAQS_PIXELCNN_WG_ROUND=2): a
    # larger TF32 error than the pipelined passes' (run 115: 2.5-4.6x in the precision
    # table, 3.5x here at 9x6/3); operands rounded after each copy instead
    # (NAQS_PIXELCNN_WG_ROUND=1, slower): within 3x
    assert e_wg <= 6 * e_pipe + 1e-6, (e_wg, e_pipe)
    assert e_wg < 1e-2, e_wg
    monkeypatch.setenv("NAQS_PIXELCNN_WG_ROUND", "1")
    e_wg1 = e_err("1")
    assert e_wg1 <= 3 * e_pipe + 1e-6, (e_wg1, e_pipe)
    monkeypatch.setenv("NAQS_PIXELCNN_WG_ROUND", "3")
    prof_wg3, lp_wg3, c_wg3 = walks("1")
    assert "threads=256 pipe=2" in prof_wg3
    err_wg3 = (lp_wg3 - lp64).abs().max().item()
    assert err_wg3 <= 2 * err_pipe + 1e-6, (err_wg3, err_pipe)
    assert torch.equal(fin, torch.isfinite(c_wg3.real))
    cerr_wg3 = (c_wg3[fin] - c64[fin]).abs().max().item()
    assert cerr_wg3 <= 2 * cerr_pipe + 1e-6, (cerr_wg3, cerr_pipe)
    e_wg3 = e_err("1")
    assert e_wg3 <= 2 * e_pipe + 1e-6, (e_wg3, e_pipe)
    # the default: the same walks bitwise
    monkeypatch.delenv("NAQS_PIXELCNN_WG_ROUND")
    prof_def, lp_def, c_def = walks(None)
    assert "threads=256 pipe=2" in prof_def
    assert torch.equal(lp_def, lp_wg3) and torch.equal(c_def, c_wg3)


def test_tf32_wgmma_not_on_kept_activations(device, monkeypatch, capfd):
    """With activations stored rounded (NAQS_PIXELCNN_WG_ROUND=2) the wgmma passes read
    them as such; the sampler's kept activations (keep_activations=True, the VMC driver's path) are exact
    values, so connected walks from them stay on the pipelined passes even with
    NAQS_PIXELCNN_WGMMA=1 (the profile line says which ran), and agree with the walks
    that run their own forward walk to TF32 rounding. In the biased-storage mode (WG_ROUND=3,
    the default) they run on the wgmma passes, the kept storage biased for the walk and
    bitwise as it was after it."""
    _skip_without_wgmma(device)
    monkeypatch.setenv("NAQS_PIXELCNN_MATH", "tf32")
    monkeypatch.setenv("NAQS_PIXELCNN_WGMMA", "1")
    monkeypatch.setenv("NAQS_PIXELCNN_WG_ROUND", "2")
    model = _model(9, 6, 3, 32, torch.float32, device, None, scale=0.3)
    n = model.n_sites
    spins, _, cache = ops.pixelcnn_sample(model, _uniforms(64, n, device), keep_activations=True)
    flips, counts = _mixed_flips(64, n, device, torch.Generator().manual_seed(3))
    monkeypatch.setenv("NAQS_PIXELCNN_PROFILE", "1")
    capfd.readouterr()
    c_kept = ops.connected_log_psi(model, spins, flips, counts, cache=cache)
    kept_profile = capfd.readouterr().err
    c_own = ops.connected_log_psi(model, spins, flips, counts)
    own_profile = capfd.readouterr().err
    monkeypatch.delenv("NAQS_PIXELCNN_PROFILE")
    assert "pipe=1 mode=2" in kept_profile and "pipe=2" not in kept_profile
    assert "pipe=2 mode=2" in own_profile
    _assert_connected_close(c_kept, c_own, 1e-1, 1e-3)
    monkeypatch.setenv("NAQS_PIXELCNN_WG_ROUND", "3")
    before = [cache.store_h.clone(), cache.store_v.clone()]
    monkeypatch.setenv("NAQS_PIXELCNN_PROFILE", "1")
    capfd.readouterr()
    c_kept3 = ops.connected_log_psi(model, spins, flips, counts, cache=cache)
    kept3_profile = capfd.readouterr().err
    monkeypatch.delenv("NAQS_PIXELCNN_PROFILE")
    assert "pipe=2 mode=2" in kept3_profile
    # bitwise (as integers: slots the sampler never writes, e.g. the last row's v, hold
    # whatever the allocator gave, NaN patterns included, and NaN != NaN)
    assert torch.equal(cache.store_h.view(torch.int32), before[0].view(torch.int32))
    assert torch.equal(cache.store_v.view(torch.int32), before[1].view(torch.int32))
    # as close to float64 as the pipelined passes' (same operand rounding, exact storage)
    model64 = _model(9, 6, 3, 32, torch.float64, device, None, scale=0.3)
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    c64 = ops.connected_log_psi(model64, spins, flips, counts)
    fin = torch.isfinite(c64.real)
    assert torch.equal(fin, torch.isfinite(c_kept3.real))
    err3 = (c_kept3[fin] - c64[fin]).abs().max().item()
    err_pipe = (c_kept[fin] - c64[fin]).abs().max().item()
    assert err3 <= 2 * err_pipe + 1e-6, (err3, err_pipe)
    _assert_connected_close(c_kept3, ops.connected_log_psi(model, spins, flips, counts), 1e-1, 1e-3)


def test_tf32_long_lattice_without_pipelined_passes(device, monkeypatch, capfd):
    """A network whose pipelined TF32 passes would not fit in shared memory at full
    chunks (the light-cone tables grow with blocks x rows) is planned on the instance
    before them, not launched into a trap: log psi through the TF32 row walk agree with
    the default FFMA walk to TF32 rounding. (6 blocks x 1250 rows: 60 KB of tables.)"""
    if device.type != "cuda":
        pytest.skip("a CUDA kernel plan")
    model = _model(2, 1250, 6, 32, torch.float32, device, None, scale=0.1)
    spins = torch.randint(0, 2, (3, model.n_sites), generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    spins = spins.to(torch.int8)
    lp_ffma = ops.pixelcnn_log_psi_kernel(model, spins)
    monkeypatch.setenv("NAQS_PIXELCNN_MATH", "tf32")
    monkeypatch.setenv("NAQS_PIXELCNN_PROFILE", "1")
    capfd.readouterr()
    lp_tf32 = ops.pixelcnn_log_psi_kernel(model, spins)
    assert "threads=256 pipe=0" in capfd.readouterr().err
    torch.testing.assert_close(lp_tf32, lp_ffma, atol=0, rtol=1e-3)


def test_small_batches_sample_with_ffma(device, monkeypatch):
    """In a tensor-core mode, batches of at most ops.SMALL_SAMPLE_PER_SM samples per SM
    are drawn with FFMA products (bitwise the default mode's samples), larger ones with
    the tensor cores; exact_sample reports which (last_sampler_path)."""
    if device.type != "cuda":
        pytest.skip("a CUDA kernel switch")
    model = _model(4, 4, 3, 32, torch.float32, device, 0)
    small = ops.SMALL_SAMPLE_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count
    u = _uniforms(small + 1, 16, device)
    monkeypatch.delenv("NAQS_PIXELCNN_TF32_SMALL_SAMPLES", raising=False)
    monkeypatch.delenv("NAQS_PIXELCNN_MATH", raising=False)
    s_ffma, lp_ffma = exact_sample(model, small, uniforms=u[:small])
    monkeypatch.setenv("NAQS_PIXELCNN_MATH", "tf32")
    s_small, lp_small = exact_sample(model, small, uniforms=u[:small])
    assert last_sampler_path() == "kernel-cuda"
    assert torch.equal(s_small, s_ffma) and torch.equal(lp_small, lp_ffma)
    exact_sample(model, small + 1, uniforms=u)
    assert last_sampler_path() == "kernel-cuda-tf32"
    monkeypatch.setenv("NAQS_PIXELCNN_TF32_SMALL_SAMPLES", "1")
    s_tc, lp_tc = exact_sample(model, small, uniforms=u[:small])
    assert last_sampler_path() == "kernel-cuda-tf32"
    assert not torch.equal(lp_tc, lp_ffma)  # the tensor cores' rounding shows


def test_engine_math_switch(monkeypatch):
    """ops.use_engine_math sets the CUDA products' arithmetic for a block of code and
    restores the previous setting; unknown modes are refused by it and by VMCConfig."""
    from naqs.vmc import VMCConfig

    monkeypatch.delenv("NAQS_PIXELCNN_MATH", raising=False)
    assert ops.engine_math() == "ffma"
    with ops.use_engine_math("tf32"):
        assert ops.engine_math() == "tf32"
        with ops.use_engine_math("3xtf32"):
            assert ops.engine_math() == "3xtf32"
        assert ops.engine_math() == "tf32"
    assert ops.engine_math() == "ffma" and "NAQS_PIXELCNN_MATH" not in os.environ
    with pytest.raises(ValueError, match="engine math must be one of"):
        with ops.use_engine_math("bf16"):
            pass
    with pytest.raises(ValueError, match="engine_math must be one of"):
        VMCConfig(engine_math="bf16").validate()


def test_local_energy_kernel_path_used(device):
    model = _model(3, 3, 2, 4, torch.float64, device)
    ham = TransverseFieldIsing(square(3, 3), gamma=0.7)
    spins, lp = exact_sample(model, 10, uniforms=_uniforms(10, 9, device))
    from naqs.local_energy import last_local_energy_path

    e1 = local_energy(model, ham, spins, log_psi=lp)
    assert last_local_energy_path() == f"kernel-{device.type}"
    e2 = local_energy(model, ham, spins, use_kernel=False)
    torch.testing.assert_close(e1, e2, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("spin_flip", [False, True])
def test_symmetric_model(device, spin_flip):
    lat = square(3, 3)
    base = _model(3, 3, 2, 5, torch.float64, device, None)
    perms, fl = lat.symmetry_group(spin_flip=spin_flip)
    model = SymmetricModel(base, perms, fl).to(device)
    n, batch = 9, 16
    u = _uniforms(batch, n, device)
    transforms = torch.randint(0, model.n_transforms, (batch,), generator=torch.Generator().manual_seed(2))
    s_ref, _ = model.sample_reference(batch, uniforms=u, transforms=transforms)
    s_k, lp_k = exact_sample(model, batch, uniforms=u, transforms=transforms)
    assert torch.equal(s_k, s_ref)
    torch.testing.assert_close(ops.pixelcnn_log_psi_kernel(model, s_k), model.log_psi(s_k), atol=1e-10, rtol=0)
    for ham in (TransverseFieldIsing(lat, gamma=1.0), Heisenberg(lat, j2=0.5)):
        conn = ham.connections(s_k)
        ref = connected_log_psi_reference(model, s_k, conn.flips, conn.counts)
        got = ops.connected_log_psi(model, s_k, conn.flips, conn.counts)
        _assert_connected_close(got, ref, 1e-9)
        e1 = local_energy(model, ham, s_k, log_psi=ops.pixelcnn_log_psi_kernel(model, s_k))
        e2 = local_energy(model, ham, s_k, use_kernel=False)
        torch.testing.assert_close(e1, e2, atol=1e-9, rtol=1e-9)


# (lx, ly, blocks, channels, magnetization)
CACHE_SHAPES = [(1, 5, 2, 3, None), (5, 1, 2, 4, None), (4, 3, 2, 8, 2), (5, 4, 3, 32, None)]


@pytest.mark.parametrize("shape", CACHE_SHAPES, ids=lambda s: "{}x{}-L{}-C{}-M{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_sampler_activations_feed_local_energy(device, shape, dtype):
    """The sampling walk can keep every activation and the prefix sums of its samples
    (exact_sample(return_cache=True)); the local energy of those samples then skips its
    forward walk. Same samples and log psi as without; the same local energies: bit for
    bit on the CPU (one walker computes both), to the summation order of the two CUDA
    walks there (sampler: one site at a time; forward walk: whole rows)."""
    lx, ly, blocks, channels, mag = shape
    model = _model(lx, ly, blocks, channels, dtype, device, mag, scale=0.3)
    n = model.n_sites
    u = _uniforms(24, n, device)
    spins, log_psi, cache = exact_sample(model, 24, uniforms=u, return_cache=True)
    s0, lp0 = exact_sample(model, 24, uniforms=u)
    assert isinstance(cache, ops.ActivationCache)
    assert torch.equal(spins, s0) and torch.equal(log_psi, lp0)
    blocks_shape = (24, blocks, ly, lx, channels)
    assert cache.store_h.shape == blocks_shape and cache.prefix.shape == (24, n + 1, 2)
    torch.testing.assert_close(torch.view_as_complex(cache.prefix[:, -1].contiguous()), log_psi, atol=1e-12, rtol=0)
    lattice = square(lx, ly)
    for ham in (TransverseFieldIsing(lattice, gamma=0.7), Heisenberg(lattice, j2=0.5)):
        with_cache = local_energy(model, ham, spins, log_psi=log_psi, cache=cache)
        without = local_energy(model, ham, spins, log_psi=log_psi)
        if device.type == "cpu":
            assert torch.equal(with_cache, without)
        else:
            tol = 1e-11 if dtype == torch.float64 else 1e-5
            torch.testing.assert_close(with_cache, without, atol=tol, rtol=tol)
        reference = local_energy(model, ham, spins, use_kernel=False)
        tol = 1e-9 if dtype == torch.float64 else 1e-3
        torch.testing.assert_close(with_cache, reference, atol=tol, rtol=tol)


def test_activation_cache_misuse(device):
    """A cache for other spins, for weights changed since, or for a SymmetricModel is
    refused with a clear error; exact_sample of a SymmetricModel keeps none; the three
    storage tensors of the op go together."""
    model = _model(3, 3, 2, 4, torch.float64, device, None)
    spins, log_psi, cache = exact_sample(model, 8, uniforms=_uniforms(8, 9, device), return_cache=True)
    ham = TransverseFieldIsing(square(3, 3), gamma=1.0)
    other = spins.clone()
    other[0, 0] = -other[0, 0]
    with pytest.raises(ValueError, match="other spins"):
        local_energy(model, ham, other, cache=cache)
    other.copy_(spins)  # the cache holds its own copy of the spins
    spins[0, 0] = -spins[0, 0]
    with pytest.raises(ValueError, match="other spins"):
        local_energy(model, ham, spins, cache=cache)
    spins.copy_(other)
    local_energy(model, ham, spins, log_psi=log_psi, cache=cache)  # unchanged: accepted
    with torch.no_grad():  # an optimizer step changes the weights in place
        model.out_bias.add_(0.1)
    with pytest.raises(ValueError, match="weights changed"):
        local_energy(model, ham, spins, log_psi=log_psi, cache=cache)
    perms, fl = square(3, 3).symmetry_group()
    symmetric = SymmetricModel(model, perms, fl).to(device)
    s2, _, none = exact_sample(symmetric, 8, uniforms=_uniforms(8, 9, device), return_cache=True)
    assert none is None
    conn = ham.connections(s2)
    with pytest.raises(ValueError, match="SymmetricModel"):
        ops.connected_log_psi(symmetric, s2, conn.flips, conn.counts, cache=cache)
    conn = ham.connections(spins)
    with pytest.raises(ValueError, match="come together"):
        ops._C.pixelcnn_connected(ops._packed_weights(model), 3, 3, None, spins, conn.flips, conn.counts,
                                  1 << 30, store_h=cache.store_h)
    with pytest.raises(ValueError, match="must have shape"):
        ops._C.pixelcnn_connected(ops._packed_weights(model), 3, 3, None, spins[:4], conn.flips[:4],
                                  conn.counts[:4], 1 << 30, store_h=cache.store_h, store_v=cache.store_v,
                                  prefix=cache.prefix[:4])


def test_gradcheck(device):
    model = _model(3, 2, 2, 3, torch.float64, device, 0, scale=0.5)
    spins, _ = model.sample_reference(5, uniforms=_uniforms(5, 6, device))
    params = list(model.parameters())

    def f(*ps):
        return ops.PixelCNNLogPsi.apply(model, spins, *ps)

    # gradcheck perturbs the parameters in place; the kernel forward reads them anew
    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6)
    value = ops.pixelcnn_log_psi(model, spins)
    torch.testing.assert_close(value, model.log_psi(spins), atol=1e-10, rtol=0)
    loss = value.real.sum() + value.imag.sum()
    loss.backward()
    g_kernel = [p.grad.clone() for p in params]
    model.zero_grad()
    ref = model.log_psi(spins)
    (ref.real.sum() + ref.imag.sum()).backward()
    for a, b in zip(g_kernel, [p.grad for p in params]):
        torch.testing.assert_close(a, b)


def test_paths(device):
    model = _model(2, 2, 1, 2, torch.float32, device)
    assert ops.pixelcnn_sample_path(model) == f"kernel-{device.type}"
    assert ops.connected_log_psi_path(model, None) == f"kernel-{device.type}"


# ---------------------------------------------------------------------- bad inputs
def _weights(model):
    return ops._packed_weights(model)


# (expected exception, regex, call) with w = packed weights of a float32 3x3 network,
# u = uniforms [4, 9], spins = ones [4, 9], flips/counts = the 9 single flips.
BAD_CALLS = [
    ("TypeError", "uniforms must have dtype Double", "_C.pixelcnn_sample(w, 3, 3, None, u.float())"),
    ("ValueError", "size 9", "_C.pixelcnn_sample(w, 3, 3, None, u[:, :8].contiguous())"),
    ("ValueError", "contiguous", "_C.pixelcnn_sample(w, 3, 3, None, torch.rand(9, 4, dtype=torch.float64, device=dev).t())"),
    ("ValueError", "8 tensors", "_C.pixelcnn_sample(w[:7], 3, 3, None, u)"),
    ("ValueError", "wh must have shape", "_C.pixelcnn_sample(w[:4] + [w[4][:, :, :3].contiguous()] + w[5:], 3, 3, None, u)"),
    ("TypeError", "dtype", "_C.pixelcnn_sample(w[:2] + [w[2].double()] + w[3:], 3, 3, None, u)"),
    ("ValueError", "magnetization", "_C.pixelcnn_sample(w, 3, 3, 2, u)"),
    ("ValueError", "only \\+1 and -1", "_C.pixelcnn_log_psi(w, 3, 3, None, torch.zeros(4, 9, dtype=torch.int8, device=dev))"),
    ("TypeError", "Char", "_C.pixelcnn_log_psi(w, 3, 3, None, spins.float())"),
    ("ValueError", "connection", "_C.pixelcnn_connected(w, 3, 3, None, spins, flips + 20, counts, 1 << 20)"),
    ("ValueError", "connection", "_C.pixelcnn_connected(w, 3, 3, None, spins, flips, counts + 1, 1 << 20)"),
    ("ValueError", "flips must have size 4", "_C.pixelcnn_connected(w, 3, 3, None, spins, flips[:3].contiguous(), counts, 1 << 20)"),
    ("TypeError", "Long", "_C.pixelcnn_connected(w, 3, 3, None, spins, flips.int(), counts, 1 << 20)"),
    ("ValueError", "contiguous", "_C.pixelcnn_connected(w, 3, 3, None, spins, flips.transpose(0, 1).contiguous().transpose(0, 1), counts, 1 << 20)"),
    ("ValueError", "spins must have size 9", "ops.pixelcnn_log_psi_kernel(model, torch.ones(4, 8, dtype=torch.int8, device=dev))"),
]

_BAD_SETUP = """
import torch
from naqs import ops, _C
from naqs.models.pixelcnn import PixelCNN
dev = torch.device({dev!r})
torch.manual_seed(0)
model = PixelCNN(3, 3, 2, 4).to(dev)
w = ops._packed_weights(model)
u = torch.rand(4, 9, dtype=torch.float64).to(dev)
spins = torch.ones(4, 9, dtype=torch.int8, device=dev)
flips = torch.full((4, 9, 2), -1, dtype=torch.int64, device=dev)
flips[:, :, 0] = torch.arange(9, device=dev)
counts = torch.full((4,), 9, dtype=torch.int64, device=dev)
"""


@pytest.mark.parametrize("bad", BAD_CALLS, ids=[f"{i}" for i in range(len(BAD_CALLS))])
def test_bad_inputs(device, bad):
    """Bad input is a Python exception with a clear message, never a crash. On CUDA each
    call runs in its own process, so that a crash is reported as this test failing."""
    exc, pattern, call = bad
    if device.type == "cpu":
        env = {}
        exec(_BAD_SETUP.format(dev="cpu"), env)
        with pytest.raises({"TypeError": TypeError, "ValueError": ValueError}[exc], match=pattern):
            eval(call, env)
        return
    import subprocess
    import sys

    code = _BAD_SETUP.format(dev="cuda") + f"""
import re
try:
    {call}
except {exc} as err:
    assert re.search({pattern!r}, str(err)), str(err)
    print("RAISED-OK")
"""
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "RAISED-OK" in proc.stdout, (
        f"{call}: rc={proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    )


def test_bad_device_mix():
    """Spins on the CPU with weights on the GPU (CUDA only)."""
    _require_cuda()
    from naqs import _C

    model = _model(3, 3, 2, 4, torch.float32, torch.device("cuda"))
    with pytest.raises(ValueError, match="weights are on"):
        _C.pixelcnn_log_psi(ops._packed_weights(model), 3, 3, None, torch.ones(4, 9, dtype=torch.int8))


test_bad_device_mix = pytest.mark.cuda(test_bad_device_mix)
