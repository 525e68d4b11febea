// CUDA matrix-free Heisenberg matvec in a U(1) sector (float64), gather form.
//
// One thread per output row r (grid-stride, persistent grid): it reads its basis
// word, loops over the edges held in the kernel-parameter bank (uniform across the
// warp, so reads broadcast), accumulates the diagonal, and for each antiparallel pair
// gathers x at the rank of the flipped word. Each y[r] is written once: no atomics,
// no race, deterministic result.
//
// Rank look-up: two-level split tables, rank = hi_offset[s >> L] + lo_rank[s & mask].
// Chosen over the combinatorial-number-system sum (k look-ups of C(p, j) per
// connection, 15 for N = 30) because it costs two loads per connection whatever k
// is; the low table (2^L int32, L <= 14, <= 64 KiB) sits in shared memory, the high
// one (2^(N-L) int64) stays hot in L1/L2. The variant with both tables in global
// memory is kept for the benchmark to compare.
#include <cuda_runtime.h>

#include <cstdint>

#include "ed_launch.h"
#include "persistent_grid.h"

namespace naqs {
namespace ed {
namespace cuda {
namespace {

struct EdgeParams {
  int32_t n_edges;
  uint8_t site_i[kMaxEdges];
  uint8_t site_j[kMaxEdges];
  double zz[kMaxEdges];
  double exch[kMaxEdges];
};

template <bool kSharedLow>
__global__ void __launch_bounds__(512) heisenberg_sector_matvec_kernel(
    const uint64_t* __restrict__ basis,      // [dim]
    const double* __restrict__ x,            // [dim]
    double* __restrict__ y,                  // [dim]
    int64_t dim,
    const __grid_constant__ EdgeParams edges,
    const int32_t* __restrict__ lo_rank,     // [2^lo_bits]
    const int64_t* __restrict__ hi_offset,   // [2^(N - lo_bits)]
    int lo_bits) {
  extern __shared__ int32_t lo_shared[];
  const int32_t* lo = lo_rank;
  if constexpr (kSharedLow) {
    const int n_lo = 1 << lo_bits;
    for (int i = threadIdx.x; i < n_lo; i += blockDim.x) lo_shared[i] = lo_rank[i];
    __syncthreads();
    lo = lo_shared;
  }
  const uint64_t lo_mask = (uint64_t(1) << lo_bits) - 1;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < dim; r += stride) {
    const uint64_t s = basis[r];
    double diag = 0.0, off = 0.0;
#pragma unroll 4
    for (int e = 0; e < edges.n_edges; ++e) {
      const int i = edges.site_i[e], j = edges.site_j[e];
      const bool anti = ((s >> i) ^ (s >> j)) & 1;
      if (anti) {
        const uint64_t t = s ^ ((uint64_t(1) << i) | (uint64_t(1) << j));
        const int64_t c = __ldg(hi_offset + (t >> lo_bits)) + lo[t & lo_mask];
        off += edges.exch[e] * __ldg(x + c);
        diag -= edges.zz[e];
      } else {
        diag += edges.zz[e];
      }
    }
    y[r] = diag * x[r] + off;
  }
}

template <bool kSharedLow>
cudaError_t launch(const uint64_t* basis, const double* x, double* y, int64_t dim, const EdgeParams& params,
                   const int32_t* lo_rank, const int64_t* hi_offset, int lo_bits, cudaStream_t stream) {
  constexpr int kThreads = 512;
  const size_t shared = kSharedLow ? (size_t(1) << lo_bits) * sizeof(int32_t) : 0;
  auto kernel = heisenberg_sector_matvec_kernel<kSharedLow>;
  // Persistent grid: every resident block loops over rows, so the shared table is
  // loaded once per block rather than once per 512 rows.
  int blocks = 0;
  const cudaError_t err = persistent_grid(kernel, dim, kThreads, shared, &blocks);
  if (err != cudaSuccess) return err;
  kernel<<<blocks, kThreads, shared, stream>>>(basis, x, y, dim, params, lo_rank, hi_offset, lo_bits);
  return cudaGetLastError();
}

}  // namespace

cudaError_t heisenberg_sector_matvec(const uint64_t* basis, const double* x, double* y, int64_t dim,
                                     const int64_t* edges_host, const double* zz_host, const double* exch_host,
                                     int n_edges, const int32_t* lo_rank, const int64_t* hi_offset, int lo_bits,
                                     RankTables variant, cudaStream_t stream) {
  if (dim <= 0) return cudaSuccess;
  if (n_edges < 0 || n_edges > kMaxEdges || lo_bits < 1 || lo_bits > 14) return cudaErrorInvalidValue;
  EdgeParams params;
  params.n_edges = n_edges;
  for (int e = 0; e < n_edges; ++e) {
    params.site_i[e] = static_cast<uint8_t>(edges_host[2 * e]);
    params.site_j[e] = static_cast<uint8_t>(edges_host[2 * e + 1]);
    params.zz[e] = zz_host[e];
    params.exch[e] = exch_host[e];
  }
  if (variant == RankTables::kGlobal)
    return launch<false>(basis, x, y, dim, params, lo_rank, hi_offset, lo_bits, stream);
  return launch<true>(basis, x, y, dim, params, lo_rank, hi_offset, lo_bits, stream);
}

}  // namespace cuda
}  // namespace ed
}  // namespace naqs
