// The CUDA row-cached PixelCNN walker's kernel, walk_kernel (see ../walker.h for the algorithm).
//
// Persistent kernel: each CTA (512 threads for float, 256 for double) owns a tile of
// `tile` jobs (samples or connections; at most `rows`, 2 rows in the row walks) at a
// time and walks them with only __syncthreads() between layers: jobs are independent,
// so no grid-wide sync. All the network work is done by one routine, a *pass*: layer l
// of one branch (horizontal or vertical) at row y for the positions x in [xb, xe) of
// every job of the tile. Its
// (job, position) pairs are cut into chunks of up to `rows` pairs (2 rows on vertical
// segment passes with FFMA products, see pass_seg); per chunk
//   1. the chunk's inputs are copied into shared memory with cp.async (16-byte copies
//      where aligned, zero-fill outside the lattice): on passes over rows (layers l > 0,
//      4 | C) the row segments the chunk's windows need, double-buffered: each warp
//      issues the next chunk's copies when its share of this chunk's product is done
//      (before it, in the register-B TF32 instances) (pass_seg); otherwise
//      the 3x3 causal windows ([rows][K]) tap by tap, all in flight at once. The layer's
//      weights ([K][C4]) were copied once per pass, started during the previous pass's
//      last chunk (one bulk copy on an mbarrier in the 32-channel float FFMA walks,
//      cp.async elsewhere);
//   2. [rows x K] x [K x C]: FP32/FP64 FFMA by default, each thread a 4 (rows) x 4
//      (channels) register tile over a K slice; NAQS_PIXELCNN_MATH=3xtf32 | tf32 uses
//      m16n8k8 TF32 tensor-core MMAs instead (float networks, 8 | C <= 32, 512-thread
//      kernels and a 256-thread TF32 one for 32 channels; one kernel instance per mode;
//      NAQS_PIXELCNN_WGMMA=1: the TF32 row walks' blocks l > 0 on sm_90a's warpgroup
//      MMA, pass_seg_wg); the K slices are reduced through shared memory;
//   3. bias, ReLU, residual; the result goes to the row ring (or the storage).
// Which passes a walk runs:
//   kSample: site by site (the draw at site i needs every layer at site i): one
//     horizontal pass per block with a single position (each starts the next block's
//     weights and windows during its finishing phase); at the end of each row the
//     vertical branch of every block as one pass over the whole row.
//   kForward, kConnected: the spins are given, so nothing is sequential within a row:
//     per row and block one horizontal and one vertical pass over the whole row (rows
//     = tile x Lx pairs), then the conditionals of the row's sites. Same FLOPs as the
//     site walk, ~Lx times fewer dependent steps. kConnected passes cover only the
//     columns of the light cone of the tile's flips (../cone.h); every other position
//     is read from the sample's storage, and passes with no columns are skipped.
// Row rings (3 rows of h and v per block per job) live in global memory (scratch).
// NAQS_PIXELCNN_PROFILE=1 prints per-phase clock64 counters of every walk (stderr).
// This header is the kernel only: walker.cu holds the host side (plan, walk, the choice of
// instance) and the walk_*.cu files compile its instances, a few each (walk_instances.h).
// Includes only the CUDA runtime.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "../conditional.h"
#include "../cone.h"
#include "walk_instances.h"
#include "walk_layout.h"
#include "wgmma.cuh"

namespace naqs {
namespace pixelcnn {
namespace cuda {
namespace {

// a / d for 0 <= a <= a_max by one multiply-high: with m = ceil(2^32 / d) = (2^32 + e) / d,
// e < d, a m / 2^32 = a / d + a e / (d 2^32), and the excess stays below 1 / d (the
// smallest distance of a / d to the next integer) when a_max d <= 2^32. Integer
// division by a run-time divisor costs ~25 instructions on the GPU and ran several
// times per copied unit and per output; pair and column indices stay below 2^16
// (lattices up to kMaxWidth wide). d = 1 (m would be 2^32) takes m = 0 and adds a
// itself through a mask; larger a_max d fall back to the plain division.
struct FastDiv {
  unsigned m = 0;
  unsigned id = 0xffffffffu;  // d = 1: all ones (a / 1 = mulhi(a, 0) + a), else 0
  int d = 1;
  int slow = 0;  // a_max d > 2^32: a / d
  FastDiv() = default;
  __device__ FastDiv(int d_, long long a_max)
      : m(d_ > 1 ? 0xffffffffu / unsigned(d_) + 1u : 0u),
        id(d_ == 1 ? 0xffffffffu : 0u),
        d(d_),
        slow(d_ > 1 && a_max * d_ > (1ll << 32)) {}
  // (d = 1 through the mask: one branch fewer per division)
  __device__ int div(int a) const { return slow ? a / d : int(__umulhi(unsigned(a), m) + (unsigned(a) & id)); }
};

// One chunk of the segment path (pass_seg): first pair, positions per job, pairs,
// input channels per column, row stride of a segment buffer, and the chunk's first job
// and position (p0 = j0 nx + q0).
struct SegArgs {
  int p0, nx, nr, cin, RS, j0, q0;
  FastDiv by_nx;   // division by nx
  FastDiv by_cin;  // division by cin (k -> window column)
};

// The FFMA product's tile map (Ctx::product) of the running walk, set by thread 0 at the
// start: a shared word, not a Ctx member (no register of the walk's state).
__shared__ int tile_map_sh;

template <typename T>
struct Vec4 {
  T v[4];
};

__device__ __forceinline__ Vec4<float> load4_ro(const float* p) {
  const float4 q = __ldg(reinterpret_cast<const float4*>(p));
  return Vec4<float>{{q.x, q.y, q.z, q.w}};
}
__device__ __forceinline__ Vec4<double> load4_ro(const double* p) {
  const double2 a = __ldg(reinterpret_cast<const double2*>(p));
  const double2 b = __ldg(reinterpret_cast<const double2*>(p) + 1);
  return Vec4<double>{{a.x, a.y, b.x, b.y}};
}
__device__ __forceinline__ Vec4<float> load4_sh(const float* p) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  return Vec4<float>{{q.x, q.y, q.z, q.w}};
}
__device__ __forceinline__ Vec4<double> load4_sh(const double* p) {
  const double2 a = reinterpret_cast<const double2*>(p)[0];
  const double2 b = reinterpret_cast<const double2*>(p)[1];
  return Vec4<double>{{a.x, a.y, b.x, b.y}};
}
// Two elements (8 bytes of float: a half warp reading 128 contiguous bytes is one
// wavefront), for the finishing loop of the 512-thread segment passes.
template <typename T>
struct Vec2 {
  T v[2];
};
__device__ __forceinline__ Vec2<float> load2_sh(const float* p) {
  const float2 q = *reinterpret_cast<const float2*>(p);
  return Vec2<float>{{q.x, q.y}};
}
__device__ __forceinline__ Vec2<double> load2_sh(const double* p) {
  const double2 q = *reinterpret_cast<const double2*>(p);
  return Vec2<double>{{q.x, q.y}};
}
__device__ __forceinline__ void store2(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }
__device__ __forceinline__ void store2(double* p, double a, double b) {
  *reinterpret_cast<double2*>(p) = make_double2(a, b);
}

// 16-byte shared-memory stores (a quarter warp writing 128 contiguous bytes is
// conflict-free; four scalar stores of a 4 x 4 tile were 4-way conflicts); also used
// for 16-byte-aligned global stores.
__device__ __forceinline__ void store4_sh(float* p, const float (&a)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(a[0], a[1], a[2], a[3]);
}
__device__ __forceinline__ void store4_sh(double* p, const double (&a)[4]) {
  reinterpret_cast<double2*>(p)[0] = make_double2(a[0], a[1]);
  reinterpret_cast<double2*>(p)[1] = make_double2(a[2], a[3]);
}

// cp.async global -> shared of 4, 8 or 16 bytes; src == nullptr writes zeros.
template <int kBytes>
__device__ __forceinline__ void cp_async(void* dst, const void* src, const void* dummy) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int n = src ? kBytes : 0;
  const void* s = src ? src : dummy;
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(d), "l"(s), "n"(kBytes), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

// Bulk copies (sm_90): one thread moves a contiguous block global -> shared through the
// copy engine (one instruction where cp.async takes one per 16 bytes and thread), with
// its completion counted in bytes on an mbarrier of one arrival per phase (the issuing
// thread's, which announces the bytes); the waiting threads spin on the phase parity.
__device__ __forceinline__ unsigned smem_u32(const void* p) { return unsigned(__cvta_generic_to_shared(p)); }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define NAQS_BULK_COPY 1
__device__ __forceinline__ void mbar_init(unsigned long long* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n"
               "fence.mbarrier_init.release.cluster;\n" ::"r"(smem_u32(bar))
               : "memory");
}
// bytes: a multiple of 16, both ends 16-byte aligned. The proxy fence: the generic-proxy
// accesses of this thread before it (and, through the barrier that preceded it, the
// CTA's reads of dst) come before the copy engine's writes.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, unsigned long long* bar) {
  asm volatile(
      "fence.proxy.async.shared::cta;\n"
      "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%2], [%3], %1, [%0];\n" ::"r"(smem_u32(bar)),
      "r"(bytes), "r"(smem_u32(dst)), "l"(src)
      : "memory");
}
__device__ __forceinline__ void mbar_wait(unsigned long long* bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
  } while (!done);
}
#endif

// Tensor-core math (float networks only, NAQS_PIXELCNN_MATH): round to TF32, and one
// m16n8k8 TF32 MMA with FP32 accumulation (D += A B).
__device__ __forceinline__ unsigned to_tf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
// Round-to-nearest (ties away) to TF32 for a finite x as the bits an MMA takes: the MMA
// ignores the 13 low mantissa bits, so adding half of their unit is enough (one integer
// add instead of cvt.rna's compare and add; infinities and NaNs come out as NaN).
__device__ __forceinline__ unsigned rna_bits(float x) { return __float_as_uint(x) + 0x1000u; }
// ... and that value as a float (the MMA's operand)
__device__ __forceinline__ float tf32_round(float x) { return __uint_as_float(rna_bits(x) & 0xffffe000u); }
// x stored with half a TF32 unit added to its bits (NAQS_PIXELCNN_WG_ROUND=3, Ctx::wg_round):
// an MMA that truncates it takes x rounded (rna_bits), and tf32_unbias gives x back
// exactly (integer add and subtract: no rounding, whatever the exponent)
__device__ __forceinline__ float tf32_bias(float x) { return __uint_as_float(rna_bits(x)); }
__device__ __forceinline__ float tf32_unbias(float x) { return __uint_as_float(__float_as_uint(x) - 0x1000u); }
__device__ __forceinline__ void mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}


// kMath: the tensor-core mode compiled into this kernel instance (kFFMA: none, so the
// default kernel carries no MMA code and its registers); `math` is kMath when the
// network allows it (float, weights in shared memory, 8 | C <= 32), else kFFMA.
// kBulkW: the pass's weights staged by one bulk copy (stage_weights; see kernel_for for
// the instances that do).
template <typename T, int kMath = kFFMA, int kThr = 512, int kCC = 0, bool kBulkW = false, bool kPipe = false,
          bool kWG = false>
struct Ctx {
  Dims d;
  Weights<T> w;
  // Columns walked per block and row, [L][Ly] packed lo | hi << 16 (empty: lo > hi),
  // filled per tile from its Cone (../cone.h): one shared-memory word per test keeps
  // the copy loops' registers low. Everything else is read from the storage.
  const int* cols_h;
  const int* cols_v;
  int tile, rows, S, WS, pipeline, math;
  // kBulkW instances: bulk = 1 when the weights can go by one bulk copy on wbar (WS = C4:
  // unpadded, as in global memory; the weight tensors 16-byte aligned); wpending: it is in
  // flight, wpar: the parity of its mbarrier phase
  unsigned long long* wbar;
  int bulk = 0;
  mutable int wpending = 0, wpar = 0;
  int nthreads;  // blockDim.x (the kernel's template value: a compile-time constant)
  int prefetch;  // kSample: single-position passes start the next block's windows early
  int red_swz;     // column mask of red's swizzle (C4 - 1 for a power-of-two C4, else 0)
  int ncol;        // segment path: columns of one segment buffer (0: path off), see pass_seg
  // segment path, vertical passes with FFMA products: chunks of 2 rows pairs in buffers of
  // ncol_v columns (a v column holds C channels, not 2C); 0: chunks as on every other pass
  int ncol_v;
  int seg_min_nx;  // segment path: only for passes of at least this many positions per job
  T* xs;           // [rows][S]            gathered windows of one chunk (or 2 segment buffers)
  T* red;          // [ks][rows4][C4]      partial sums of the K slices
  T* red_b = nullptr;  // kPipe: the second K-split buffer (pass_seg_pipe)
  int block0_seg = 1;  // kPipe: block 0 by pass_seg_pipe and pass_v0 (0: windows, A/B)
  // kWG (pass_seg_wg): the pass's weights and the two A buffers (shared memory) and every
  // block's weights in the wgmma layout (global, walk()'s packing)
  float* wg_b = nullptr;
  float* wg_a = nullptr;
  const float* wg_w = nullptr;
  // kWG: how the MMAs' operands become TF32 values (they ignore the 13 low mantissa bits;
  // walk(), NAQS_PIXELCNN_WG_ROUND, default 3):
  // 2 every activation this instance stores is rounded to TF32 (so the copies are);
  // 1 the copied operands are rounded in shared memory once landed (round_wg); 0 not
  // at all (truncated: products biased toward zero; A/B only); 3 every activation is
  // stored biased (tf32_bias: bits + half a TF32 unit), so that the MMAs' truncation
  // rounds it as rna_bits does, and the exact readers take it back (tf32_unbias: the
  // residuals in finish_wg, the output layer in row_out; block 0's mma.sync product
  // takes v_0 without its own rna_bits). A walk's storage is then in this form: the
  // connected walks that read it run on this instance too (same plan conditions);
  // storage kept by the sampler (WalkArgs::kept_storage) is biased by walk() for the walk.
  int wg_round = 3;
  T* hcur;         // [tile][C]            h_{L-1} at the current site (kSample; else empty)
  T* wsm;          // [Kmax][WS]           the pass's weights (null: read them from global)
  T* raw;          // [tile][out_chunk][4] raw outputs of a chunk of a row (row walk)
  Member<T>* mem;  // [tile]
  RowSrc<T>* rsrc;  // [tile][3][2]        segment path: input rows of the pass (job, dy, part)
  T** orow;         // [tile]              segment path: output row of the pass (column 0)
  // NAQS_PIXELCNN_PROFILE=1: this CTA's clock64 counters (thread 0; in shared memory: a
  // global read-modify-write per tick stalled warp 0, and with it the next barrier, for
  // hundreds of cycles), else null. Slots (kProfSlots): 0 gather+wait, 1 product, 2
  // finishing phase, 3 row outputs, 4 whole kernel, 5 chunks; pass_seg splits its chunks
  // further: 6 setup (row tables, first gather), 7 the next chunk's copies, 8 waiting for
  // this chunk's copies (0: the barrier after it), 9 the product (1: the barrier after
  // it), 10 staging the next pass's weights, 11 the finishing loop (2: its barrier);
  // 8-11 in the 256-thread TF32 instance only (tick_fine); 12: kSample's row-end vertical
  // passes, whole (their phases are counted in 0-2 and 6 as well). The pipelined passes
  // (kPipe, pass_seg_pipe): 15 row tables, 6 B fragments and the first two chunks'
  // copies, 13 the barriers, 7 copies, 8 waits, 9 products, 11 finishing, 14 the
  // barrier at the end of a pass; slots 0-2 then hold block 0's window passes only.
  long long* prof;

