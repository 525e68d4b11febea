// What the host side of the CUDA walker (walker.cu: plan, smem_bytes) must know of the
// kernel (walk_kernel.cuh): the product modes, the per-job records kept in shared memory
// and the sizes of the kernel's shared-memory regions. Host and device code.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "walker_cuda.h"

namespace naqs {
namespace pixelcnn {
namespace cuda {
namespace {

// The product arithmetic of a kernel instance (NAQS_PIXELCNN_MATH, see math_mode in walker.cu).
enum Math : int { kFFMA = 0, k3xTF32 = 1, kTF32 = 2 };

constexpr int kMaxRows = 32;   // rows of one product chunk
constexpr int kOutChunk = 16;  // sites per chunk of the row output phase
constexpr int kMaxSplit = 16;  // K-split groups of a product
constexpr int kProfSlots = 16;  // NAQS_PIXELCNN_PROFILE=1 counters per CTA (Ctx::prof)

template <typename T>
struct Member {
  const int8_t* s;  // configuration walked [N] (spins_out row when sampling)
  int8_t* s_w;      // writable row when sampling, else null
  const double* u;  // uniforms [N] when sampling
  T* hw;            // write buffer of h: [L][R][Lx][C]
  T* vw;            // write buffer of v
  const T* hp;      // storage of the unflipped sample (connected), [L][Ly][Lx][C]
  const T* vp;
  int64_t b, m;
  int k, R, ups, valid;
  double re, im;
};

// Where the segment path copies one input row of one job from (pass_seg builds these per
// pass, so that gather_seg's per-piece work is a table lookup, one compare and one
// address): the row at column 0 in the write buffer (ring or storage; null: the row is
// outside the lattice), the same row in the sample's storage (connected walks, else
// null) and the light-cone columns lo | hi << 16 that come from the first.
template <typename T>
struct RowSrc {
  const T* ring;
  const T* store;
  int cols, pad;
};


// Elements of the K-split buffer red: the FFMA product's split (up to 16 per thread),
// or 8 K groups of rows x C4 for the TF32 register-B product (Ctx::kBRegs).
__host__ __device__ inline int red_elems(int threads, int rows, int c4, bool b_regs) {
  const int a = threads * 16, b = (b_regs ? 8 : 1) * rows * c4;
  return a > b ? a : b;
}

// kPipe instance (Ctx::pass_seg_pipe): segment columns padded by kPipeSegPad floats (the
// register-B instances' kSegPad), ncol columns a buffer as in the other instances, and the
// elements from the first of its three segment buffers on: the buffers and the second
// K-split buffer (red elements), or block 0's window chunk [rows][S] and its weights
// [9 (1 + C)][C + 8] (pass(), which stages them itself), whichever is larger.
constexpr int kPipeSegPad = 8;
__host__ __device__ inline int pipe_ncol(int rows, int xs_stride, int C) {
  return rows * xs_stride / (6 * (2 * C + kPipeSegPad));
}
__host__ __device__ inline size_t pipe_region_elems(int rows, int xs_stride, int C, int red) {
  const size_t seg = size_t(9) * pipe_ncol(rows, xs_stride, C) * (2 * C + kPipeSegPad) + size_t(red);
  const size_t win = size_t(rows) * xs_stride + size_t(9) * (1 + C) * (C + 8);
  return seg > win ? seg : win;
}

// kWG instance (Ctx::pass_seg_wg: the TF32 row passes of blocks l > 0 on wgmma). A chunk is
// up to kWgRows m-rows: segment columns, one m-row per column whose window starts there
// (the last 2 of each job's columns start no window: their rows are computed and
// dropped). Shared memory, from the start of the dynamic region: the pass's weights
// [K / 4][C][4] (h: K = 576) and two A buffers [part][dy][channel quad][kWgSL][4].
constexpr int kWgRows = 64;                     // wgmma's M
constexpr int kWgCols = kWgRows + 2;            // segment columns of a chunk
constexpr int kWgSL = 66;                       // column slots of a plane
constexpr int kWgPlane = kWgSL * 4;             // floats of one channel-quad plane
constexpr int kWgABuf = 2 * 3 * 8 * kWgPlane;   // floats of one A buffer (2 parts x 3 rows x 8 quads)
constexpr int kWgBElems = 18 * 32 * 32;         // the h pass's weights (32 channels)
constexpr int kWgPacked = 27 * 32 * 32;         // packed weights of one block l > 0 (h, then v)
__host__ __device__ inline size_t wg_region_elems() { return size_t(kWgBElems) + 2 * kWgABuf; }

// Sites per chunk of the row walk's output phase (Ctx::row_out) and the elements of its
// raw-output buffer: kOutChunk sites for tiles of up to kMaxRows jobs, fewer for larger
// tiles (the buffer stays at kMaxRows x kOutChunk x 4, which the 64-job tiles of the
// local energies need to fit in shared memory).
__host__ __device__ inline int out_chunk(int tile) { return tile > kMaxRows ? kOutChunk * kMaxRows / tile : kOutChunk; }
__host__ __device__ inline int raw_elems(int tile) { return tile * out_chunk(tile) * 4; }

}  // namespace
}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
