// CPU implementations of the exact-diagonalization kernels (see ed_kernels.h).
// Only ATen/Parallel.h is included: this file compiles in seconds, unlike a TU that
// pulls in torch/extension.h.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ed_kernels.h"
#include "ed_torus.h"

namespace naqs {
namespace ed {
namespace {

struct BinomialTable {
  uint64_t c[65][65];
  BinomialTable() {
    std::memset(c, 0, sizeof(c));
    for (int n = 0; n <= 64; ++n) {
      c[n][0] = 1;
      for (int r = 1; r <= n; ++r) c[n][r] = c[n - 1][r - 1] + (r <= n - 1 ? c[n - 1][r] : 0);
    }
  }
};

const BinomialTable& table() {
  static const BinomialTable t;
  return t;
}

uint64_t unrank(uint64_t r, int n, int k) { return group::unrank(r, n, k, &table().c[0][0]); }

using group::next_same_popcount;

inline uint64_t representative(const GroupTables& g, uint64_t s, double* sign) { return group::representative(g, s, sign); }
inline bool vanishes(const GroupTables& g, uint64_t s) { return group::vanishes(g, s); }

}  // namespace

uint64_t binomial(int n, int r) {
  if (n < 0 || n > 64 || r < 0 || r > n) return 0;
  return table().c[n][r];
}

void sector_basis_cpu(int n_sites, int n_up, uint64_t* out) {
  const int64_t dim = static_cast<int64_t>(binomial(n_sites, n_up));
  if (dim == 0) return;
  if (n_up == 0) {
    out[0] = 0;
    return;
  }
  // Each chunk unranks its first word and walks on with Gosper's hack.
  at::parallel_for(0, dim, 1 << 16, [&](int64_t begin, int64_t end) {
    uint64_t s = unrank(static_cast<uint64_t>(begin), n_sites, n_up);
    for (int64_t r = begin; r < end; ++r) {
      out[r] = s;
      if (r + 1 < end) s = next_same_popcount(s);
    }
  });
}

void sector_rank_tables_cpu(int n_sites, int n_up, int lo_bits, int32_t* lo_rank, int64_t* hi_offset) {
  const auto& c = table().c;
  // combinatorial number system: the j-th set bit (from 1, lowest first) at position p adds C(p, j)
  at::parallel_for(0, int64_t(1) << lo_bits, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t l = begin; l < end; ++l) {
      uint64_t r = 0;
      int seen = 0;
      for (int p = 0; p < lo_bits; ++p)
        if ((l >> p) & 1) r += c[p][++seen];
      lo_rank[l] = static_cast<int32_t>(r);
    }
  });
  const int64_t n_hi = int64_t(1) << (n_sites - lo_bits);
  int64_t offset = 0;
  for (int64_t h = 0; h < n_hi; ++h) {
    hi_offset[h] = offset;
    const int need = n_up - __builtin_popcountll(static_cast<unsigned long long>(h));
    offset += static_cast<int64_t>(binomial(lo_bits, need));
  }
}

void heisenberg_sector_matvec_cpu(const uint64_t* basis, const double* x, double* y, int64_t dim,
                                  const int64_t* edges, const double* zz, const double* exch, int64_t n_edges,
                                  const int32_t* lo_rank, const int64_t* hi_offset, int lo_bits) {
  const uint64_t lo_mask = (uint64_t(1) << lo_bits) - 1;
  // Precomputed per-edge masks keep the inner loop to shifts and table reads.
  std::vector<uint64_t> pair_mask(n_edges);
  std::vector<int> si(n_edges), sj(n_edges);
  for (int64_t e = 0; e < n_edges; ++e) {
    si[e] = static_cast<int>(edges[2 * e]);
    sj[e] = static_cast<int>(edges[2 * e + 1]);
    pair_mask[e] = (uint64_t(1) << si[e]) | (uint64_t(1) << sj[e]);
  }
  at::parallel_for(0, dim, 2048, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> flipped(n_edges);
    for (int64_t r = begin; r < end; ++r) {
      const uint64_t s = basis[r];
      double diag = 0.0;
      int64_t m = 0;
      // Branch-free pass: about half the pairs are antiparallel at random, so an
      // if-per-edge mispredicts constantly; collect the antiparallel edges first,
      // then rank and gather only those.
      for (int64_t e = 0; e < n_edges; ++e) {
        const uint64_t anti = ((s >> si[e]) ^ (s >> sj[e])) & 1;
        diag += anti ? -zz[e] : zz[e];
        flipped[m] = static_cast<int32_t>(e);
        m += static_cast<int64_t>(anti);
      }
      double off = 0.0;
      for (int64_t q = 0; q < m; ++q) {
        const int32_t e = flipped[q];
        const uint64_t t = s ^ pair_mask[e];
        off += exch[e] * x[hi_offset[t >> lo_bits] + lo_rank[t & lo_mask]];
      }
      y[r] = diag * x[r] + off;
    }
  });
}