  // The segment chunks' finer slots 8-11 only in the 256-thread TF32 instance (in the
  // 128-register ones the extra live counters added spills to the per-chunk code).
  __device__ void tick_fine(int slot, long long& t0) const {
    if constexpr (kBHold) tick(slot, t0);
  }
  __device__ void tick(int slot, long long& t0) const {
    if (prof && threadIdx.x == 0) {
      const long long t1 = clock64();
      prof[slot] += t1 - t0;
      t0 = t1;
    }
  }

  // Column of channel c in row r of red: 8-column groups XOR-swizzled by r % 4. The MMA
  // product stores rows g = 0..7 of a fragment at the same columns, which on plain
  // [row][C4] rows (C4 = 32) all fall in one bank (8-way conflicts, ~36% of all
  // shared-memory wavefronts of a TF32 walk); swizzled, a half-warp's 8-byte stores hit
  // 16 distinct bank pairs. 4-groups stay contiguous (the FFMA product's 16-byte stores
  // and bias_relu4's 16-byte loads).
  __device__ int red_col(int r, int c) const { return c ^ (((r & 3) << 3) & red_swz); }

  __device__ static bool in_cols(int packed, int x) { return x >= (packed & 0xffff) && x <= (packed >> 16); }

  // Slot of row r in a write buffer of m.R rows: a 3-row ring, or the storage (R = Ly).
  __device__ static int slot(const Member<T>& m, int r) { return m.R == 3 ? r % 3 : r; }

  // Row r of branch h / v, block l, of member m as a RowSrc (the rule of h_at / v_at).
  __device__ RowSrc<T> row_src(bool h, const Member<T>& m, int l, int r) const {
    RowSrc<T> s;
    s.ring = (h ? m.hw : m.vw) + (l * m.R + slot(m, r)) * d.lx * int64_t(d.channels);
    const T* p = h ? m.hp : m.vp;
    s.store = p ? p + (l * d.ly + r) * d.lx * int64_t(d.channels) : nullptr;
    s.cols = (h ? cols_h : cols_v)[l * d.ly + r];
    s.pad = 0;
    return s;
  }

  __device__ const T* h_at(const Member<T>& m, int l, int r, int x) const {
    if (m.hp && !in_cols(cols_h[l * d.ly + r], x)) return m.hp + ((l * d.ly + r) * d.lx + x) * int64_t(d.channels);
    return m.hw + ((l * m.R + slot(m, r)) * d.lx + x) * int64_t(d.channels);
  }
  __device__ const T* v_at(const Member<T>& m, int l, int r, int x) const {
    if (m.vp && !in_cols(cols_v[l * d.ly + r], x)) return m.vp + ((l * d.ly + r) * d.lx + x) * int64_t(d.channels);
    return m.vw + ((l * m.R + slot(m, r)) * d.lx + x) * int64_t(d.channels);
  }

  // Windows of the pairs p0 .. p0+nr-1 (pair p: job p / nx, position xb + p % nx) into
  // xs rows 0..nr-1; k = tap * cin + c. Horizontal branch of block l at (y, x):
  // [h_{l-1} (spin for l = 0, causal tap 8 masked), down(v_l)] at rows y-2..y, cols
  // x-2..x. Vertical branch: v_{l-1} (spin for l = 0) at rows y-2..y, cols x-1..x+1.
  // Issues cp.async copies (and plain stores for spins); the caller waits.
  // skip_center: leave the h_(l-1) part of tap 8, the site itself, alone (the previous
  // pass writes it there directly, see pass()'s prefetch).
  __device__ void gather(bool is_h, int l, int y, int xb, int nx, int p0, int nr, T* xs,
                         bool skip_center = false) const {
    if constexpr (kPipe) {
      if (block0_seg && is_h && l == 0) {
        gather_h0(y, xb, nx, p0, nr, xs);
        return;
      }
    }
    const int C = d.channels;
    const int cprev = l == 0 ? 1 : C, cin = is_h ? cprev + C : cprev;
    constexpr int VE = 16 / int(sizeof(T));
    const bool vec = l > 0 && C % VE == 0;  // then cprev, C, cin, S are multiples of VE
    const int ue = vec ? VE : 1;
    // One thread per piece of pu 16-byte units (4 when a piece stays inside one part,
    // i.e. 4 VE | C): the index chain below (pair, tap, job, member, cone test, address)
    // runs once per piece instead of once per unit. It was ~50 instructions a unit, and
    // the sampler's single-position passes copy 32 x 9 x 16 units a pass: with one unit
    // per thread and step, issuing them took most of the finishing phase (40% of a
    // sampling walk at 21x21/20, run 57).
    const int pu = vec && C % (4 * VE) == 0 ? 4 : 1;
    const int ppt = cin / (ue * pu);  // pieces per (pair, tap)
    const int total = nr * 9 * ppt;
    const FastDiv by_ppt(ppt, total), by_nx(nx, p0 + nr);
    for (int e = threadIdx.x; e < total; e += nthreads) {
      const int pt = by_ppt.div(e), c = (e - pt * ppt) * pu * ue;
      const int r = pt / 9, tap = pt - 9 * r;
      if (skip_center && tap == 8 && c < cprev) continue;
      const int p = p0 + r, j = by_nx.div(p), x = xb + (p - j * nx);
      const Member<T>& m = mem[j];
      T* dst = xs + r * S + tap * cin + c;
      const T* src = nullptr;
      int spin_at = -1;
      const int yy = y - 2 + tap / 3;
      if (is_h) {
        const int xx = x - 2 + tap % 3;
        const bool in = yy >= 0 && xx >= 0;
        if (c < cprev) {
          if (l == 0) {
            if (in && tap != 8) spin_at = yy * d.lx + xx;
          } else if (in) {
            src = h_at(m, l - 1, yy, xx) + c;
          }
        } else if (in && yy >= 1) {
          src = v_at(m, l, yy - 1, xx) + (c - cprev);
        }
      } else {
        const int xx = x - 1 + tap % 3;
        const bool in = yy >= 0 && xx >= 0 && xx < d.lx;
        if (in) {
          if (l == 0) spin_at = yy * d.lx + xx;
          else src = v_at(m, l - 1, yy, xx) + c;
        }
      }
      if (spin_at >= 0) {
        *dst = T(m.s[spin_at]);
      } else if (pu == 4) {
#pragma unroll
        for (int u = 0; u < 4; ++u) cp_async<16>(dst + u * VE, src ? src + u * VE : nullptr, w.bo);
      } else if (vec) {
        cp_async<16>(dst, src, w.bo);
      } else {
        cp_async<int(sizeof(T))>(dst, src, w.bo);
      }
    }
  }

  // Block 0's horizontal windows in the pipelined instance (block0_seg), in the K order
  // k = tap C + c for down(v_0) (16-byte aligned: 16-byte copies, where the window
  // order tap (1 + C) + c has the C channels of a tap one float off the 16-byte grid and
  // took one 4-byte copy each, 297 a pair, 13% of a TF32 local energy at 12x12/10, run
  // 99), then the 9 spins at 9 C + tap; stage_weights_h0 permutes wh0's rows to match.
  // One thread per (pair, tap, item): items 0, 1 four 16-byte copies each, item 2 the spin.
  __device__ void gather_h0(int y, int xb, int nx, int p0, int nr, T* xs) const {
    constexpr int C = kCC;
    static_assert(kCC == 32, "two 16-channel pieces a tap");
    const FastDiv by_nx(nx, p0 + nr);
    for (int e = threadIdx.x; e < nr * 27; e += nthreads) {
      const int pt = e / 3, item = e - 3 * pt, r = pt / 9, tap = pt - 9 * r;
      const int p = p0 + r, j = by_nx.div(p), x = xb + (p - j * nx);
      const Member<T>& m = mem[j];
      const int yy = y - 2 + tap / 3, xx = x - 2 + tap % 3;
      const bool in = yy >= 0 && xx >= 0;
      if (item == 2) {
        xs[r * S + 9 * C + tap] = in && tap != 8 ? T(m.s[yy * d.lx + xx]) : T(0);  // (tap 8: masked)
      } else {
        const int c = item * 16;
        const T* src = in && yy >= 1 ? v_at(m, 0, yy - 1, xx) + c : nullptr;
        T* dst = xs + r * S + tap * C + c;
#pragma unroll
        for (int u = 0; u < 4; ++u) cp_async<16>(dst + u * 4, src ? src + u * 4 : nullptr, w.bo);
      }
    }
  }
  // wh0 ([9][1 + C][C4]) into wsm in gather_h0's K order.
  __device__ void stage_weights_h0() const {
    constexpr int C = kCC;
    const int n = 9 * (1 + C) * (C / 4);  // 16-byte units
    for (int e = threadIdx.x; e < n; e += nthreads) {
      const int k = e / (C / 4), c = (e - k * (C / 4)) * 4;
      const int src_row = k < 9 * C ? (k / C) * (1 + C) + 1 + k % C : (k - 9 * C) * (1 + C);
      cp_async<16>(wsm + k * WS + c, w.wh0 + src_row * C + c, w.bo);
    }
  }

