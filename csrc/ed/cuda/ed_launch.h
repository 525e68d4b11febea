// Launchers of the exact-diagonalization CUDA kernels. Plain C++ types only (raw
// device pointers, sizes, a cudaStream_t), so the .cu files include only the CUDA
// runtime and the torch-heavy front end (ed.cpp) does the checking.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

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

}  // namespace cuda
}  // namespace ed
}  // namespace naqs