namespace {

// Scan of the sector in chunks (unrank the first word, then Gosper's hack), keeping the
// words for which is_rep(s, &orbit) holds; output sorted (chunks are in order).
template <typename IsRep>
int64_t collect_representatives(int n_sites, int n_up, IsRep is_rep, uint64_t** reps_out, int64_t** orbit_out) {
  const int64_t dim = static_cast<int64_t>(binomial(n_sites, n_up));
  const int64_t chunk = int64_t(1) << 16;
  const int64_t n_chunks = (dim + chunk - 1) / chunk;
  std::vector<std::vector<uint64_t>> reps(n_chunks);
  std::vector<std::vector<int64_t>> orbits(n_chunks);
  at::parallel_for(0, n_chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t begin = c * chunk, end = std::min(dim, begin + chunk);
      uint64_t s = (n_up == 0) ? 0 : unrank(static_cast<uint64_t>(begin), n_sites, n_up);
      for (int64_t r = begin; r < end; ++r) {
        int64_t orbit = 0;
        if (is_rep(s, &orbit)) {
          reps[c].push_back(s);
          orbits[c].push_back(orbit);
        }
        if (r + 1 < end && n_up > 0) s = next_same_popcount(s);
      }
    }
  });
  int64_t total = 0;
  for (auto& v : reps) total += static_cast<int64_t>(v.size());
  auto* out_r = static_cast<uint64_t*>(std::malloc(sizeof(uint64_t) * std::max<int64_t>(total, 1)));
  auto* out_o = static_cast<int64_t*>(std::malloc(sizeof(int64_t) * std::max<int64_t>(total, 1)));
  int64_t pos = 0;
  for (int64_t c = 0; c < n_chunks; ++c) {
    std::copy(reps[c].begin(), reps[c].end(), out_r + pos);
    std::copy(orbits[c].begin(), orbits[c].end(), out_o + pos);
    pos += static_cast<int64_t>(reps[c].size());
  }
  *reps_out = out_r;
  *orbit_out = out_o;
  return total;
}

}  // namespace

int64_t symmetric_representatives_cpu(int n_sites, int n_up, const GroupTables& group, uint64_t** reps_out,
                                      int64_t** orbit_out) {
  // s is a representative when no group element maps it lower; most states are
  // rejected after a few elements, which is what makes the scan affordable.
  return collect_representatives(
      n_sites, n_up, [&](uint64_t s, int64_t* orbit) { return group::is_representative(group, s, orbit); }, reps_out,
      orbit_out);
}

int64_t torus_representatives_cpu(int n_sites, int n_up, const torus::TorusView& group, bool specialized,
                                  uint64_t** reps_out, int64_t** orbit_out) {
  return torus::dispatch(group.lx, group.ly, specialized, [&](auto dims) {
    using D = decltype(dims);
    return collect_representatives(
        n_sites, n_up,
        [&](uint64_t s, int64_t* orbit) {
          uint32_t lo, hi;
          torus::to_lanes<D::lx, D::ly>(s, group, lo, hi);
          return torus::is_representative<D::lx, D::ly>(group, lo, hi, orbit);
        },
        reps_out, orbit_out);
  });
}