  // K x C4 weights into shared memory (row stride WS), 16-byte cp.async copies, four
  // to a thread and step when C4 is a multiple of 16 (a row index by a shift for
  // power-of-two rows: the run-time division per unit cost ~20 instructions, and every
  // single-position pass of the sampler stages a block's weights).
  __device__ void stage_weights(int K, const T* __restrict__ W) const {
#ifdef NAQS_BULK_COPY
    if constexpr (kBulkW) {
      if (bulk) {
        if (threadIdx.x == 0) bulk_copy(wsm, W, unsigned(K * d.c4 * sizeof(T)), wbar);
        wpending = 1;
        return;
      }
    }
#endif
    constexpr int VE = 16 / int(sizeof(T));
    const int per_row = d.c4 / VE;  // C4 is a multiple of 4
    const int pu = per_row % 4 == 0 ? 4 : 1;
    const int ppr = per_row / pu;  // pieces per row
    const int n = K * ppr;
    const bool pow2 = (ppr & (ppr - 1)) == 0;
    const int lg = 31 - __clz(ppr);
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
      const int k = pow2 ? e >> lg : e / ppr, c = (e - k * ppr) * pu * VE;
      T* dst = wsm + k * WS + c;
      const T* src = W + k * d.c4 + c;
      if (pu == 4) {
#pragma unroll
        for (int u = 0; u < 4; ++u) cp_async<16>(dst + u * VE, src + u * VE, w.bo);
      } else {
        cp_async<16>(dst, src, w.bo);
      }
    }
  }

  // Waits for this thread's cp.async copies and for the bulk copies (every thread sees
  // them after its wait; the caller's barrier then covers the other threads' cp.async).
  __device__ void wait_copies() const {
    cp_async_wait_all();
#ifdef NAQS_BULK_COPY
    if constexpr (kBulkW) {
      if (wpending) {
        mbar_wait(wbar, unsigned(wpar));
        wpar ^= 1;
        wpending = 0;
      }
    }
#endif
  }

  // K split of a product of rows4 rows: ks groups of ntile thread tiles.
  __device__ void split(int rows4, int C4, int& ntile, int& ks) const {
    ntile = (C4 / 4) * (rows4 / 4);
    ks = nthreads / ntile;
    ks = ks < 1 ? 1 : (ks > kMaxSplit ? kMaxSplit : ks);
  }

  // red[kg] = xs[:, K slice kg] @ W[K slice kg, :]; W is [K][C4]. Thread tile (og, bg):
  // channels 4 og .. 4 og + 3 of rows bg + nbg i (i = 0..3, nbg = rows4 / 4), so the four
  // row groups of a warp read adjacent rows, which sit in different shared-memory banks
  // (window rows: stride S = 4 mod 32 words; segment columns: stride cin + kSegPad).
  // kSeg: xs holds row segments (pass_seg): row r of the window matrix is not stored;
  // its entry k = tap * cin + c (tap = 3 dy + dx) is xs[dy * RS + (cb(r) + dx) * CS + c]
  // with padded columns CS = cin + kSegPad and cb(r) = r + 2 (job of r - first job), i.e.
  // xs[cb(r) * CS + k + dy (RS - 3 cin) + dx kSegPad]; sg: the chunk. A 4-group of k never
  // straddles a column (cin % 4 == 0).
  template <bool kShared, bool kSeg = false>
  __device__ void product(int K, const T* __restrict__ W, int rows4, const T* xs, SegArgs sg = SegArgs{}) const {
    const int C4 = d.c4, ng = C4 / 4, nbg = rows4 / 4;
    const int ws = kShared ? WS : C4;  // row stride of W
    int ntile, ks;
    split(rows4, C4, ntile, ks);
    const int t = threadIdx.x;
    int kg, r0, rstep;
    if (ks > 1) {
      kg = t / ntile;
      r0 = kg < ks ? t - kg * ntile : ntile;
      rstep = ntile;
    } else {
      kg = 0;
      r0 = t;
      rstep = nthreads;
    }
    const int kper = ((K + ks - 1) / ks + 3) & ~3;  // slices start at multiples of 4
    const int k0 = kg * kper, k1 = min(K, k0 + kper);
    const int k4 = k1 > k0 ? k0 + ((k1 - k0) & ~3) : k0;
    const int cin = kSeg ? sg.cin : 1;
    // kSeg: where a window column (3 dy + dx) starts in xs, relative to column 0 of k
    const int row_step = kSeg ? sg.RS - 3 * cin - 2 * kSegPad : 0;  // dx 2 -> dx 0 of dy + 1
    for (int r = r0; r < ntile; r += rstep) {
      // Thread tile r -> (channel group og, row group bg). Tile map 0: og = r % ng (a warp:
      // 8 channel groups x 4 row groups, the 8 lanes of a quarter warp one row group);
      // 1 (C4 = 32, 4 | nbg; the default where it applies): a quarter warp 2 channel
      // groups x 4 row groups, a half warp 4 x 4; 3 (likewise): a quarter warp 4 channel
      // groups x 2 row groups; 2: bg = r % nbg (a quarter warp 8 row groups of one
      // channel group). A 16-byte shared-memory load takes a wavefront per half warp, and
      // one per quarter warp that reads 128 bytes alone (Nsight Compute, run 84: with map 0
      // a weight load is 4 wavefronts, a window load 2, which bounds the product at ~2/3
      // of the FFMA rate; with map 1 both are 2, run 88). (Two expressions, not a helper
      // with reference outputs: that form spilled ~270 instructions of the 255-register
      // TF32 instance, which always takes map 0.)
      const int tm0 = kBRegs ? 0 : tile_map_sh;
      const int tm = (tm0 == 1 || tm0 == 3) && (nbg & 3) ? 0 : tm0;  // (maps 1, 3: 4 | nbg)
      const int og = tm == 0 ? r % ng
                             : (tm == 1 ? (r & 1) | ((r >> 2) & 6) : (tm == 3 ? (r & 3) | ((r >> 2) & 4) : r / nbg));
      const int bg = tm == 0 ? r / ng
                             : (tm == 1 || tm == 3 ? ((r >> (tm == 1 ? 1 : 2)) & 3) | ((r >> 5) << 2) : r % nbg);
      T acc[4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[i][q] = T(0);
      // px[i]: where row i's entry k sits (advanced with k)
      const T* px[4];
      int col = 0, dx = 0, kend = k4;
      if constexpr (kSeg) {
        const FastDiv& by_nx = sg.by_nx;
        col = sg.by_cin.div(k0);
        dx = col % 3;
        kend = min(k4, (col + 1) * cin);
        const T* base = xs + (col / 3) * (sg.RS - 3 * cin) + dx * kSegPad + k0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int rr = min(bg + nbg * i, sg.nr - 1);  // padding rows: any finite row
          px[i] = base + (rr + 2 * by_nx.div(sg.q0 + rr)) * (cin + kSegPad);
        }
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) px[i] = xs + (bg + nbg * i) * S + k0;
      }
      const T* pw = W + og * 4 + int64_t(k0) * ws;
      int k = k0;
#pragma unroll 1
      for (; k < k4; k += 4) {
        if constexpr (kSeg) {
          if (k >= kend) {  // next column of the window: dx + 1, or dx 0 of the next row
            kend = min(k4, kend + cin);
            const int step = ++dx == 3 ? row_step : kSegPad;
            dx = dx == 3 ? 0 : dx;
#pragma unroll
            for (int i = 0; i < 4; ++i) px[i] += step;
          }
        }
        Vec4<T> xv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) xv[i] = load4_sh(px[i]);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const Vec4<T> wv = kShared ? load4_sh(pw + kk * ws) : load4_ro(pw + kk * ws);
#pragma unroll
          for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[i][q] += xv[i].v[kk] * wv.v[q];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) px[i] += 4;
        pw += 4 * ws;
      }
      for (; k < k1; ++k) {  // (never for kSeg: K and the slices are multiples of 4)
        const Vec4<T> wv = kShared ? load4_sh(pw) : load4_ro(pw);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const T xk = *px[i];
          ++px[i];
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[i][q] += xk * wv.v[q];
        }
        pw += ws;
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = bg + nbg * i;
        store4_sh(red + (kg * rows4 + row) * C4 + red_col(row, og * 4), acc[i]);
      }
    }
  }

  // Tensor-core product (float, weights in shared memory, C % 8 == 0, C <= 32):
  // m16n8k8 TF32 MMAs, warp w takes m-tile w % MT (16 rows each, MT = 1 or 2) and the
  // k-steps of group w / MT; red[kg][16 MT][C4] as for the FFMA product. kM:
  // k3xTF32 splits both operands into a TF32 high part and a TF32 remainder and sums
  // lo*hi + hi*lo + hi*hi (about FP32 accuracy); kTF32 is one MMA (10-bit mantissas),
  // operands rounded by rna_bits (the weights once per pass on the segment path,
  // round_weights_tf32).
  // kSeg: xs holds row segments, addressed as in product<., true>; an 8-step of k never
  // straddles a window column (8 | cin), so the k-steps run column by column with plain
  // pointer steps inside a column. Rows beyond nr read row nr - 1.
  template <int kM, bool kSeg = false>
  __device__ void product_mma(int K, int nr, const float* xs, int& ks, int& rstride, SegArgs sg = SegArgs{}) const {
    const int C4 = d.c4, NT = C4 / 8;
    const int MT = nr > 16 ? 2 : 1, KG = int(blockDim.x >> 5) / MT;
    ks = KG;
    rstride = 16 * MT;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
    const int mt = warp % MT, kg = warp / MT;
    const int KS = (K + 7) / 8, kper = (KS + KG - 1) / KG;
    const int s0 = kg * kper, s1 = min(KS, s0 + kper);
    float acc[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[nt][q] = 0.f;
    const float* wb = reinterpret_cast<const float*>(wsm) + tig * WS + g;
    // One k-step: load() takes A rows g, g + 8 of the m-tile at xa[0], xa[4] and
    // xb8[0], xb8[4] (v0, v1: columns tig and tig + 4 inside K) and every B fragment from
    // the weight rows at wk (all of them before the MMAs); mma() rounds and multiplies.
    struct Frag {
      float a[4];
      float b[4][2];
    };
    auto load = [&](Frag& f, const float* xa, const float* xb8, const float* wk, bool v0, bool v1) {
      f.a[0] = v0 ? xa[0] : 0.f;
      f.a[1] = v0 ? xb8[0] : 0.f;
      f.a[2] = v1 ? xa[4] : 0.f;
      f.a[3] = v1 ? xb8[4] : 0.f;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        f.b[nt][0] = nt < NT && v0 ? wk[nt * 8] : 0.f;
        f.b[nt][1] = nt < NT && v1 ? wk[4 * WS + nt * 8] : 0.f;
      }
    };
    auto mma = [&](const Frag& f) {
      unsigned ah[4], al[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        ah[i] = kM == kTF32 ? rna_bits(f.a[i]) : to_tf32(f.a[i]);
        if constexpr (kWG && kM == kTF32) {  // (block 0's h window: v_0 stored biased)
          if (wg_round == 3) ah[i] = __float_as_uint(f.a[i]);
        }
        al[i] = kM == k3xTF32 ? to_tf32(f.a[i] - __uint_as_float(ah[i])) : 0u;
      }
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        if (nt < NT) {
          const float b0 = f.b[nt][0], b1 = f.b[nt][1];
          if (kM == k3xTF32) {
            const unsigned bh[2] = {to_tf32(b0), to_tf32(b1)};
            const unsigned bl[2] = {to_tf32(b0 - __uint_as_float(bh[0])), to_tf32(b1 - __uint_as_float(bh[1]))};
            mma_tf32(acc[nt], al, bh);
            mma_tf32(acc[nt], ah, bl);
            mma_tf32(acc[nt], ah, bh);
          } else {  // kTF32: pass_seg rounded wsm already, pass() did not
            const unsigned bh[2] = {kSeg ? __float_as_uint(b0) : rna_bits(b0), kSeg ? __float_as_uint(b1) : rna_bits(b1)};
            mma_tf32(acc[nt], ah, bh);
          }
        }
      }
    };
    if constexpr (kSeg) {  // (the 256-thread TF32 instance has its own product, product_tf32_regs)
      constexpr int VE = kSegPad;
      const int cin = sg.cin, spc = cin >> 3;  // k-steps per window column
      const int ra = min(mt * 16 + g, nr - 1), rb = min(mt * 16 + g + 8, nr - 1);
      const int oa = (ra + 2 * sg.by_nx.div(sg.q0 + ra)) * (cin + VE) + tig;
      const int ob = (rb + 2 * sg.by_nx.div(sg.q0 + rb)) * (cin + VE) + tig;
      int st = s0;
      int col = sg.by_cin.div(s0 * 8);
      int dy = col / 3, dx = col - 3 * dy;
      while (st < s1) {
        const int se = min(s1, (col + 1) * spc);
        // entry k of row r sits at cb(r) (cin + VE) + k + dy (RS - 3 cin) + dx VE
        const float* col_base = xs + dy * (sg.RS - 3 * cin) + dx * VE + st * 8;
        const float* xa = col_base + oa;
        const float* xb8 = col_base + ob;
        const float* wk = wb + st * 8 * WS;
#pragma unroll 2
        for (; st < se; ++st) {
          Frag f;
          load(f, xa, xb8, wk, true, true);
          mma(f);
          xa += 8;
          xb8 += 8;
          wk += 8 * WS;
        }
        ++col;
        if (++dx == 3) {
          dx = 0;
          ++dy;
        }
      }
    } else {
      const float* xa = xs + (mt * 16 + g) * S + tig;  // rows g and g + 8 of the m-tile
      const float* xb8 = xa + 8 * S;
      for (int st = s0; st < s1; ++st) {
        const int k = st * 8;
        const bool full = k + 8 <= K;
        Frag f;
        load(f, xa + k, xb8 + k, wb + k * WS, full || k + tig < K, full || k + tig + 4 < K);
        mma(f);
      }
    }
    store_mma_partials(acc, NT, mt * 16 + g, kg * rstride);
  }

  // The TF32 training mode's segment-path product (kTF32, 256 threads, 32 channels: the
  // local energies of a training step), written around the MMA. Each warp keeps the B
  // fragments of its K slice in registers for the whole pass (kBRegs, loaded once by
  // load_b_regs: 72 registers), so a k-step reads only its A operands from shared
  // memory. Warp w's K slice is the channel block w of every window column (9 steps, one
  // per column), so all warps run one compile-time schedule (fully unrolled: every A
  // operand an immediate offset from a row pointer):
  //   h (cin 64, 8 blocks a column): warp w = K group w, both m-tiles (32 rows), 8 groups;
  //   v (cin 32, 4 blocks a column): warp w = m-tile w % 2, K group w / 2, 4 groups.
  // Rows beyond nr read row nr - 1. The general loop (product_mma) spent ~30 integer
  // instructions per k-step on column bookkeeping and register copies around 4 MMAs
  // (Nsight Compute, run 26), and 8 of its 12 shared-memory loads a k-step were B.
  // 512 threads (16 warps, at most 128 registers a thread): warps w and w + 8 run warp
  // w's schedule of the 256-thread product for n-tiles 0-1 and 2-3 respectively, so a
  // warp keeps half the B fragments (36 registers) and the SM runs twice the warps; the
  // A operands are read twice as often (local energies 20-40% slower than at 256
  // threads, runs 43 and 49: plan() gives this instance the sampler's walks).
  static constexpr bool kBRegs = kMath == kTF32 && (kThr == 256 || kThr == 512) && kCC == 32;
  static constexpr int kSteps = 9;           // k-steps of a warp's K slice (one per window column)
  static constexpr int kNTW = kThr == 512 ? 2 : 4;  // n-tiles of a warp (8 channels each)
  // 256 threads hold the B fragments for the whole pass (loaded by the first chunk); 512
  // threads reload them per chunk (held across the gathers and the finishing phase they
  // left 128 registers for everything else and spilled 600 bytes)
  static constexpr bool kBHold = kBRegs && kThr == 256;
  // pass_seg issues the next chunk's copies after this chunk's product (not before it);
  // the register-B TF32 instances keep the earlier order (their weight staging relies
  // on the copy groups' order)
  static constexpr bool kLateGather = !kBRegs;
  // Padding of a segment buffer's columns (floats): 16 bytes, or 32 for the register-B
  // product, whose half-warps read 8 bytes from each of 4 adjacent columns (stride = 8
  // mod 32 words: conflict-free; 4 mod 32 would be 2-way).
  static constexpr int kSegPad = kBRegs ? 8 : 16 / int(sizeof(T));

  // This warp's 8-warp schedule slot and its first n-tile.
  __device__ static int breg_slot() { return (threadIdx.x >> 5) & 7; }
  __device__ static int breg_nt0() { return kThr == 512 ? int(threadIdx.x >> 8) * kNTW : 0; }

  __device__ void load_b_regs(bool is_h, unsigned (&breg)[kSteps][kNTW][2]) const {
    const int w8 = breg_slot(), lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
    const int cin = is_h ? 2 * kCC : kCC, kg = is_h ? w8 : w8 >> 1;
    // MMA k index tig: channel 2 tig of the warp's 8-block, tig + 4: channel 2 tig + 1
    // (so that a k-step's A operands are one 8-byte load per row, product_tf32_regs)
    const float* wb = reinterpret_cast<const float*>(wsm) + (kg * 8 + 2 * tig) * (kCC + 8) + breg_nt0() * 8 + g;
#pragma unroll
    for (int j = 0; j < kSteps; ++j)
#pragma unroll
      for (int nt = 0; nt < kNTW; ++nt) {
        breg[j][nt][0] = rna_bits(wb[(j * cin) * (kCC + 8) + nt * 8]);
        breg[j][nt][1] = rna_bits(wb[(j * cin + 1) * (kCC + 8) + nt * 8]);
      }
  }

  // kPipe: the same fragments straight from the layer's weights in global memory ([K][C],
  // read-only path; the pass's first chunk waits for them with its copies).
  __device__ void load_b_regs_global(bool is_h, const float* __restrict__ W, unsigned (&breg)[kSteps][kNTW][2]) const {
    const int w8 = breg_slot(), lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
    const int cin = is_h ? 2 * kCC : kCC, kg = is_h ? w8 : w8 >> 1;
    const float* wb = W + (kg * 8 + 2 * tig) * kCC + breg_nt0() * 8 + g;
#pragma unroll
    for (int j = 0; j < kSteps; ++j)
#pragma unroll
      for (int nt = 0; nt < kNTW; ++nt) {
        breg[j][nt][0] = rna_bits(__ldg(wb + (j * cin) * kCC + nt * 8));
        breg[j][nt][1] = rna_bits(__ldg(wb + (j * cin + 1) * kCC + nt * 8));
      }
  }

  template <bool kH>
  __device__ void product_tf32_regs(int nr, const float* xs, const unsigned (&breg)[kSteps][kNTW][2], int& ks,
                                    int& rstride, const SegArgs& sg, T* rb = nullptr) const {
    constexpr int VE = kSegPad, kCin = kH ? 2 * kCC : kCC, kMT = kH ? 2 : 1;
    static_assert(kCC == 32, "the TF32 register-B product is specialized for 32 channels");
    ks = kH ? 8 : 4;
    rstride = 32;
    const int w8 = breg_slot(), lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
    const int mt0 = kH ? 0 : (w8 & 1), kg = kH ? w8 : w8 >> 1;
    // entry (dy, window column dx, channel c) of pair r: dy RS + (cb(r) + dx)(cin + VE) + c
    const float* p[2 * kMT];
#pragma unroll
    for (int i = 0; i < 2 * kMT; ++i) {
      const int r = min((mt0 + (i >> 1)) * 16 + (i & 1) * 8 + g, nr - 1);
      p[i] = xs + (r + 2 * sg.by_nx.div(sg.q0 + r)) * (kCin + VE) + kg * 8 + 2 * tig;
    }
    // one m-tile after the other (16 accumulators live, not 32: the B registers stay)
#pragma unroll
    for (int m = 0; m < kMT; ++m) {
      float acc[kNTW][4];
#pragma unroll
      for (int nt = 0; nt < kNTW; ++nt)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[nt][q] = 0.f;
#pragma unroll
      for (int dy = 0; dy < 3; ++dy) {
#pragma unroll
        for (int dx = 0; dx < 3; ++dx) {
          const int j = dy * 3 + dx, c = dy * sg.RS + dx * (kCin + VE);
          // (MMA k index tig: channel 2 tig of the 8-block, tig + 4: channel 2 tig + 1;
          // load_b_regs pairs B the same way)
          const float2 va = *reinterpret_cast<const float2*>(p[2 * m] + c);
          const float2 vb = *reinterpret_cast<const float2*>(p[2 * m + 1] + c);
          const unsigned a[4] = {rna_bits(va.x), rna_bits(vb.x), rna_bits(va.y), rna_bits(vb.y)};
#pragma unroll
          for (int nt = 0; nt < kNTW; ++nt) mma_tf32(acc[nt], a, breg[j][nt]);
        }
      }
      store_mma_partials(acc, kNTW, (mt0 + m) * 16 + g, kg * rstride, breg_nt0(), rb);
    }
  }

  // The MMA accumulators of rows row and row + 8 (all NT n-tiles) into the K-split
  // buffer at red row base + row: 8-byte stores at swizzled columns (red_col); acc[i] is
  // n-tile nt0 + i.
  template <int kN>
  __device__ void store_mma_partials(const float (&acc)[kN][4], int NT, int row, int base, int nt0 = 0,
                                     T* rb = nullptr) const {
    const int C4 = d.c4;
    float* rg = reinterpret_cast<float*>(rb ? rb : red) + (base + row) * C4;
#pragma unroll
    for (int nt = 0; nt < kN; ++nt) {
      if (nt < NT) {
        const int col = red_col(row, (nt0 + nt) * 8 + 2 * (threadIdx.x & 3));  // (row + 8) % 4 == row % 4
        *reinterpret_cast<float2*>(rg + col) = make_float2(acc[nt][0], acc[nt][1]);
        *reinterpret_cast<float2*>(rg + 8 * C4 + col) = make_float2(acc[nt][2], acc[nt][3]);
      }
    }
  }

  // kTF32: the pass's weights in wsm rounded to TF32 once (after their copies landed,
  // before the first product), so that the MMAs take them as they are.
  __device__ void round_weights_tf32(int K) const {
    const int n4 = K * (WS / 4);
    float4* w4 = reinterpret_cast<float4*>(wsm);
    for (int e = threadIdx.x; e < n4; e += nthreads) {
      float4 q = w4[e];
      q.x = __uint_as_float(rna_bits(q.x) & 0xffffe000u);
      q.y = __uint_as_float(rna_bits(q.y) & 0xffffe000u);
      q.z = __uint_as_float(rna_bits(q.z) & 0xffffe000u);
      q.w = __uint_as_float(rna_bits(q.w) & 0xffffe000u);
      w4[e] = q;
    }
  }

  // Layer l of one branch at row y, positions [xb, xe), every job of the tile.
  // keep: also copy the result to hcur (single-position horizontal pass of kSample).
  __device__ const T* layer_weights(bool is_h, int l, int& K) const {
    const int C = d.channels, C4 = d.c4;
    K = 9 * ((l == 0 ? 1 : C) + (is_h ? C : 0));
    return is_h ? (l == 0 ? w.wh0 : w.wh + int64_t(l - 1) * 18 * C * C4)
                : (l == 0 ? w.wv0 : w.wv + int64_t(l - 1) * 9 * C * C4);
  }

  // Shared by the finishing phases of pass() and pass_seg(): starts copying the next
  // pass's weights into wsm (after the last product of a pass) ...
  __device__ void stage_next(bool next_h, int next_l) const {
    int K;
    const T* W = layer_weights(next_h, next_l, K);
    stage_weights(K, W);
  }
  // ... the K-split sum of output (row r, channel o) of a product, plus bias, ReLU ...
  __device__ T bias_relu(int ks, int rstride, int r, int o, const T* bias) const {
    T z = T(0);
    const int col = red_col(r, o);
    for (int kg = 0; kg < ks; ++kg) z += red[(kg * rstride + r) * d.c4 + col];
    z += bias[o];
    return z > T(0) ? z : T(0);
  }
  // ... (the same for channels o, o+1, o even, with 8-byte loads: the two-channel
  // finishing loops of the 512-thread instances) ...
  __device__ __forceinline__ Vec2<T> bias_relu2(int ks, int rstride, int r, int o, const T* bias) const {
    const int C4 = d.c4;
    const T* pr = red + r * C4 + red_col(r, o);
    T z0 = T(0), z1 = T(0);
#pragma unroll 4
    for (int kg = 0; kg < ks; ++kg) {
      const Vec2<T> v = load2_sh(pr + kg * rstride * C4);
      z0 += v.v[0];
      z1 += v.v[1];
    }
    z0 += bias[o];
    z1 += bias[o + 1];
    z0 = z0 > T(0) ? z0 : T(0);
    z1 = z1 > T(0) ? z1 : T(0);
    return Vec2<T>{{z0, z1}};
  }
  // ... (the same for channels o .. o+3, o % 4 == 0, biases b; kKs > 0: ks = kKs, all
  // loads at once) ...
  template <int kKs = 0>
  __device__ void bias_relu4(int ks, int rstride, int r, int o, const T (&b)[4], T (&z)[4],
                             const T* rb = nullptr) const {
#pragma unroll
    for (int q = 0; q < 4; ++q) z[q] = T(0);
    const T* pr = (rb ? rb : red) + r * d.c4 + red_col(r, o);
    if constexpr (kKs > 0) {
#pragma unroll 4
      for (int kg = 0; kg < kKs; ++kg) {
        const Vec4<T> v = load4_sh(pr + kg * rstride * d.c4);
#pragma unroll
        for (int q = 0; q < 4; ++q) z[q] += v.v[q];
      }
    } else {
      for (int kg = 0; kg < ks; ++kg) {
        const Vec4<T> v = load4_sh(pr + kg * rstride * d.c4);
#pragma unroll
        for (int q = 0; q < 4; ++q) z[q] += v.v[q];
      }
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      z[q] += b[q];
      z[q] = z[q] > T(0) ? z[q] : T(0);
    }
  }
  // ... and where output (y, x) of branch is_h, block l of member m goes (the segment
  // path keeps each job's out_at(.., 0, ..) per pass in orow).
  __device__ T* out_at(bool is_h, int l, int y, int x, const Member<T>& m) const {
    return (is_h ? m.hw : m.vw) + ((l * m.R + slot(m, y)) * d.lx + x) * int64_t(d.channels);
  }
  __device__ void store(bool is_h, int l, int y, int x, const Member<T>& m, int o, T z) const {
    out_at(is_h, l, y, x, m)[o] = z;
  }

  // ready: this pass's weights were already copied to wsm by the previous pass;
  // next_l >= 0: after the last product, start copying the weights of the next pass
  // (next_h, next_l) into wsm, waited for by the next pass together with its windows.
  // prefetched: this pass's weights and windows were started by the previous pass (all
  // but the site's own h_(l-1) entries, which it wrote directly). prefetch (kSample,
  // single-position horizontal pass of block l < L-1): after the product, start the
  // weights and the windows of block l+1 at the same site (17 of its 18 taps do not
  // depend on this pass) and write this pass's outputs into the 18th, so that their
  // copies overlap this pass's finishing phase instead of stalling the next pass.
  __device__ void pass(bool is_h, int l, int y, int xb, int xe, bool keep, bool ready = false, bool next_h = true,
                       int next_l = -1, bool prefetched = false, bool prefetch = false) const {
    // (not for the sampler's prefetching single-position passes: their windows are in
    // the tap-by-tap layout, and the next pass relies on them)
    // (kWG: the row walk calls pass_seg_wg itself for blocks l > 0, so that no wgmma is
    // inside a function it calls: pass() is not inlined into every caller, and wgmma
    // across a call is serialized and spilled)
    if constexpr (kWG) {
      if (l > 0) __trap();
    }
    if constexpr (kPipe) {  // blocks l > 0; block 0: v_0 directly, h_0 by the windows below
      if constexpr (!kWG) {
        if (l > 0) {
          pass_seg_pipe(is_h, l, y, xb, xe);
          return;
        }
      }
      if (block0_seg && !is_h) {
        long long t0 = prof && threadIdx.x == 0 ? clock64() : 0;
        pass_v0(y, xb, xe);
        tick(12, t0);
        return;
      }
    }
    if (ncol && l > 0 && !keep && !prefetched && !prefetch && xe - xb >= seg_min_nx) {
      pass_seg(is_h, l, y, xb, xe, ready, next_h, next_l);
      return;
    }
    const int C = d.channels, C4 = d.c4;
    const int cprev = l == 0 ? 1 : C, cin = is_h ? cprev + C : cprev;
    int K;
    const T* W = layer_weights(is_h, l, K);
    const T* bias = (is_h ? w.bh : w.bv) + int64_t(l) * C;
    const int res_tap = is_h ? 8 : 7;  // (y, x) itself in the window
    const int nx = xe - xb, npairs = tile * nx;
    const FastDiv by_nx(nx, npairs);
    long long t0 = prof && threadIdx.x == 0 ? clock64() : 0;
    // Several chunks: two buffers of rows / 2 rows, the next chunk's windows copied
    // while this one is multiplied. One chunk (the single-position pass of kSample):
    // all rows.
    const bool pipe = pipeline && npairs > rows && rows >= 8;
    const int cr = pipe ? rows / 2 : rows;
    if (!prefetched) {
      bool staged_h0 = false;
      if constexpr (kPipe) {
        if (block0_seg && is_h && l == 0) {
          stage_weights_h0();
          staged_h0 = true;
        }
      }
      if (wsm && !ready && !staged_h0) stage_weights(K, W);
      gather(is_h, l, y, xb, nx, 0, min(cr, npairs), xs);
    }
    wait_copies();
    __syncthreads();
    tick(0, t0);
    for (int c = 0, p0 = 0; p0 < npairs; ++c, p0 += cr) {
      const int nr = min(cr, npairs - p0), rows4 = (nr + 3) & ~3;
      const int pn = p0 + cr;
      T* xc = xs + (pipe && (c & 1) ? size_t(cr) * S : 0);
      if (pipe && pn < npairs) gather(is_h, l, y, xb, nx, pn, min(cr, npairs - pn), xs + (c & 1 ? 0 : size_t(cr) * S));
      int ks, rstride = rows4;
      if constexpr (sizeof(T) == 4 && kMath != kFFMA) {
        if (math != kFFMA) product_mma<kMath>(K, nr, xc, ks, rstride);
      }
      if (kMath == kFFMA || math == kFFMA) {
        int ntile;
        split(rows4, C4, ntile, ks);
        rstride = rows4;
        if (wsm) {
          product<true>(K, wsm, rows4, xc);
        } else {
          product<false>(K, W, rows4, xc);
        }
      }
      __syncthreads();
      tick(1, t0);
      const bool last = pn >= npairs;
      if (last && wsm && next_l >= 0) stage_next(next_h, next_l);
      if (prefetch) gather(true, l + 1, y, xb, nx, 0, npairs, xs, true);
      if constexpr (kMath == kFFMA && kThr == 512 && kCC > 0) {
        // two channels per thread (a 32-job single-position pass is 1024 outputs for the
        // 512 threads): 8-byte loads and stores, half the index arithmetic; the same sums
        // in the same order as bias_relu (red_col keeps channel pairs adjacent)
        const int CH = C / 2;
#pragma unroll 1
        for (int e = threadIdx.x; e < nr * CH; e += nthreads) {
          const int r = e / CH, o = (e - r * CH) * 2;
          const Vec2<T> z = bias_relu2(ks, rstride, r, o, bias);
          T z0 = z.v[0], z1 = z.v[1];
          if (l > 0) {
            const Vec2<T> res = load2_sh(xc + r * S + res_tap * cin + o);
            z0 += res.v[0];
            z1 += res.v[1];
          }
          const int p = p0 + r, j = by_nx.div(p), x = xb + (p - j * nx);
          store2(out_at(is_h, l, y, x, mem[j]) + o, z0, z1);
          if (keep) store2(hcur + j * C + o, z0, z1);
          if (prefetch) store2(xc + r * S + 8 * 2 * C + o, z0, z1);  // tap 8, h_l part, of block l+1's window
        }
      } else
      for (int e = threadIdx.x; e < nr * C; e += nthreads) {
        const int r = e / C, o = e - r * C;
        T z = bias_relu(ks, rstride, r, o, bias);
        if (l > 0) z += xc[r * S + res_tap * cin + o];
        const int p = p0 + r, j = by_nx.div(p), x = xb + (p - j * nx);
        if constexpr (kWG) {  // (block 0's h_0, read by block 1's wgmma passes)
          if (wg_round == 2) z = tf32_round(z);
          if (wg_round == 3) z = tf32_bias(z);
        }
        store(is_h, l, y, x, mem[j], o, z);
        if (keep) hcur[j * C + o] = z;
        if (prefetch) xc[r * S + 8 * 2 * C + o] = z;  // tap 8, h_l part, of block l+1's window
      }
      if (!pipe && pn < npairs) {
        __syncthreads();
        gather(is_h, l, y, xb, nx, pn, min(cr, npairs - pn), xs);
      }
      if (!last) cp_async_wait_all();
      __syncthreads();
      tick(2, t0);
      if (prof && threadIdx.x == 0) prof[5] += 1;
    }
  }

  // ---- Segment path (passes over rows: the row walk, kSample's vertical branch; layers
  // l > 0, C % 4 == 0; FFMA or tensor-core products). Instead of the 9-tap window of every pair
  // ([rows][K]: each input element copied up to 9 times), a chunk copies, per job it
  // touches and per input row dy = 0..2, the one contiguous segment its windows need:
  // columns x_first-2 .. x_last (h) or x_first-1 .. x_last+1 (v) of the job's pairs in
  // the chunk, cin channels each (h: [h_{l-1} at row y-2+dy | v_l at row y-3+dy]; v:
  // v_{l-1} at row y-2+dy). Job jj of the chunk (0 = the first) takes n_jj + 2 columns,
  // so pair r's window starts at column cb(r) = r + 2 jj (product<., true>). ~3x fewer
  // bytes and copies than the windows, and small enough for two buffers in the space of
  // one window chunk: the next chunk's copies are in flight while this chunk finishes
  // (issued per warp after its product share; before the product in the register-B TF32
  // instances, during it). Buffer: [3][ncol][cin + kSegPad] (columns padded by 16 or 32
  // bytes: the adjacent columns one warp reads fall in different banks), row stride RS.

  // Pairs of the chunk that starts at pair p0: at most max_rows, and columns <= cols.
  __device__ int seg_chunk(int p0, int npairs, int nx, const FastDiv& by_nx, int max_rows, int cols) const {
    int n = min(max_rows, npairs - p0);
    const int j0 = by_nx.div(p0);
    while (n > 1 && n + 2 * (by_nx.div(p0 + n - 1) - j0 + 1) > cols) --n;
    return n;
  }
  // The same, counted directly (the wgmma passes; by_nx2 divides by nx + 2). The columns
  // of n pairs grow with n: the first job's pairs from q0 and 2 halo columns, nx + 2 for
  // each whole job after it, a partial last job's pairs and 2; so the largest n that
  // fits follows from cols. The loop above, one pair off at a time with a division each,
  // was 10% of the wgmma walks' instructions (run 120); in the 128-register instances the
  // direct count's registers cost spills.
  __device__ static int seg_chunk_direct(int p0, int npairs, int nx, const FastDiv& by_nx, const FastDiv& by_nx2,
                                         int max_rows, int cols) {
    const int n = min(max_rows, npairs - p0);
    const int n0 = nx - (p0 - by_nx.div(p0) * nx);  // pairs left in the first job
    int fit = cols - 2;
    if (n0 + 2 < cols) {
      const int rest = cols - (n0 + 2), whole = by_nx2.div(rest), part = rest - whole * (nx + 2);
      fit = n0 + whole * nx + max(part - 2, 0);
    }
    return max(1, min(n, fit));
  }

  // Issues the cp.async copies of the segments of pairs p0 .. p0+nr-1 into buf. One
  // thread per piece of up to 4 16-byte units of one column part (h: [h_{l-1} | v_l],
  // v: v_{l-1}), so that the index arithmetic (job, column, cone test, address) runs
  // once per piece rather than once per unit.
  __device__ void gather_seg(bool is_h, int xb, int nx, const FastDiv& by_nx, const FastDiv& by_nx2, int p0, int nr,
                             T* buf, int RS) const {
    const int C = d.channels, cin = is_h ? 2 * C : C;
    constexpr int VE = 16 / int(sizeof(T));
    const int upp = C / VE;                  // 16-byte units per part (C % 4 == 0)
    const int pu = upp % 4 == 0 ? 4 : upp;   // units per piece
    const int ppp = upp / pu;                // pieces per part
    const int pieces = (is_h ? 2 : 1) * ppp; // pieces per column
    const int j0 = by_nx.div(p0), q0 = p0 - j0 * nx;
    const int n0 = min(nx - q0, nr);  // pairs of the first job
    const int ncols = nr + 2 * (by_nx.div(p0 + nr - 1) - j0 + 1);
    const int total = 3 * ncols * pieces;
    const FastDiv by_pieces(pieces, total);  // (unused, and not computed, when pieces is a power of 2)
    const bool pieces_pow2 = (pieces & (pieces - 1)) == 0;  // (always for 32 channels: 4 or 2)
    const int pieces_log2 = 31 - __clz(pieces);
    const int x_first = xb + q0 - (is_h ? 2 : 1);  // lattice column of column 0
#pragma unroll 1
    for (int e = threadIdx.x; e < total; e += nthreads) {
      const int rest = pieces_pow2 ? e >> pieces_log2 : by_pieces.div(e), pc = e - rest * pieces;
      const int part = pc >= ppp ? 1 : 0, c = (pc - part * ppp) * pu * VE;
      const int dy = (rest >= ncols) + (rest >= 2 * ncols), sc = rest - dy * ncols;  // rest < 3 ncols
      int jj = 0, xx = x_first + sc;
      if (sc >= n0 + 2) {
        const int t = sc - (n0 + 2);
        jj = 1 + by_nx2.div(t);
        xx = xb - (is_h ? 2 : 1) + (t - (jj - 1) * (nx + 2));
      }
      const RowSrc<T>& rs = rsrc[((j0 + jj) * 3 + dy) * 2 + part];
      const T* src = nullptr;
      if (rs.ring && xx >= 0 && (is_h || xx < d.lx))
        src = (rs.store && !in_cols(rs.cols, xx) ? rs.store : rs.ring) + xx * C + c;
      T* dst = buf + dy * RS + sc * (cin + kSegPad) + part * C + c;
      if (pu == 4) {
#pragma unroll
        for (int u = 0; u < 4; ++u) cp_async<16>(dst + u * VE, src ? src + u * VE : nullptr, w.bo);
      } else {
        for (int u = 0; u < pu; ++u) cp_async<16>(dst + u * VE, src ? src + u * VE : nullptr, w.bo);
      }
    }
  }

  // The segment passes' row tables: per job, where its three input rows (dy, part) come
  // from (rsrc) and where its output row goes (orow), for pass (is_h, l, y). The caller
  // puts a barrier between them and their readers.
  __device__ __forceinline__ void pass_tables(bool is_h, int l, int y) const {
    for (int e = threadIdx.x; e < tile * 7; e += nthreads) {
      const int j = e / 7, q = e - 7 * j, dy = q >> 1, part = q & 1, yy = y - 2 + dy;
      const Member<T>& m = mem[j];
      if (q == 6) {
        orow[j] = out_at(is_h, l, y, 0, m);
        continue;
      }
      RowSrc<T> rs{nullptr, nullptr, 1, 0};
      if (is_h && part == 0) {
        if (yy >= 0) rs = row_src(true, m, l - 1, yy);
      } else if (is_h) {
        if (yy >= 1) rs = row_src(false, m, l, yy - 1);
      } else if (part == 0 && yy >= 0) {
        rs = row_src(false, m, l - 1, yy);
      }
      rsrc[j * 6 + q] = rs;
    }
  }

  // pass() on the segment path (same arguments, keep = false).
  __device__ void pass_seg(bool is_h, int l, int y, int xb, int xe, bool ready, bool next_h, int next_l) const {
    const int C = d.channels, C4 = d.c4;
    const int cin = is_h ? 2 * C : C;
    int K;
    const T* W = layer_weights(is_h, l, K);
    const T* bias = (is_h ? w.bh : w.bv) + int64_t(l) * C;
    const int res_dx = is_h ? 2 : 1;  // (y, x) itself: dy = 2, dx = 2 (h) or 1 (v)
    // Vertical passes (cin = C) with FFMA products take chunks of up to 2 rows pairs (64
    // where they fit: half the chunks, and with them half the per-chunk barriers, index
    // set-up and partial-sum stores; each chunk's product has twice the rows, so half the
    // K groups, each twice as long), in buffers of ncol_v columns.
    const bool wide = !kBRegs && !is_h && ncol_v > 0;
    const int max_rows = wide ? 2 * rows : rows, cols = wide ? ncol_v : ncol;
    const int RS = cols * (cin + kSegPad), BS = 3 * ncol * (2 * C + kSegPad);
    const int nx = xe - xb, npairs = tile * nx;
    const FastDiv by_nx(nx, npairs + 2), by_cin(cin, K), by_nx2(nx + 2, npairs + 2 * tile);
    long long t0 = prof && threadIdx.x == 0 ? clock64() : 0;
    // kBRegs: a thread finishes the same 4 channels o = 4 (t % C/4) in every chunk: their
    // biases once per pass, in registers (a global load per chunk stalled the finishing
    // phase: 2.7% of a TF32 walk's stall samples, Nsight Compute; the 512-thread FFMA
    // kernel has no registers to spare)
    T bias_r[4];
    if constexpr (kBRegs) {
      static_assert(kThr % (kCC / 4) == 0, "the finishing loop's channel group must be fixed per thread");
      const int o = (threadIdx.x % (kCC / 4)) * 4;
#pragma unroll
      for (int q = 0; q < 4; ++q) bias_r[q] = bias[o + q];
    }
    // the pass's input rows (job, dy, part) and output rows, once per pass (the previous
    // pass ended with a barrier: nobody reads the tables any more)
    pass_tables(is_h, l, y);
    const int CQ = C / 4;
    __syncthreads();
    if (wsm && !ready) stage_weights(K, W);
    int p0 = 0, nr = seg_chunk(0, npairs, nx, by_nx, max_rows, cols);
    gather_seg(is_h, xb, nx, by_nx, by_nx2, 0, nr, xs, RS);
    unsigned breg[kSteps][kNTW][2];  // kBHold: this warp's B fragments for the pass
    cp_async_commit();  // with the weights (this pass's, or the ones the previous pass started)
    tick(6, t0);
    for (int c = 0;; ++c) {
      const T* cur = xs + (c & 1) * BS;
      const int pn = p0 + nr;
      const int nrn = pn < npairs ? seg_chunk(pn, npairs, nx, by_nx, max_rows, cols) : 0;
      if constexpr (kLateGather) {
        wait_copies();  // this chunk's copies (issued during the last chunk's product)
      } else if (nrn > 0) {
        gather_seg(is_h, xb, nx, by_nx, by_nx2, pn, nrn, xs + ((c + 1) & 1) * BS, RS);
        cp_async_commit();
        tick(7, t0);
        cp_async_wait_1();  // everything but the copies just issued
      } else {
        cp_async_wait_all();
      }
      tick_fine(8, t0);
      __syncthreads();
      if (kMath == kTF32 && c == 0 && math == kTF32) {  // the weights have landed
        if constexpr (kBHold) {
          load_b_regs(is_h, breg);  // rounded on the way
        } else if constexpr (!kBRegs) {
          round_weights_tf32(K);
          __syncthreads();
        }
      }
      tick(0, t0);
      const int rows4 = (nr + 3) & ~3;
      int ntile, ks, rstride = rows4;
      const int j0 = by_nx.div(p0);
      const SegArgs sg{p0, nx, nr, cin, RS, j0, p0 - j0 * nx, by_nx, by_cin};
      if constexpr (sizeof(T) == 4 && kMath != kFFMA) {
        if constexpr (kBRegs) {
          if constexpr (!kBHold) load_b_regs(is_h, breg);  // this chunk's (rounded on the way)
          if (math != kFFMA) {
            if (is_h) product_tf32_regs<true>(nr, cur, breg, ks, rstride, sg);
            else product_tf32_regs<false>(nr, cur, breg, ks, rstride, sg);
          }
        } else if (math != kFFMA) {
          product_mma<kMath, true>(K, nr, cur, ks, rstride, sg);
        }
      }
      // (the register-B instance has no FFMA fallback: its B registers would stay live
      // through the FFMA product and spill; plan() gives it only walks with the weights
      // in shared memory, where math is kTF32)
      if (!kBRegs && (kMath == kFFMA || math == kFFMA)) {
        split(rows4, C4, ntile, ks);
        if (wsm) {
          product<true, true>(K, wsm, rows4, cur, sg);
        } else {
          product<false, true>(K, W, rows4, cur, sg);
        }
      }
      if constexpr (kLateGather) {
        // the next chunk's copies, by each warp as soon as its product share is done (its
        // buffer was the last chunk's, free since that chunk's final barrier): their
        // dependent index loads overlap the other warps' products instead of running
        // with all warps at once before the product (10.8% of a local energy, run 68)
        if (nrn > 0) {
          gather_seg(is_h, xb, nx, by_nx, by_nx2, pn, nrn, xs + ((c + 1) & 1) * BS, RS);
          cp_async_commit();
        }
      }
      tick_fine(9, t0);
      __syncthreads();
      tick(1, t0);
      if constexpr (kBHold) {
        // every warp holds its B fragments: the next pass's weights can replace them in
        // wsm now, a whole pass ahead (they join the next commit)
        if (c == 0 && next_l >= 0) stage_next(next_h, next_l);
      } else {
        if (nrn == 0 && wsm && next_l >= 0) stage_next(next_h, next_l);
      }
      tick_fine(10, t0);
      if constexpr (!kBRegs && kThr == 512) {
        // two channels per thread: a 32-pair chunk of 32 channels is 512 items for the
        // 512 threads (with four channels half of them idled through the other half's
        // loads); 8-byte loads, the same sums in the same order as bias_relu
        const int CH = C / 2;
#pragma unroll 1
        for (int e = threadIdx.x; e < nr * CH; e += nthreads) {
          const int r = e / CH, o = (e - r * CH) * 2;
          const Vec2<T> z = bias_relu2(ks, rstride, r, o, bias);
          const T z0 = z.v[0], z1 = z.v[1];
          const int p = p0 + r, j = by_nx.div(p), x = xb + (p - j * nx);
          const Vec2<T> res = load2_sh(cur + 2 * RS + (r + 2 * (j - j0) + res_dx) * (cin + kSegPad) + o);
          store2(orow[j] + x * C + o, z0 + res.v[0], z1 + res.v[1]);
        }
      } else
      // four channels per thread: 16-byte loads of the partial sums and the residual,
      // 16-byte stores (the same sums in the same order as bias_relu)
      for (int e = threadIdx.x; e < nr * CQ; e += nthreads) {
        const int r = e / CQ, o = (e - r * CQ) * 4;
        T z[4], b[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) b[q] = kBRegs ? bias_r[q] : bias[o + q];
        if constexpr (kBRegs) {  // K groups: 8 (h) or 4 (v), see product_tf32_regs
          if (is_h) bias_relu4<8>(ks, rstride, r, o, b, z);
          else bias_relu4<4>(ks, rstride, r, o, b, z);
        } else {
          bias_relu4(ks, rstride, r, o, b, z);
        }
        const int p = p0 + r, j = by_nx.div(p), x = xb + (p - j * nx);
        const Vec4<T> res = load4_sh(cur + 2 * RS + (r + 2 * (j - j0) + res_dx) * (cin + kSegPad) + o);
#pragma unroll
        for (int q = 0; q < 4; ++q) z[q] += res.v[q];
        store4_sh(orow[j] + x * C + o, z);
      }
      tick_fine(11, t0);
      __syncthreads();
      tick(2, t0);
      if (prof && threadIdx.x == 0) prof[5] += 1;
      if (nrn == 0) break;
      p0 = pn;
      nr = nrn;
    }
  }

  // Block 0's vertical pass in the pipelined instance: v_0 at row y, columns [xb, xe) of
  // every job: 9 spin taps (rows y-2..y, columns x-1..x+1) a channel, FFMA, four channels
  // a thread, straight to the ring or storage: no copies, no product, one barrier (a
  // window pass of 2 k-steps with its weight staging and three barriers a chunk before). The weights rounded to TF32 as the MMAs would (the
  // spins are exact): the TF32 mode's v_0, summed in another order.
  __device__ void pass_v0(int y, int xb, int xe) const {
    constexpr int C = kCC, CQ = kCC / 4;
    const int nx = xe - xb;
    const FastDiv by_nxq(nx * CQ, int64_t(tile) * nx * CQ);
    for (int e = threadIdx.x; e < tile * nx * CQ; e += nthreads) {
      const int j = by_nxq.div(e), rest = e - j * nx * CQ, xi = rest / CQ, o = (rest - xi * CQ) * 4;
      const int x = xb + xi;
      const Member<T>& m = mem[j];
      T z[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) z[q] = __ldg(w.bv + o + q);
#pragma unroll 1  // (unrolled, this instance kept an array in local memory)
      for (int tap = 0; tap < 9; ++tap) {
        const int yy = y - 2 + tap / 3, xx = x - 1 + tap % 3;
        if (yy < 0 || xx < 0 || xx >= d.lx) continue;
        const T sv = T(m.s[yy * d.lx + xx]);
#pragma unroll
        for (int q = 0; q < 4; ++q) z[q] += tf32_round(__ldg(w.wv0 + tap * C + o + q)) * sv;
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) z[q] = z[q] > T(0) ? z[q] : T(0);
      if constexpr (kWG) {  // (v_0, read by block 1's wgmma passes and block 0's h product)
        if (wg_round == 2)
#pragma unroll
          for (int q = 0; q < 4; ++q) z[q] = tf32_round(z[q]);
        if (wg_round == 3)
#pragma unroll
          for (int q = 0; q < 4; ++q) z[q] = tf32_bias(z[q]);
      }
      store4_sh(out_at(false, 0, y, x, m) + o, z);
    }
    __syncthreads();
  }

  // ---- Pipelined segment passes (kPipe: the 256-thread 32-channel TF32 instance of the
  // row walks). A chunk of pass_seg runs copies, barrier, product, barrier, finishing,
  // barrier, and thread 0's counters put a third of the chunk at those barriers (run 51:
  // the warps wait for the slowest one three times a chunk). Here the product of chunk
  // i+1 and the finishing of chunk i run between the same two barriers: each warp
  // multiplies chunk i+1, then finishes chunk i, so one warp's finishing loads and stores
  // overlap another warp's MMAs, with one barrier a chunk. That takes three segment
  // buffers (chunk i's residuals, chunk i+1's operands, chunk i+2's copies in flight)
  // and two K-split buffers; they fit because this instance keeps no weights in shared
  // memory for these passes: each warp loads its B fragments from global memory (L2)
  // when the pass starts (load_b_regs_global). Same products, same sums in the same order
  // as pass_seg: bitwise its results for the same chunks.
  __device__ void pass_seg_pipe(bool is_h, int l, int y, int xb, int xe) const {
    constexpr int C = kCC, CQ = kCC / 4;
    const int cin = is_h ? 2 * C : C;
    int K;
    const T* W = layer_weights(is_h, l, K);
    const T* bias = (is_h ? w.bh : w.bv) + int64_t(l) * C;
    const int res_dx = is_h ? 2 : 1;  // (y, x) itself: dy = 2, dx = 2 (h) or 1 (v)
    const int RS = ncol * (cin + kSegPad), BS = 3 * ncol * (2 * C + kSegPad);
    const int nx = xe - xb, npairs = tile * nx;
    const FastDiv by_nx(nx, npairs + 2), by_cin(cin, K), by_nx2(nx + 2, npairs + 2 * tile);
    long long t0 = prof && threadIdx.x == 0 ? clock64() : 0;
    T bias_r[4];  // (a thread finishes the same 4 channels in every chunk, see pass_seg)
    {
      const int o = (threadIdx.x % CQ) * 4;
#pragma unroll
      for (int q = 0; q < 4; ++q) bias_r[q] = bias[o + q];
    }
    pass_tables(is_h, l, y);
    __syncthreads();
    tick(15, t0);
    unsigned breg[kSteps][kNTW][2];
    load_b_regs_global(is_h, W, breg);
    // chunk i: pairs [p0, p0 + nr) in buffer cur (K-split sums in rcur); chunk i+1: p1,
    // nr1 in nxt (rnxt); the third buffer (spare) takes chunk i+2's copies
    T* cur = xs;
    T* nxt = xs + BS;
    T* spare = xs + 2 * BS;
    T* rcur = red;
    T* rnxt = red_b;
    int p0 = 0, nr = seg_chunk(0, npairs, nx, by_nx, rows, ncol);
    int p1 = nr, nr1 = p1 < npairs ? seg_chunk(p1, npairs, nx, by_nx, rows, ncol) : 0;
    gather_seg(is_h, xb, nx, by_nx, by_nx2, 0, nr, cur, RS);
    cp_async_commit();
    if (nr1 > 0) gather_seg(is_h, xb, nx, by_nx, by_nx2, p1, nr1, nxt, RS);
    cp_async_commit();
    cp_async_wait_1();  // chunk 0's copies (this thread's)
    tick(6, t0);
    __syncthreads();
    tick(13, t0);
    int ks, rstride;
    auto multiply = [&](int p, int n, const T* buf, T* rb) {
      const int j0 = by_nx.div(p);
      const SegArgs sg{p, nx, n, cin, RS, j0, p - j0 * nx, by_nx, by_cin};
      if (is_h) product_tf32_regs<true>(n, buf, breg, ks, rstride, sg, rb);
      else product_tf32_regs<false>(n, buf, breg, ks, rstride, sg, rb);
    };
    multiply(p0, nr, cur, rcur);
    tick_fine(9, t0);
    for (;;) {
      // this thread's copies of chunk i+1 (the only ones in flight); the barrier: every
      // product of chunk i is in rcur, chunk i+1's copies are visible, and chunk i-1's
      // finishing is done (its buffer, now spare, and its K-split sums, now rnxt, are free)
      cp_async_wait_all();
      tick_fine(8, t0);
      __syncthreads();
      tick(13, t0);
      const int p2 = p1 + nr1;
      const int nr2 = nr1 > 0 && p2 < npairs ? seg_chunk(p2, npairs, nx, by_nx, rows, ncol) : 0;
      // finishing of chunk i: K-split sums, bias, ReLU, residual (16-byte loads and stores;
      // a lambda, called once below: written inline the pipelined instance compiled to
      // other code, not measured)
      auto finish = [&]() {
        const int j0 = by_nx.div(p0);
        for (int e = threadIdx.x; e < nr * CQ; e += nthreads) {
          const int r = e / CQ, o = (e - r * CQ) * 4;
          T z[4];
          if (is_h) bias_relu4<8>(8, 32, r, o, bias_r, z, rcur);
          else bias_relu4<4>(4, 32, r, o, bias_r, z, rcur);
          const int p = p0 + r, j = by_nx.div(p), x = xb + (p - j * nx);
          const Vec4<T> res = load4_sh(cur + 2 * RS + (r + 2 * (j - j0) + res_dx) * (cin + kSegPad) + o);
#pragma unroll
          for (int q = 0; q < 4; ++q) z[q] += res.v[q];
          store4_sh(orow[j] + x * C + o, z);
        }
        tick_fine(11, t0);
      };
      // (run 98, 12x12/10/1000: finishing before the product 92.5 ms, after it 93.5, the
      // copies after the product 101.3)
      if (nr2 > 0) {
        gather_seg(is_h, xb, nx, by_nx, by_nx2, p2, nr2, spare, RS);
        cp_async_commit();
      }
      tick(7, t0);
      if (nr1 > 0) multiply(p1, nr1, nxt, rnxt);
      tick_fine(9, t0);
      finish();
      if (prof && threadIdx.x == 0) prof[5] += 1;
      if (nr1 == 0) break;
      T* const freed = cur;
      cur = nxt;
      nxt = spare;
      spare = freed;
      T* const rfreed = rcur;
      rcur = rnxt;
      rnxt = rfreed;
      p0 = p1;
      nr = nr1;
      p1 = p2;
      nr1 = nr2;
    }
    __syncthreads();  // the row tables and buffers are the next pass's
    tick(14, t0);
  }

  // ---- wgmma segment passes (kWG: the 256-thread 32-channel TF32 instance of the row
  // walks, blocks l > 0). The pipelined passes above spend a chunk's time on the MMAs'
  // operand loads and on issuing copies and K-split sums from the same warps. Here the
  // tensor cores read both operands from shared memory on their own (wgmma, sm_90a; run
  // 108 measured 64 x 32 x 576 chunk products at 80% of the TF32 ceiling), and the two
  // warpgroups split the work, not K: warpgroup 0 multiplies a chunk (all of K into 16
  // accumulators a thread) and finishes it from its registers, while warpgroup 1 copies
  // the next chunk; one barrier a chunk, no K-split sums, no B fragments in registers. A
  // chunk is up to 64 m-rows (segment columns) instead of 32 pairs. The buffer layout
  // (wgmma.cuh) keeps the window views: m-row r, tap (dy, dx) is column r + dx of row
  // dy, i.e. the descriptor's start moved by dx x 16 bytes.

  // Copies the segments of pairs p0 .. p0+nr-1 (same columns as gather_seg) into buf in
  // the wgmma layout: one thread per 64-byte piece (16 channels of one part of one
  // column), 4 copies into 4 channel-quad planes.
  __device__ __forceinline__ void gather_wg(bool is_h, int xb, int nx, const FastDiv& by_nx, const FastDiv& by_nx2, int p0, int nr,
                            float* buf, int tid, int nthr) const {
    constexpr int C = kCC;
    const int j0 = by_nx.div(p0), q0 = p0 - j0 * nx;
    const int n0 = min(nx - q0, nr);
    const int ncols = nr + 2 * (by_nx.div(p0 + nr - 1) - j0 + 1);
    const int lg = is_h ? 2 : 1;  // pieces a column: (part, half) for h, half for v
    const int total = (3 * ncols) << lg;
    const int x_first = xb + q0 - (is_h ? 2 : 1);
#pragma unroll 1
    for (int e = tid; e < total; e += nthr) {
      const int rest = e >> lg, pc = e - (rest << lg), part = pc >> 1, half = pc & 1;
      const int dy = (rest >= ncols) + (rest >= 2 * ncols), sc = rest - dy * ncols;
      int jj = 0, xx = x_first + sc;
      if (sc >= n0 + 2) {
        const int t = sc - (n0 + 2);
        jj = 1 + by_nx2.div(t);
        xx = xb - (is_h ? 2 : 1) + (t - (jj - 1) * (nx + 2));
      }
      const RowSrc<T>& rs = rsrc[((j0 + jj) * 3 + dy) * 2 + part];
      const T* src = nullptr;
      if (rs.ring && xx >= 0 && (is_h || xx < d.lx))
        src = (rs.store && !in_cols(rs.cols, xx) ? rs.store : rs.ring) + xx * C + half * 16;
      float* dst = buf + (((part * 3 + dy) * 8 + half * 4) * kWgSL + sc) * 4;
#pragma unroll
      for (int u = 0; u < 4; ++u) cp_async<16>(dst + u * kWgPlane, src ? src + u * 4 : nullptr, w.bo);
    }
  }

  // Rounds the pieces this thread copied for pairs p0 .. p0+nr-1 (gather_wg's loop with
  // the same tid, nthr) to TF32, after its cp.async.wait: the MMAs ignore the low 13
  // bits, and truncated operands shift every product toward zero (local energies 4.9e-3
  // from the other TF32 paths at 9x6/3/scale 0.3, run 109); rounded, they take what the
  // mma.sync products take (rna_bits).
  __device__ __forceinline__ void round_wg(bool is_h, int nx, const FastDiv& by_nx, int p0, int nr, float* buf, int tid,
                           int nthr) const {
    const int j0 = by_nx.div(p0);
    const int ncols = nr + 2 * (by_nx.div(p0 + nr - 1) - j0 + 1);
    const int lg = is_h ? 2 : 1;
    const int total = (3 * ncols) << lg;
#pragma unroll 1
    for (int e = tid; e < total; e += nthr) {
      const int rest = e >> lg, pc = e - (rest << lg), part = pc >> 1, half = pc & 1;
      const int dy = (rest >= ncols) + (rest >= 2 * ncols), sc = rest - dy * ncols;
      float* dst = buf + (((part * 3 + dy) * 8 + half * 4) * kWgSL + sc) * 4;
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        float4 v = *reinterpret_cast<const float4*>(dst + u * kWgPlane);
        v.x = tf32_round(v.x);
        v.y = tf32_round(v.y);
        v.z = tf32_round(v.z);
        v.w = tf32_round(v.w);
        *reinterpret_cast<float4*>(dst + u * kWgPlane) = v;
      }
    }
  }

  // A chunk's k-steps, all of K: step i = (tap, part, quad pair kq) with 8 (h) or 4 (v)
  // k-steps a tap; A: quad plane ((part 3 + dy) 8 + 2 kq) shifted dx columns, B: k quad
  // (tap cin + part C + 8 kq) / 4; offsets in 16-byte units, compile-time constants
  // added inside each instruction's block (computed ahead by the compiler, a chunk's
  // descriptors took 144 registers and spilled the accumulators).
  template <bool kH, int... I>
  __device__ __forceinline__ static void wg_chunk_mmas(float (&acc)[16], unsigned long long da0,
                                                       unsigned long long db0, std::integer_sequence<int, I...>) {
    constexpr int kKT = kH ? 8 : 4, kCin = kH ? 64 : 32;
    (wgmma_m64n32k8_tf32_at<unsigned(((((I % kKT) / 4) * 3 + (I / kKT) / 3) * 8 + 2 * (I % 4)) * kWgSL + (I / kKT) % 3),
                            unsigned(((I / kKT) * kCin / 4 + ((I % kKT) / 4) * 8 + 2 * (I % 4)) * 32)>(acc, da0, db0,
                                                                                                   I > 0),
     ...);
  }

  // Warpgroup 0's finishing of chunk (p0, nr) from its accumulators: bias, ReLU,
  // residual (h_{l-1} or v_{l-1} at (y, x): row dy = 2 of part 0 of the chunk's A
  // buffer, column r + res_dx), stores. m-row r -> (job, column) as gather_wg lays out
  // the columns: the first job from q0, the next ones whole, 2 halo columns each; the
  // other m-rows start no window.
  __device__ __forceinline__ void finish_wg(int p0, int nr, int xb, int nx, const FastDiv& by_nx,
                                            const FastDiv& by_nx2, int res_dx, const float* buf,
                                            const float (&acc)[16], const T* bias) const {
    constexpr int C = kCC;
    const int lane = threadIdx.x & 31, tig = lane & 3, r0 = 16 * ((threadIdx.x >> 5) & 3) + (lane >> 2);
    const int j0 = by_nx.div(p0), q0 = p0 - j0 * nx, n0 = min(nx - q0, nr);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = r0 + 8 * h;
      int jj = 0, q = q0 + r;
      bool ok = r < n0;
      if (!ok) {
        const int t = r - (n0 + 2);
        if (t >= 0) {
          jj = 1 + by_nx2.div(t);
          q = t - (jj - 1) * (nx + 2);
          ok = q < nx && n0 + (jj - 1) * nx + q < nr;
        }
      }
      if (ok) {
        T* out = orow[j0 + jj] + (xb + q) * C;
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int c = 8 * nt + 2 * tig;
          const float2 b = *reinterpret_cast<const float2*>(bias + c);
          float2 res =
              *reinterpret_cast<const float2*>(buf + ((2 * 8 + (c >> 2)) * kWgSL + r + res_dx) * 4 + (c & 3));
          if (wg_round == 3) {
            res.x = tf32_unbias(res.x);
            res.y = tf32_unbias(res.y);
          }
          float z0 = acc[4 * nt + 2 * h] + b.x, z1 = acc[4 * nt + 2 * h + 1] + b.y;
          z0 = (z0 > 0.f ? z0 : 0.f) + res.x;
          z1 = (z1 > 0.f ? z1 : 0.f) + res.y;
          if (wg_round == 2) {
            z0 = tf32_round(z0);
            z1 = tf32_round(z1);
          }
          if (wg_round == 3) {
            z0 = tf32_bias(z0);
            z1 = tf32_bias(z1);
          }
          *reinterpret_cast<float2*>(out + c) = make_float2(z0, z1);
        }
      }
    }
  }

  template <bool kH>
  __device__ void pass_seg_wg(int l, int y, int xb, int xe) const {
    constexpr int C = kCC, kCin = kH ? 2 * C : C;
    static_assert(kCC == 32 && kThr == 256, "the wgmma passes are specialized for 32 channels, two warpgroups");
    const float* Wp = wg_w + int64_t(l - 1) * kWgPacked + (kH ? 0 : 18 * C * C);
    const T* bias = (kH ? w.bh : w.bv) + int64_t(l) * C;
    const int nx = xe - xb, npairs = tile * nx;
    const FastDiv by_nx(nx, npairs + 2), by_nx2(nx + 2, npairs + 2 * tile);
    // warpgroup 0 multiplies and finishes, 1 copies (the index through a shuffle: the
    // compiler then knows it warp-uniform, else it may serialize the branch's MMAs)
    const bool mma_wg = __shfl_sync(0xffffffffu, int(threadIdx.x >> 7), 0) == 0;
    long long t0 = prof && threadIdx.x == 0 ? clock64() : 0;
    pass_tables(kH, l, y);
    // the pass's weights (packed and rounded to TF32 by walk()), with chunk 0's copies;
    // the previous pass's last MMAs were waited for before its final barrier
    constexpr int kBUnits = 9 * kCin * C / 4;
    for (int e = threadIdx.x; e < kBUnits; e += nthreads) cp_async<16>(wg_b + 4 * e, Wp + 4 * e, w.bo);
    __syncthreads();
    tick(15, t0);
    int p0 = 0, nr = seg_chunk_direct(0, npairs, nx, by_nx, by_nx2, kWgRows, kWgCols);
    gather_wg(kH, xb, nx, by_nx, by_nx2, 0, nr, wg_a, threadIdx.x, nthreads);
    cp_async_commit();
    cp_async_wait_all();
    if (wg_round == 1) round_wg(kH, nx, by_nx, 0, nr, wg_a, threadIdx.x, nthreads);
    fence_proxy_async_shared();
    __syncthreads();
    tick(6, t0);
    // descriptors: A [part][dy][quad][slot], leading offset one quad plane, stride 8
    // slots; B [K / 4][C][4], leading offset one k quad (C x 16 bytes), stride 8 n
    const unsigned long long db0 = wgmma_desc(smem_u32(wg_b), C * 16, 128);
    int cur = 0;
    // Each chunk: warpgroup 0 multiplies it (all of K, 64 x 32 accumulators) and finishes
    // it from its registers while warpgroup 1 copies the next chunk into the other buffer
    // (and rounds it there with NAQS_PIXELCNN_WG_ROUND=1); one barrier a chunk, after which the next chunk is ready and this
    // chunk's buffer free.
    for (;;) {
      float* buf = wg_a + cur * kWgABuf;
      const int p1 = p0 + nr;
      const int nr1 = p1 < npairs ? seg_chunk_direct(p1, npairs, nx, by_nx, by_nx2, kWgRows, kWgCols) : 0;
      if (mma_wg) {
        const unsigned long long da0 = wgmma_desc(smem_u32(buf), kWgSL * 16, 128);
        float acc[16];
#pragma unroll
        for (int i = 0; i < 16; ++i) acc[i] = 0.f;
        wgmma_fence_regs(acc);
        wgmma_fence();
        wg_chunk_mmas<kH>(acc, da0, db0, std::make_integer_sequence<int, kH ? 72 : 36>{});
        wgmma_commit();
        wgmma_wait<0>();
        wgmma_fence_regs(acc);
        tick(9, t0);
        finish_wg(p0, nr, xb, nx, by_nx, by_nx2, kH ? 2 : 1, buf, acc, bias);
        tick(11, t0);
      } else if (nr1 > 0) {
        // the next chunk into the buffer chunk i-1 left (its finishing ended before the
        // last barrier); wg_round 1: rounded to TF32 once landed
        float* nbuf = wg_a + (cur ^ 1) * kWgABuf;
        gather_wg(kH, xb, nx, by_nx, by_nx2, p1, nr1, nbuf, threadIdx.x - 128, 128);
        cp_async_commit();
        cp_async_wait_all();
        if (wg_round == 1) round_wg(kH, nx, by_nx, p1, nr1, nbuf, threadIdx.x - 128, 128);
        fence_proxy_async_shared();
      }
      if (prof && threadIdx.x == 0) prof[5] += 1;
      __syncthreads();
      tick(14, t0);
      if (nr1 == 0) break;
      p0 = p1;
      nr = nr1;
      cur ^= 1;
    }
  }

  // The conditional of site i for member m from its raw outputs; returns nothing,
  // updates m (and the spins / prefix sums).
  __device__ void site_out(Member<T>& m, const WalkArgs<T>& a, int i, const T* raw) const {
    const int N = d.n_sites;
    bool ad, au;
    sector_allow(d.target_up, m.ups, N, i, ad, au);
    bool up;
    if (a.mode == kSample) {
      up = draw_up<T>(raw[0], raw[1], ad, au, m.u[i]);
      if (m.valid) m.s_w[i] = up ? 1 : -1;
    } else {
      up = m.s[i] > 0;
    }
    m.ups += up;
    if (a.mode != kConnected || i >= m.k) {
      m.re += log_abs_cond(double(raw[0]), double(raw[1]), ad, au, up);
      m.im += double(up ? raw[3] : raw[2]);
    }
    if (a.mode != kConnected && a.prefix && m.valid) {  // kForward, kSample with storage
      double* P = a.prefix + m.b * 2 * (N + 1);
      P[2 * (i + 1)] = m.re;
      P[2 * (i + 1) + 1] = m.im;
    }
  }

  // The row walk's passes in order, numbered q = 2 (L y + l) + (0: h_l, 1: v_l) (h_l
  // of row y reads v_l of row y-3 from the ring slot that v_l of row y replaces).
  // Columns [lo, hi] of pass q; false when it has none.
  __device__ bool pass_cols(int q, int& lo, int& hi) const {
    const int l = (q >> 1) % d.blocks, y = (q >> 1) / d.blocks;
    const int packed = ((q & 1) ? cols_v : cols_h)[l * d.ly + y];
    lo = packed & 0xffff;
    hi = packed >> 16;
    return lo <= hi;
  }
  // The first pass >= q with columns to compute, or -1.
  __device__ int next_pass(int q) const {
    int lo, hi;
    for (; q < 2 * d.blocks * d.ly; ++q)
      if (pass_cols(q, lo, hi)) return q;
    return -1;
  }

  // Row walk: the conditionals of sites (y, xb..Lx-1) of every job from h_{L-1}.
  __device__ void row_out(Member<T>* mems, const WalkArgs<T>& a, int y, int xb) const {
    const int C = d.channels, L = d.blocks, oc = out_chunk(tile);
    for (int xc = xb; xc < d.lx; xc += oc) {
      const int nxc = min(oc, d.lx - xc);
      for (int e = threadIdx.x; e < tile * nxc * 4; e += blockDim.x) {
        const int q = e & 3, jx = e >> 2, j = jx / nxc, xi = jx - j * nxc;
        const T* hl = h_at(mems[j], L - 1, y, xc + xi);
        T z = w.bo[q];
        if (C % 4 == 0) {  // 16-byte loads of h (plain loads: the ring is written by this kernel)
          for (int c = 0; c < C; c += 4) {
            Vec4<T> hv = load4_sh(hl + c);  // (a generic load: global here)
            if constexpr (kWG) {  // (h_{L-1} stored biased)
              if (wg_round == 3)
#pragma unroll
                for (int u = 0; u < 4; ++u) hv.v[u] = tf32_unbias(hv.v[u]);
            }
#pragma unroll
            for (int u = 0; u < 4; ++u) z += w.wo[(c + u) * 4 + q] * hv.v[u];
          }
        } else {
          for (int c = 0; c < C; ++c) z += w.wo[c * 4 + q] * hl[c];
        }
        raw[(j * oc + xi) * 4 + q] = z;
      }
      __syncthreads();
      if (threadIdx.x < tile) {
        Member<T>& m = mems[threadIdx.x];
        for (int xi = 0; xi < nxc; ++xi)
          site_out(m, a, y * d.lx + xc + xi, raw + (threadIdx.x * oc + xi) * 4);
      }
      __syncthreads();
    }
  }
};

