// Exact diagonalization kernels on raw pointers (CPU side). The front end
// (ed.cpp) checks every tensor before calling these; nothing here validates input.
//
// Conventions (naqs/ed.py, DESIGN.md): a configuration is a uint64 whose bit i is
// site i, set = spin up. A U(1) sector of N sites with k up spins is sorted
// numerically; its rank uses the split ("two-level") tables
//     rank(s) = hi_offset[s >> lo_bits] + lo_rank[s & ((1 << lo_bits) - 1)]
// where lo_rank[l] is the combinatorial-number-system rank of l among lo_bits-bit
// words with the same popcount and hi_offset[h] counts sector states whose high
// part is < h. Two table look-ups replace the k-step combinatorial sum.
#pragma once

#include <cstdint>

#include "ed_group.h"
#include "ed_torus.h"

namespace naqs {
namespace ed {

// Binomial coefficient C(n, r) for 0 <= n <= 64 (0 when r < 0 or r > n).
uint64_t binomial(int n, int r);

// The sector basis, sorted: out[0 .. C(n, k)) (multithreaded).
void sector_basis_cpu(int n_sites, int n_up, uint64_t* out);

// The split rank tables of the sector (see above): lo_rank[2^lo_bits], the rank of each
// lo_bits-bit word among the words of its popcount; hi_offset[2^(n_sites - lo_bits)], the
// number of sector words whose high part is below h.
void sector_rank_tables_cpu(int n_sites, int n_up, int lo_bits, int32_t* lo_rank, int64_t* hi_offset);

// y = H x for the Heisenberg Hamiltonian
//   H = sum_e zz[e] s_i s_j  (diagonal, s = +-1)  +  sum_e exch[e] (flip of an antiparallel pair)
// in gather form: y[r] = diag[r] x[r] + sum_e exch_e x[rank(flip_e(basis[r]))], so every
// output row is written by exactly one thread.
void heisenberg_sector_matvec_cpu(const uint64_t* basis,      // [dim]
                                  const double* x,            // [dim]
                                  double* y,                  // [dim]
                                  int64_t dim,
                                  const int64_t* edges,       // [n_edges, 2]
                                  const double* zz,           // [n_edges]
                                  const double* exch,         // [n_edges]
                                  int64_t n_edges,
                                  const int32_t* lo_rank,     // [2^lo_bits]
                                  const int64_t* hi_offset,   // [2^(N - lo_bits)]
                                  int lo_bits);

// The group forms (GroupTables: generic byte tables; torus::TorusView: translations of a
// torus by bit operations) and their actions live in ed_group.h / ed_torus.h.

// Representatives (orbit minima) of the sector under the group, sorted, with their
// orbit sizes; states whose symmetrized vector vanishes (a stabilizer element of
// character -1) are left out. Returns the count; the vectors are allocated by the callee.
int64_t symmetric_representatives_cpu(int n_sites, int n_up, const GroupTables& group, uint64_t** reps_out,
                                      int64_t** orbit_out);
void free_buffer(void* p);

// Same output as symmetric_representatives_cpu for a group of the torus form (translations
// x point operations [x spin inversion]); specialized = false forces the run-time-size
// code (tests hold both equal).
int64_t torus_representatives_cpu(int n_sites, int n_up, const torus::TorusView& group, bool specialized,
                                  uint64_t** reps_out, int64_t** orbit_out);

// y = H~ x in the trivial-representation basis |r~> = O_r^{-1/2} sum_{s in orbit(r)} |s>:
//   y[r] = diag(r) x[r] + sum_{s' in conn(r)} exch * sqrt(O_r / O_{rep(s')}) x[idx(rep(s'))].
// chi(s') is the character of the element mapping s' to its representative;
// connections into vanishing orbits contribute nothing. Returns the number of
// connections whose representative was not found (0 when the representative list is
// complete; the front end raises otherwise).
int64_t heisenberg_symmetric_matvec_cpu(const uint64_t* reps, const int64_t* orbit, int64_t dim, const double* x,
                                        double* y, const int64_t* edges, const double* zz, const double* exch,
                                        int64_t n_edges, const GroupTables& group);

// Same as heisenberg_symmetric_matvec_cpu for a group of the torus form.
int64_t torus_symmetric_matvec_cpu(const uint64_t* reps, const int64_t* orbit, int64_t dim, const double* x,
                                   double* y, const int64_t* edges, const double* zz, const double* exch,
                                   int64_t n_edges, const torus::TorusView& group, bool specialized);

}  // namespace ed
}  // namespace naqs
