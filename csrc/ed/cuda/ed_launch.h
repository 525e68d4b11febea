// Launchers of the exact-diagonalization CUDA kernels. Plain C++ types only (raw
// device pointers, sizes, a cudaStream_t), so the .cu files include only the CUDA
// runtime and the torch-heavy front end (ed.cpp) does the checking.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../ed_group.h"
#include "../ed_torus.h"

namespace naqs {
namespace ed {
namespace cuda {

// Edges travel as a __grid_constant__ kernel parameter (constant bank, no global
// state shared between streams); 256 edges cover every lattice of the study (the
// 36-site J1-J2 square cluster has 144).
constexpr int kMaxEdges = 256;

// Table variants for the rank look-up: low table in shared memory (default) or both
// tables read through the read-only cache.
enum class RankTables : int { kSharedLow = 0, kGlobal = 1 };

// y[r] = diag(basis[r]) x[r] + sum_e exch[e] x[rank(flip_e(basis[r]))], r < dim.
// All pointers are device pointers; edges/zz/exch are host pointers (copied into
// the kernel parameter). lo_rank has 2^lo_bits entries, hi_offset 2^(N - lo_bits).
cudaError_t heisenberg_sector_matvec(const uint64_t* basis,     // [dim]
                                     const double* x,           // [dim]
                                     double* y,                 // [dim]
                                     int64_t dim,
                                     const int64_t* edges_host,  // [n_edges, 2]
                                     const double* zz_host,      // [n_edges]
                                     const double* exch_host,    // [n_edges]
                                     int n_edges,
                                     const int32_t* lo_rank,     // [2^lo_bits]
                                     const int64_t* hi_offset,   // [2^(N - lo_bits)]
                                     int lo_bits,
                                     RankTables variant,
                                     cudaStream_t stream);

// ---- symmetric sector (cuda/symmetric.cu) -------------------------------------------
// Representatives: every sector word is visited (each thread unranks the first word of a
// chunk, then walks on with Gosper's hack); orbit minima with a non-vanishing symmetrized
// vector are appended at atomicAdd(count) positions, so the output is unsorted (the front
// end sorts). Writes stop at capacity; *count is the full number either way.
// binom: device [65 * 65] table of C(n, r). Group tables are device pointers.
cudaError_t symmetric_representatives_generic(int n_sites, int n_up, const GroupTables& group, const uint64_t* binom,
                                              uint64_t* reps, int64_t* orbit, int64_t capacity,
                                              unsigned long long* count, cudaStream_t stream);
cudaError_t symmetric_representatives_torus(int n_sites, int n_up, const torus::TorusView& group, bool specialized,
                                            const uint64_t* binom, uint64_t* reps, int64_t* orbit, int64_t capacity,
                                            unsigned long long* count, cudaStream_t stream);

// y[r] = diag(r) x[r] + sqrt_orbit[r] * sum_{s' in conn(r)} chi exch z[idx(rep(s'))], with
// z = x / sqrt_orbit (the gather form of the CPU kernel, one thread per row). reps sorted;
// edges/zz/exch are host pointers (copied into the kernel parameter). Connections whose
// representative is not in reps (and does not vanish) are counted in *missing.
cudaError_t symmetric_matvec_generic(const uint64_t* reps, const double* x, const double* z,
                                     const double* sqrt_orbit, double* y, int64_t dim, const int64_t* edges_host,
                                     const double* zz_host, const double* exch_host, int n_edges,
                                     const GroupTables& group, unsigned long long* missing, cudaStream_t stream);
cudaError_t symmetric_matvec_torus(const uint64_t* reps, const double* x, const double* z, const double* sqrt_orbit,
                                   double* y, int64_t dim, const int64_t* edges_host, const double* zz_host,
                                   const double* exch_host, int n_edges, const torus::TorusView& group,
                                   bool specialized, unsigned long long* missing, cudaStream_t stream);

}  // namespace cuda
}  // namespace ed
}  // namespace naqs