// kCC > 0: the kernel for networks of exactly kCC channels (kCC % 4 == 0): the channel
// count, the padded weight rows and everything derived from them are compile-time
// constants (shifts instead of integer divisions, immediate offsets, fewer registers);
// kCC = 0: any channel count. kPipe: the pipelined segment passes (Ctx::pass_seg_pipe;
// the 256-thread 32-channel TF32 row walks only).
template <typename T, int kThr, int kCC, int kMath, bool kBulkW = false, bool kPipe = false, bool kWG = false>
__global__ void __launch_bounds__(kThr, 1) walk_kernel(Dims d_in,         // lattice and network sizes
                                                        Weights<T> w,      // kernel layout, see walker.h
                                                        WalkArgs<T> a,     // inputs/outputs of the mode
                                                        int tile, int rows, int xs_stride, int w_shared,
                                                        int pipeline, int segments, int prefetch, int product_flags,
                                                        T* __restrict__ ring,         // [grid][tile][2][L][3][Lx][C]
                                                        int8_t* __restrict__ confs,   // [grid][tile][N]
                                                        unsigned long long* __restrict__ tiles_taken,  // zeroed
                                                        long long* __restrict__ prof,  // [grid][kProfSlots] or null
                                                        const float* __restrict__ wg_w)  // kWG: packed weights, else null
{
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Dims d = d_in;
  if constexpr (kCC > 0) {
    d.channels = kCC;
    d.c4 = kCC;
  }
  const int C = d.channels, N = d.n_sites, L = d.blocks;
  const int kmax = max(18 * C, 9 * (1 + C));
  using Cx = Ctx<T, kMath, kThr, kCC, kBulkW, kPipe, kWG>;
  Cx cx;
  cx.d = d;
  cx.w = w;
  cx.tile = tile;
  cx.rows = rows;
  cx.nthreads = kThr;
  cx.prefetch = prefetch && w_shared && !pipeline && tile <= rows;
  cx.pipeline = pipeline;
  cx.WS = d.c4 + 8;  // padded: conflict-free B fragments of the MMA path
  __shared__ unsigned long long wbar_sh;
  cx.wbar = &wbar_sh;
  if constexpr (kBulkW) {
    cx.WS = d.c4;  // one contiguous block (the FFMA product's B loads are conflict-free unpadded)
#ifdef NAQS_BULK_COPY
    if (threadIdx.x == 0) mbar_init(&wbar_sh);  // (tile setup's barriers come before the first use)
    auto aligned = [](const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15) == 0; };
    cx.bulk = w_shared && aligned(w.wh0) && aligned(w.wh) && aligned(w.wv0) && aligned(w.wv) &&
              (d.c4 * sizeof(T)) % 16 == 0;
#endif
  }
  // tensor-core products need the weights in shared memory and 8 | C <= 32
  cx.math = (sizeof(T) == 4 && w_shared && C % 8 == 0 && C <= 32) ? kMath : int(kFFMA);
  if constexpr (Cx::kBRegs) {
    if (cx.math != kTF32) __trap();  // plan() never launches it so (no FFMA fallback)
  }
  cx.S = xs_stride;
  cx.red_swz = (d.c4 & (d.c4 - 1)) == 0 ? d.c4 - 1 : 0;
  // segment path: two [3][ncol][2C + pad] buffers (padded columns) in the space of the
  // window chunk
  cx.ncol = (segments && C % 4 == 0 && !pipeline)
                ? rows * xs_stride / (6 * (2 * C + Cx::kSegPad))
                : 0;
  if (cx.ncol < 8) cx.ncol = 0;
  // product_flags (walk()): bit 0 wide vertical chunks, bits 1-2 the tile map, bit 5
  // block 0 of the pipelined passes by windows, bits 6-7 the wgmma passes' rounding
  // mode (Ctx::wg_round)
  if constexpr (kPipe) {
    cx.block0_seg = !((product_flags >> 5) & 1);
  }
  if constexpr (!Cx::kBRegs) {
    if (threadIdx.x == 0) {  // (read after the tile setup's barriers)
      const int tm = (product_flags >> 1) & 3;
      tile_map_sh = (tm == 1 || tm == 3) && d.c4 != 32 ? 0 : tm;  // (maps 1 and 3 are for 8 channel groups)
    }
  }
  // wider vertical chunks (pass_seg): FFMA products only (the tensor-core products take at
  // most 32 rows), and only where their K-split sums fit in red (ks * 2 rows * C4 <= threads
  // * 16 holds for C4 <= 2 threads / rows: every 4 x 4 tile's 16 partial sums)
  cx.ncol_v = 0;
  if (cx.ncol && (product_flags & 1) && cx.math == kFFMA && !Cx::kBRegs &&
      size_t(2 * rows) * d.c4 <= size_t(red_elems(kThr, rows, d.c4, false)))
    cx.ncol_v = cx.ncol * (2 * C + Cx::kSegPad) / (C + Cx::kSegPad);
  cx.seg_min_nx = segments == 2 ? 1 : 3;
  if constexpr (kPipe) {
    // [red][3 segment buffers | red_b] (pipe_region_elems); block 0's window passes take
    // their chunk and weights from the buffers' space
    static_assert(Cx::kBHold && Cx::kSegPad == kPipeSegPad, "the pipelined passes are the 256-thread TF32 instance's");
    if (cx.ncol != pipe_ncol(rows, xs_stride, C)) __trap();  // (plan() never launches it without segments)
    const int redn = red_elems(kThr, rows, d.c4, true);
    cx.red = reinterpret_cast<T*>(smem_raw);
    cx.xs = cx.red + redn;
    cx.red_b = cx.xs + size_t(9) * cx.ncol * (2 * C + kPipeSegPad);
    cx.hcur = cx.xs + pipe_region_elems(rows, xs_stride, C, redn);
    if constexpr (kWG) {
      // the wgmma passes' region overlays block 0's (passes run one after the other)
      cx.wg_b = reinterpret_cast<float*>(smem_raw);
      cx.wg_a = cx.wg_b + kWgBElems;
      cx.wg_w = wg_w;
      cx.wg_round = (product_flags >> 6) & 3;
      T* const wg_end = reinterpret_cast<T*>(smem_raw) + wg_region_elems();
      if (wg_end > cx.hcur) cx.hcur = wg_end;
    }
  } else {
    cx.xs = reinterpret_cast<T*>(smem_raw);
    cx.red = cx.xs + size_t(rows) * xs_stride;
    cx.hcur = cx.red + size_t(red_elems(kThr, rows, d.c4, Cx::kBRegs));
  }
  cx.raw = cx.hcur + (a.mode == kSample ? size_t(tile) * C : 0);
  // byte offsets from smem_raw (pointers derived from it stay shared-space loads)
  size_t off = (size_t(reinterpret_cast<unsigned char*>(cx.raw + size_t(raw_elems(tile))) - smem_raw) + 15) &
               ~size_t(15);
  cx.wsm = nullptr;
  if constexpr (kPipe) {
    cx.wsm = cx.xs + size_t(rows) * xs_stride;  // block 0's weights, after its window chunk
  } else if (w_shared) {
    cx.wsm = reinterpret_cast<T*>(smem_raw + off);
    off += size_t(kmax) * (d.c4 + 8) * sizeof(T);
  }
  cx.mem = reinterpret_cast<Member<T>*>(smem_raw + off);
  Cone* cone_sh = reinterpret_cast<Cone*>(smem_raw + off + size_t(tile) * sizeof(Member<T>));
  int* cols_h = reinterpret_cast<int*>(cone_sh + 1);
  int* cols_v = cols_h + L * d.ly;
  // (offsets from smem_raw, not integer casts, so that the loads stay shared-space LDS)
  const size_t rsrc_off = (size_t(reinterpret_cast<unsigned char*>(cols_v + L * d.ly) - smem_raw) + 15) & ~size_t(15);
  cx.rsrc = reinterpret_cast<RowSrc<T>*>(smem_raw + rsrc_off);
  cx.orow = reinterpret_cast<T**>(cx.rsrc + tile * 6);
  cx.cols_h = cols_h;
  cx.cols_v = cols_v;
  __shared__ long long prof_sh[kProfSlots];  // (plan() leaves room for it)
  cx.prof = prof ? prof_sh : nullptr;
  if (cx.prof && threadIdx.x == 0)
    for (int q = 0; q < kProfSlots; ++q) prof_sh[q] = 0;
  // the kernel's cycles (slot 4): the start subtracted now, the end added at the end (a
  // start time held in a register for the whole kernel spilled in the 255-register
  // instance)
  if (cx.prof && threadIdx.x == 0) cx.prof[4] -= clock64();
  const int64_t ring_job = int64_t(L) * 3 * d.lx * C;  // one branch of one job
  const int64_t store_job = int64_t(L) * d.ly * d.lx * C;
  const int64_t n_tiles = (a.n_jobs + tile - 1) / tile;

  // The product reads whole 4-k groups of xs rows: keep the padding finite (zeros).
  // (kPipe: the whole buffer region, none of it read before it is written, all of it
  // finite)
  // (kWG: from the start, the exchange and weights included)
  T* const zero_from = kWG ? reinterpret_cast<T*>(smem_raw) : cx.xs;
  const int n_zero = kWG     ? int(cx.hcur - zero_from)
                     : kPipe ? int(pipe_region_elems(rows, xs_stride, C, red_elems(kThr, rows, d.c4, true)))
                             : rows * xs_stride;
  for (int e = threadIdx.x; e < n_zero; e += blockDim.x) zero_from[e] = T(0);

  // Tiles: CTA b takes tile b first, then the next one not yet taken (an atomic counter,
  // in index order). The local-energy jobs are sorted by their first flip, so tiles get
  // cheaper along the index (fewer rows to walk); a fixed stride (b, b + grid, ...)
  // left the CTAs of low b with the most work at the end (local energies 2.8-3.4%
  // slower, run 39).
  __shared__ long long next_tile;
  for (int64_t t = blockIdx.x; t < n_tiles;) {
    // ---- tile setup: one thread per job
    if (threadIdx.x < tile) {
      const int j = threadIdx.x;
      int64_t job = t * tile + j;
      Member<T> m{};
      m.valid = job < a.n_jobs;
      if (!m.valid) job = t * tile;  // mirror the first job of the tile (reads stay valid)
      T* my_ring = ring + (int64_t(blockIdx.x) * tile + j) * 2 * ring_job;
      m.hw = my_ring;
      m.vw = my_ring + ring_job;
      m.R = 3;
      if (a.mode != kConnected) {
        m.b = job;
        if (a.mode == kSample) {
          m.s_w = a.spins_out + job * N;
          m.s = m.s_w;
          m.u = a.uniforms + job * N;
        } else {
          m.s = a.spins + job * N;
        }
        if (a.store_h && m.valid) {  // keep every activation (the storage replaces the rings)
          m.hw = a.store_h + job * store_job;
          m.vw = a.store_v + job * store_job;
          m.R = d.ly;
        }
      } else {
        m.b = a.jobs[3 * job];
        m.m = a.jobs[3 * job + 1];
        m.k = int(a.jobs[3 * job + 2]);
        m.s = confs + (int64_t(blockIdx.x) * tile + j) * N;
        m.hp = a.store_h + m.b * store_job;
        m.vp = a.store_v + m.b * store_job;
      }
      cx.mem[j] = m;
    }
    __syncthreads();
    if (a.mode == kSample) {  // undecided sites read as 0 (their weights are zero anyway)
      for (int e = threadIdx.x; e < tile * N; e += blockDim.x) {
        const int j = e / N;
        if (cx.mem[j].valid) cx.mem[j].s_w[e - j * N] = 0;
      }
    } else if (a.mode == kConnected) {
      for (int e = threadIdx.x; e < tile * N; e += blockDim.x) {
        const int j = e / N, i = e - j * N;
        const_cast<int8_t*>(cx.mem[j].s)[i] = a.spins[cx.mem[j].b * N + i];
      }
    }
    __syncthreads();
    const int start = a.mode == kConnected ? cx.mem[0].k : 0;  // jobs sorted by k: the tile's minimum
    if (threadIdx.x == 0) {
      // kConnected: the bounding box of every flipped site of the tile (the mirrored
      // invalid jobs repeat the first job)
      Cone c = Cone::everything(d.lx, d.ly, start);
      if (a.mode == kConnected && !a.no_cone) {
        c = Cone::of_flips(d.lx, d.ly);
        for (int j = 0; j < tile; ++j) c.add_flips(a.flips + (cx.mem[j].b * a.n_conn + cx.mem[j].m) * 2);
      }
      *cone_sh = c;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < L * d.ly; e += blockDim.x) {
      const int l = e / d.ly, y = e - l * d.ly;
      int lo, hi;
      cols_h[e] = cone_sh->h_cols(l, y, lo, hi) ? lo | (hi << 16) : 1;
      cols_v[e] = cone_sh->v_cols(l, y, lo, hi) ? lo | (hi << 16) : 1;
    }
    if (threadIdx.x < tile) {
      Member<T>& m = cx.mem[threadIdx.x];
      if (a.mode == kConnected) {
        int8_t* conf = const_cast<int8_t*>(m.s);
        for (int q = 0; q < 2; ++q) {
          const int64_t site = a.flips[(m.b * a.n_conn + m.m) * 2 + q];
          if (site >= 0) conf[site] = int8_t(-conf[site]);
        }
      }
      int ups = 0;
      for (int i = 0; i < start; ++i) ups += m.s[i] > 0;
      m.ups = ups;
      m.re = m.im = 0.0;
      if (a.mode != kConnected && a.prefix && m.valid) {
        double* P = a.prefix + m.b * 2 * (N + 1);
        P[0] = P[1] = 0.0;
      }
    }
    __syncthreads();

    if (a.mode == kSample) {
      // ---- site walk
      for (int i = start; i < N; ++i) {
        const int y = i / d.lx, x = i - y * d.lx;
        const bool row_end = x == d.lx - 1 && y < d.ly - 1;
        for (int l = 0; l < L; ++l) {
          // weights of the next pass: h_{l+1}, else v_0 at a row end, else h_0 of site i+1
          const bool nh = l < L - 1 || !row_end;
          const int nl = l < L - 1 ? l + 1 : (row_end ? 0 : (i + 1 < N ? 0 : -1));
          cx.pass(true, l, y, x, x + 1, l == L - 1, i > start || l > 0, nh, nl, l > 0 && cx.prefetch,
                  l < L - 1 && cx.prefetch);
        }
        long long t0 = cx.prof && threadIdx.x == 0 ? clock64() : 0;
        if (threadIdx.x < tile) {
          Member<T>& m = cx.mem[threadIdx.x];
          const T* hl = cx.hcur + threadIdx.x * C;
          T raw[4];
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            T z = w.bo[q];
            for (int c = 0; c < C; ++c) z += w.wo[c * 4 + q] * hl[c];
            raw[q] = z;
          }
          cx.site_out(m, a, i, raw);
        }
        __syncthreads();
        cx.tick(3, t0);
        if (row_end) {
          for (int l = 0; l < L; ++l) cx.pass(false, l, y, 0, d.lx, false, true, l == L - 1, l < L - 1 ? l + 1 : 0);
          cx.tick(12, t0);  // the vertical passes (their phases are also in slots 0-2, 6)
        }
      }
    } else {
      // ---- row walk (spins given): per row and block, h_l then v_l (h_l of row y
      // reads v_l of row y-3 from the ring slot v_l of row y replaces), each over the
      // columns of the cone; each pass starts the copy of the next pass's weights.
      const int row0 = start / d.lx;
      int q = cx.next_pass(2 * L * row0);
      bool staged = false;
      for (int y = row0; y < d.ly; ++y) {
        while (q >= 0 && (q >> 1) / L == y) {
          const int qn = cx.next_pass(q + 1);
          int lo, hi;
          cx.pass_cols(q, lo, hi);
          // (kPipe: no pass stages the next one's weights, see pass_seg_pipe)
          const int l = (q >> 1) % L;
          bool done = false;
          if constexpr (kWG) {  // blocks l > 0 of the wgmma instance (see pass())
            if (l > 0) {
              if (!(q & 1)) cx.template pass_seg_wg<true>(l, y, lo, hi + 1);
              else cx.template pass_seg_wg<false>(l, y, lo, hi + 1);
              done = true;
            }
          }
          if (!done)
            cx.pass(!(q & 1), l, y, lo, hi + 1, false, staged, qn >= 0 && !(qn & 1),
                    qn >= 0 && !kPipe ? (qn >> 1) % L : -1);
          staged = qn >= 0 && !kPipe;
          q = qn;
        }
        long long t0 = cx.prof && threadIdx.x == 0 ? clock64() : 0;
        cx.row_out(cx.mem, a, y, y == row0 ? start - row0 * d.lx : 0);
        cx.tick(3, t0);
      }
    }

    // ---- results
    if (threadIdx.x < tile) {
      const Member<T>& m = cx.mem[threadIdx.x];
      if (m.valid) {
        if (a.mode == kConnected) {
          const double* P = a.prefix + m.b * 2 * (N + 1);
          a.out[2 * (m.b * a.n_conn + m.m)] = P[2 * m.k] + m.re;
          a.out[2 * (m.b * a.n_conn + m.m) + 1] = P[2 * m.k + 1] + m.im;
        } else if (a.log_psi) {
          a.log_psi[2 * m.b] = m.re;
          a.log_psi[2 * m.b + 1] = m.im;
        }
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) next_tile = int64_t(gridDim.x) + int64_t(atomicAdd(tiles_taken, 1ull));
    __syncthreads();
    t = next_tile;
  }
  if (cx.prof && threadIdx.x == 0) {
    cx.prof[4] += clock64();
    for (int q = 0; q < kProfSlots; ++q) prof[kProfSlots * blockIdx.x + q] = prof_sh[q];
  }
}

}  // namespace

// An instance as the host pointer walker.cu launches (walk_instances.h); each walk_*.cu
// file instantiates this for the instances it compiles.
template <typename T, int kThr, int kCC, int kMath, bool kBulkW, bool kPipe, bool kWG>
WalkKernel<T> walk_kernel_of() {
  return walk_kernel<T, kThr, kCC, kMath, kBulkW, kPipe, kWG>;
}

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
