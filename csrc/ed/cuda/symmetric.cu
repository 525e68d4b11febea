// CUDA kernels of the symmetric sector: representative enumeration and the gather-form
// Heisenberg matvec, for the two group forms of ed_group.h (generic byte tables, read
// through the read-only cache) and ed_torus.h (translations by bit operations, point
// tables in shared memory). The group arithmetic is the code the CPU kernels run
// (ed_cpu.cpp), compiled for the device.
//
// Enumeration: one thread per chunk of consecutive sector words (unrank the first, then
// Gosper's hack); the early-exit orbit-minimum test rejects most words after a few
// images. Matvec: one thread per representative row; the antiparallel bonds of the row are
// visited through a per-word bit mask (so the lanes of a warp stay busy on their own
// bonds instead of idling on parallel ones); each flipped state is mapped to its orbit
// minimum and character, then ranked by a branch-free binary search in the sorted
// representatives. Each y[r] is written once: no atomics on y, deterministic results.
#include <cuda_runtime.h>

#include <cstdint>

#include "../ed_group.h"
#include "../ed_kernels.h"
#include "../ed_torus.h"
#include "ed_launch.h"
#include "persistent_grid.h"

namespace naqs {
namespace ed {
namespace cuda {
namespace {

constexpr int kThreads = 256;

struct SymEdgeParams {
  int32_t n_edges;
  uint8_t bit_i[kMaxEdges];  // bit of site i in the word the kernel works on
  uint8_t bit_j[kMaxEdges];
  double zz[kMaxEdges];
  double exch[kMaxEdges];
};

// Index of key in the sorted a[0, n), or -1.
__device__ __forceinline__ int64_t find_sorted(const uint64_t* __restrict__ a, int64_t n, uint64_t key) {
  int64_t base = 0, len = n;
  while (len > 1) {
    const int64_t half = len >> 1;
    base = (__ldg(reinterpret_cast<const unsigned long long*>(a) + base + half) <= key) ? base + half : base;
    len -= half;
  }
  return (n > 0 && a[base] == key) ? base : -1;
}

// Antiparallel bonds among edges [32 w, 32 w + 32) of the word v, as a bit mask; adds their
// diagonal terms to diag. The edge index is uniform over the lanes that run this, so the
// parameter-bank reads broadcast.
__device__ __forceinline__ uint32_t anti_word(const SymEdgeParams& edges, uint64_t v, int w, double& diag) {
  uint32_t anti = 0;
  const int first = 32 * w;
  const int count = min(32, edges.n_edges - first);
  for (int q = 0; q < count; ++q) {
    const int e = first + q;
    const uint32_t a = static_cast<uint32_t>(((v >> edges.bit_i[e]) ^ (v >> edges.bit_j[e])) & 1);
    anti |= a << q;
    diag += a ? -edges.zz[e] : edges.zz[e];
  }
  return anti;
}

// The row loop shared by both group forms. rep_of(target, &rep) -> character (+1/-1) or 0
// (vanishing target); vanishes(target) is asked only when the minimum is not in reps.
// v_of_row(s) gives the word the edge bits refer to (the configuration itself, or its
// lane word for the torus form); target_of(t) maps a flipped word back for rep_of.
template <typename WordOf, typename RepOf, typename Vanishes>
__device__ __forceinline__ void matvec_rows(const uint64_t* __restrict__ reps, const double* __restrict__ x,
                                            const double* __restrict__ z, const double* __restrict__ sqrt_orbit,
                                            double* __restrict__ y, int64_t dim, const SymEdgeParams& edges,
                                            const uint64_t* pair_shared, const double* exch_shared, WordOf word_of,
                                            RepOf rep_of, Vanishes vanishes, unsigned long long* missing) {
  unsigned long long local_missing = 0;
  const int n_words = (edges.n_edges + 31) / 32;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < dim; r += stride) {
    const uint64_t v = word_of(reps[r]);
    double diag = 0.0, off = 0.0;
    int w = 0;
    uint32_t anti = n_words > 0 ? anti_word(edges, v, 0, diag) : 0;
    while (true) {
      while (anti == 0 && w + 1 < n_words) anti = anti_word(edges, v, ++w, diag);
      if (anti == 0) break;
      const int e = 32 * w + __ffs(anti) - 1;
      anti &= anti - 1;
      const uint64_t t = v ^ pair_shared[e];
      uint64_t rep = 0;
      const int chi = rep_of(t, &rep);
      if (chi == 0) continue;
      const int64_t c = find_sorted(reps, dim, rep);
      if (c < 0) {
        local_missing += vanishes(t) ? 0 : 1;
        continue;
      }
      off += chi * exch_shared[e] * __ldg(z + c);
    }
    y[r] = diag * x[r] + sqrt_orbit[r] * off;
  }
  if (local_missing) atomicAdd(missing, local_missing);
}

__device__ __forceinline__ void load_edges_shared(const SymEdgeParams& edges, uint64_t* pair_shared,
                                                  double* exch_shared) {
  for (int e = threadIdx.x; e < edges.n_edges; e += blockDim.x) {
    pair_shared[e] = (uint64_t(1) << edges.bit_i[e]) | (uint64_t(1) << edges.bit_j[e]);
    exch_shared[e] = edges.exch[e];
  }
}

// The sector walk shared by both group forms: each thread unranks the first word of a
// chunk of the sorted sector and walks on with Gosper's hack; the words for which
// is_rep(s, &orbit) holds are appended at atomicAdd positions (count may exceed capacity:
// the front end then retries with room for all).
template <typename IsRep>
__device__ __forceinline__ void enumerate_representatives(int n_sites, int n_up, int64_t dim, int64_t chunk,
                                                          const uint64_t* binom, IsRep is_rep, uint64_t* reps,
                                                          int64_t* orbit, int64_t capacity,
                                                          unsigned long long* count) {
  const int64_t n_chunks = (dim + chunk - 1) / chunk;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < n_chunks; c += stride) {
    const int64_t begin = c * chunk, end = min(dim, begin + chunk);
    uint64_t s = n_up == 0 ? 0 : group::unrank(static_cast<uint64_t>(begin), n_sites, n_up, binom);
    for (int64_t r = begin; r < end; ++r) {
      int64_t o = 0;
      if (is_rep(s, &o)) {
        const unsigned long long pos = atomicAdd(count, 1ull);
        if (pos < static_cast<unsigned long long>(capacity)) {
          reps[pos] = s;
          orbit[pos] = o;
        }
      }
      if (r + 1 < end && n_up > 0) s = group::next_same_popcount(s);
    }
  }
}

// ---------------------------------------------------------------- generic (byte tables)
__global__ void __launch_bounds__(kThreads) generic_representatives_kernel(int n_sites, int n_up, int64_t dim,
                                                                           int64_t chunk, const uint64_t* binom,
                                                                           GroupTables group, uint64_t* reps,
                                                                           int64_t* orbit, int64_t capacity,
                                                                           unsigned long long* count) {
  enumerate_representatives(
      n_sites, n_up, dim, chunk, binom, [&](uint64_t s, int64_t* o) { return group::is_representative(group, s, o); },
      reps, orbit, capacity, count);
}

__global__ void __launch_bounds__(kThreads) generic_matvec_kernel(const uint64_t* __restrict__ reps,
                                                                  const double* __restrict__ x,
                                                                  const double* __restrict__ z,
                                                                  const double* __restrict__ sqrt_orbit,
                                                                  double* __restrict__ y, int64_t dim,
                                                                  const __grid_constant__ SymEdgeParams edges,
                                                                  GroupTables group, unsigned long long* missing) {
  __shared__ uint64_t pair_shared[kMaxEdges];
  __shared__ double exch_shared[kMaxEdges];
  load_edges_shared(edges, pair_shared, exch_shared);
  __syncthreads();
  matvec_rows(
      reps, x, z, sqrt_orbit, y, dim, edges, pair_shared, exch_shared, [](uint64_t s) { return s; },
      [&](uint64_t t, uint64_t* rep) {
        double chi = 1.0;
        *rep = group::representative(group, t, &chi);
        return chi < 0 ? -1 : 1;
      },
      [&](uint64_t t) { return group::vanishes(group, t); }, missing);
}

// ---------------------------------------------------------------- torus form
// Dynamic shared memory: the point tables [n_point][ly][2^lx] (uint64).
__device__ __forceinline__ void load_table_shared(torus::TorusView& group, uint64_t* table_shared) {
  const int64_t n = int64_t(group.n_point) * (int64_t(group.ly) << group.lx);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    table_shared[i] = __ldg(reinterpret_cast<const unsigned long long*>(group.table) + i);
  group.table = table_shared;
}

template <int LX, int LY>
__global__ void __launch_bounds__(kThreads) torus_representatives_kernel(int n_sites, int n_up, int64_t dim,
                                                                         int64_t chunk, const uint64_t* binom,
                                                                         torus::TorusView group, uint64_t* reps,
                                                                         int64_t* orbit, int64_t capacity,
                                                                         unsigned long long* count) {
  extern __shared__ uint64_t table_shared[];
  load_table_shared(group, table_shared);
  __syncthreads();
  enumerate_representatives(
      n_sites, n_up, dim, chunk, binom,
      [&](uint64_t s, int64_t* o) {
        uint32_t lo, hi;
        torus::to_lanes<LX, LY>(s, group, lo, hi);
        return torus::is_representative<LX, LY>(group, lo, hi, o);
      },
      reps, orbit, capacity, count);
}

// Edge bits refer to the lane word here (the front end of this file converts them).
template <int LX, int LY>
__global__ void __launch_bounds__(kThreads) torus_matvec_kernel(const uint64_t* __restrict__ reps,
                                                                const double* __restrict__ x,
                                                                const double* __restrict__ z,
                                                                const double* __restrict__ sqrt_orbit,
                                                                double* __restrict__ y, int64_t dim,
                                                                const __grid_constant__ SymEdgeParams edges,
                                                                torus::TorusView group,
                                                                unsigned long long* missing) {
  extern __shared__ uint64_t table_shared[];
  __shared__ uint64_t pair_shared[kMaxEdges];
  __shared__ double exch_shared[kMaxEdges];
  load_table_shared(group, table_shared);
  load_edges_shared(edges, pair_shared, exch_shared);
  __syncthreads();
  matvec_rows(
      reps, x, z, sqrt_orbit, y, dim, edges, pair_shared, exch_shared,
      [&](uint64_t s) {
        uint32_t lo, hi;
        torus::to_lanes<LX, LY>(s, group, lo, hi);
        return (uint64_t(hi) << 32) | lo;
      },
      [&](uint64_t t, uint64_t* rep) {
        return torus::representative<LX, LY>(group, static_cast<uint32_t>(t), static_cast<uint32_t>(t >> 32), rep);
      },
      [](uint64_t) { return false; }, missing);
}

// ---------------------------------------------------------------- launch helpers
template <typename Kernel>
cudaError_t grid_for(Kernel kernel, int64_t work_items, size_t shared, int* blocks) {
  return persistent_grid(kernel, work_items, kThreads, shared, blocks);
}

// Chunk length of the enumeration: enough chunks for ~8 waves of threads, at least 64 words.
int64_t enumeration_chunk(int64_t dim) {
  const int64_t target_chunks = int64_t(132) * 2048 * 8;
  int64_t chunk = dim / target_chunks;
  return chunk < 64 ? 64 : chunk;
}

int64_t sector_dim(int n, int k) { return static_cast<int64_t>(binomial(n, k)); }

bool fill_edges(SymEdgeParams& params, const int64_t* edges_host, const double* zz_host, const double* exch_host,
                int n_edges, const torus::TorusView* lanes) {
  if (n_edges < 0 || n_edges > kMaxEdges) return false;
  params.n_edges = n_edges;
  for (int e = 0; e < n_edges; ++e) {
    int a = static_cast<int>(edges_host[2 * e]), b = static_cast<int>(edges_host[2 * e + 1]);
    if (lanes != nullptr) {  // site x + lx*y -> lane bit x + 8*y
      a = a % lanes->lx + 8 * (a / lanes->lx);
      b = b % lanes->lx + 8 * (b / lanes->lx);
    }
    params.bit_i[e] = static_cast<uint8_t>(a);
    params.bit_j[e] = static_cast<uint8_t>(b);
    params.zz[e] = zz_host[e];
    params.exch[e] = exch_host[e];
  }
  return true;
}

size_t torus_table_bytes(const torus::TorusView& g) {
  return static_cast<size_t>(g.n_point) * (static_cast<size_t>(g.ly) << g.lx) * sizeof(uint64_t);
}

template <int LX, int LY>
cudaError_t launch_torus_representatives(int n_sites, int n_up, const torus::TorusView& group, const uint64_t* binom,
                                         uint64_t* reps, int64_t* orbit, int64_t capacity,
                                         unsigned long long* count, cudaStream_t stream) {
  const int64_t dim = sector_dim(n_sites, n_up);
  const int64_t chunk = enumeration_chunk(dim);
  const size_t shared = torus_table_bytes(group);
  auto kernel = torus_representatives_kernel<LX, LY>;
  int blocks = 0;
  cudaError_t err = grid_for(kernel, (dim + chunk - 1) / chunk, shared, &blocks);
  if (err != cudaSuccess) return err;
  kernel<<<blocks, kThreads, shared, stream>>>(n_sites, n_up, dim, chunk, binom, group, reps, orbit, capacity, count);
  return cudaGetLastError();
}

template <int LX, int LY>
cudaError_t launch_torus_matvec(const uint64_t* reps, const double* x, const double* z, const double* sqrt_orbit,
                                double* y, int64_t dim, const SymEdgeParams& params, const torus::TorusView& group,
                                unsigned long long* missing, cudaStream_t stream) {
  const size_t shared = torus_table_bytes(group);
  auto kernel = torus_matvec_kernel<LX, LY>;
  int blocks = 0;
  cudaError_t err = grid_for(kernel, dim, shared, &blocks);
  if (err != cudaSuccess) return err;
  kernel<<<blocks, kThreads, shared, stream>>>(reps, x, z, sqrt_orbit, y, dim, params, group, missing);
  return cudaGetLastError();
}

}  // namespace

cudaError_t symmetric_representatives_generic(int n_sites, int n_up, const GroupTables& group, const uint64_t* binom,
                                              uint64_t* reps, int64_t* orbit, int64_t capacity,
                                              unsigned long long* count, cudaStream_t stream) {
  const int64_t dim = sector_dim(n_sites, n_up);
  if (dim <= 0) return cudaSuccess;
  const int64_t chunk = enumeration_chunk(dim);
  int blocks = 0;
  cudaError_t err = grid_for(generic_representatives_kernel, (dim + chunk - 1) / chunk, 0, &blocks);
  if (err != cudaSuccess) return err;
  generic_representatives_kernel<<<blocks, kThreads, 0, stream>>>(n_sites, n_up, dim, chunk, binom, group, reps,
                                                                   orbit, capacity, count);
  return cudaGetLastError();
}

cudaError_t symmetric_representatives_torus(int n_sites, int n_up, const torus::TorusView& group, bool specialized,
                                            const uint64_t* binom, uint64_t* reps, int64_t* orbit, int64_t capacity,
                                            unsigned long long* count, cudaStream_t stream) {
  if (sector_dim(n_sites, n_up) <= 0) return cudaSuccess;
  return torus::dispatch(group.lx, group.ly, specialized, [&](auto dims) {
    using D = decltype(dims);
    return launch_torus_representatives<D::lx, D::ly>(n_sites, n_up, group, binom, reps, orbit, capacity, count,
                                                      stream);
  });
}

cudaError_t symmetric_matvec_generic(const uint64_t* reps, const double* x, const double* z,
                                     const double* sqrt_orbit, double* y, int64_t dim, const int64_t* edges_host,
                                     const double* zz_host, const double* exch_host, int n_edges,
                                     const GroupTables& group, unsigned long long* missing, cudaStream_t stream) {
  if (dim <= 0) return cudaSuccess;
  SymEdgeParams params;
  if (!fill_edges(params, edges_host, zz_host, exch_host, n_edges, nullptr)) return cudaErrorInvalidValue;
  int blocks = 0;
  cudaError_t err = grid_for(generic_matvec_kernel, dim, 0, &blocks);
  if (err != cudaSuccess) return err;
  generic_matvec_kernel<<<blocks, kThreads, 0, stream>>>(reps, x, z, sqrt_orbit, y, dim, params, group, missing);
  return cudaGetLastError();
}

cudaError_t symmetric_matvec_torus(const uint64_t* reps, const double* x, const double* z, const double* sqrt_orbit,
                                   double* y, int64_t dim, const int64_t* edges_host, const double* zz_host,
                                   const double* exch_host, int n_edges, const torus::TorusView& group,
                                   bool specialized, unsigned long long* missing, cudaStream_t stream) {
  if (dim <= 0) return cudaSuccess;
  SymEdgeParams params;
  if (!fill_edges(params, edges_host, zz_host, exch_host, n_edges, &group)) return cudaErrorInvalidValue;
  return torus::dispatch(group.lx, group.ly, specialized, [&](auto dims) {
    using D = decltype(dims);
    return launch_torus_matvec<D::lx, D::ly>(reps, x, z, sqrt_orbit, y, dim, params, group, missing, stream);
  });
}

}  // namespace cuda
}  // namespace ed
}  // namespace naqs
