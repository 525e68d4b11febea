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

// Colex unrank: the r-th (0-based) n-bit word with k set bits in numeric order.
uint64_t unrank(uint64_t r, int n, int k) {
  const auto& c = table().c;
  uint64_t s = 0;
  for (int p = n - 1; p >= 0 && k > 0; --p) {
    if (c[p][k] <= r) {
      s |= uint64_t(1) << p;
      r -= c[p][k];
      --k;
    }
  }
  return s;
}

// Next word with the same popcount (Gosper's hack); v != 0.
inline uint64_t next_same_popcount(uint64_t v) {
  const uint64_t t = v | (v - 1);
  return (t + 1) | (((~t & (t + 1)) - 1) >> (__builtin_ctzll(v) + 1));
}

inline uint64_t apply_group(const GroupTables& g, int64_t gi, uint64_t s) {
  const uint64_t* t = g.table + gi * g.n_bytes * 256;
  uint64_t out = 0;
  for (int b = 0; b < g.n_bytes; ++b) out |= t[b * 256 + ((s >> (8 * b)) & 0xFF)];
  return g.flip[gi] ? (out ^ g.all_ones) : out;
}

inline double character(const GroupTables& g, int64_t gi) { return (g.flip[gi] && g.flip_parity < 0) ? -1.0 : 1.0; }

// Orbit minimum of s and the character of the element that reaches it.
inline uint64_t representative(const GroupTables& g, uint64_t s, double* sign) {
  uint64_t best = s;
  double chi = 1.0;
  for (int64_t gi = 1; gi < g.n_group; ++gi) {
    const uint64_t t = apply_group(g, gi, s);
    if (t < best) {
      best = t;
      chi = character(g, gi);
    }
  }
  *sign = chi;
  return best;
}

// The symmetrized vector of s vanishes when an element of character -1 fixes s.
inline bool vanishes(const GroupTables& g, uint64_t s) {
  for (int64_t gi = 1; gi < g.n_group; ++gi)
    if (character(g, gi) < 0 && apply_group(g, gi, s) == s) return true;
  return false;
}

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

int64_t symmetric_representatives_cpu(int n_sites, int n_up, const GroupTables& group, uint64_t** reps_out,
                                      int64_t** orbit_out) {
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
        // s is a representative when no group element maps it lower; most states are
        // rejected after a few elements, which is what makes the scan affordable.
        bool is_rep = true;
        int64_t stabilizer = 1;
        for (int64_t gi = 1; gi < group.n_group; ++gi) {
          const uint64_t t = apply_group(group, gi, s);
          if (t < s || (t == s && character(group, gi) < 0)) {
            is_rep = false;
            break;
          }
          stabilizer += (t == s);
        }
        if (is_rep) {
          reps[c].push_back(s);
          orbits[c].push_back(group.n_group / stabilizer);
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

void free_buffer(void* p) { std::free(p); }

int64_t heisenberg_symmetric_matvec_cpu(const uint64_t* reps, const int64_t* orbit, int64_t dim, const double* x,
                                        double* y, const int64_t* edges, const double* zz, const double* exch,
                                        int64_t n_edges, const GroupTables& group) {
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
          double chi = 1.0;
          const uint64_t target = s ^ pair_mask[e];
          const uint64_t rep = representative(group, target, &chi);
          const uint64_t* it = std::lower_bound(reps, reps + dim, rep);
          if (it == reps + dim || *it != rep) {
            if (!vanishes(group, target)) ++local_missing;
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

}  // namespace ed
}  // namespace naqs