void free_buffer(void* p) { std::free(p); }

namespace {

// Gather-form symmetric matvec over any group form: rep_of(target, &rep) returns the
// character (+1/-1) of the element mapping target to its orbit minimum rep, or 0 when the
// symmetrized target vanishes; vanishes(target) decides, for a target whose minimum is not
// in reps, whether that is expected (vanishing orbit) or an error (counted as missing).
template <typename RepOf, typename Vanishes>
int64_t symmetric_matvec(const uint64_t* reps, const int64_t* orbit, int64_t dim, const double* x, double* y,
                         const int64_t* edges, const double* zz, const double* exch, int64_t n_edges, RepOf rep_of,
                         Vanishes vanishes) {
  std::vector<uint64_t> pair_mask(n_edges);
  std::vector<int> si(n_edges), sj(n_edges);
  for (int64_t e = 0; e < n_edges; ++e) {
    si[e] = static_cast<int>(edges[2 * e]);
    sj[e] = static_cast<int>(edges[2 * e + 1]);
    pair_mask[e] = (uint64_t(1) << si[e]) | (uint64_t(1) << sj[e]);
  }
  std::atomic<int64_t> missing{0};
  at::parallel_for(0, dim, 256, [&](int64_t begin, int64_t end) {
    int64_t local_missing = 0;
    for (int64_t r = begin; r < end; ++r) {
      const uint64_t s = reps[r];
      const double orbit_r = static_cast<double>(orbit[r]);
      double diag = 0.0, off = 0.0;
      for (int64_t e = 0; e < n_edges; ++e) {
        const uint64_t anti = ((s >> si[e]) ^ (s >> sj[e])) & 1;
        if (anti) {
          diag -= zz[e];
          const uint64_t target = s ^ pair_mask[e];
          uint64_t rep = 0;
          const int chi = rep_of(target, &rep);
          if (chi == 0) continue;
          const uint64_t* it = std::lower_bound(reps, reps + dim, rep);
          if (it == reps + dim || *it != rep) {
            if (!vanishes(target)) ++local_missing;
            continue;
          }
          const int64_t c = it - reps;
          off += chi * exch[e] * std::sqrt(orbit_r / static_cast<double>(orbit[c])) * x[c];
        } else {
          diag += zz[e];
        }
      }
      y[r] = diag * x[r] + off;
    }
    missing += local_missing;
  });
  return missing.load();
}

}  // namespace

int64_t heisenberg_symmetric_matvec_cpu(const uint64_t* reps, const int64_t* orbit, int64_t dim, const double* x,
                                        double* y, const int64_t* edges, const double* zz, const double* exch,
                                        int64_t n_edges, const GroupTables& group) {
  return symmetric_matvec(
      reps, orbit, dim, x, y, edges, zz, exch, n_edges,
      [&](uint64_t target, uint64_t* rep) {
        double chi = 1.0;
        *rep = representative(group, target, &chi);
        return chi < 0 ? -1 : 1;
      },
      [&](uint64_t target) { return vanishes(group, target); });
}

int64_t torus_symmetric_matvec_cpu(const uint64_t* reps, const int64_t* orbit, int64_t dim, const double* x,
                                   double* y, const int64_t* edges, const double* zz, const double* exch,
                                   int64_t n_edges, const torus::TorusView& group, bool specialized) {
  return torus::dispatch(group.lx, group.ly, specialized, [&](auto dims) {
    using D = decltype(dims);
    return symmetric_matvec(
        reps, orbit, dim, x, y, edges, zz, exch, n_edges,
        [&](uint64_t target, uint64_t* rep) {
          uint32_t lo, hi;
          torus::to_lanes<D::lx, D::ly>(target, group, lo, hi);
          return torus::representative<D::lx, D::ly>(group, lo, hi, rep);
        },
        [](uint64_t) { return false; });  // vanishing targets were recognized by rep_of
  });
}

}  // namespace ed
}  // namespace naqs
