// Symmetry-group action on uint64 configurations, shared by the CPU kernels
// (ed_cpu.cpp) and the CUDA kernels (cuda/symmetric.cu): one definition, compiled for
// both, so the GPU computes exactly what the CPU reference computes.
//
// Two forms of the group:
//  - GroupTables (generic): any group of site permutations (with or without the global
//    spin inversion), applied through byte tables, image(g, s) = OR_b table[g][b][byte_b(s)].
//    Cost ~|G| * N/8 table loads per orbit minimum. Reference and fallback.
//  - the torus form (ed_torus.h): translations of an Lx x Ly torus done with bit
//    operations, a few point operations through small tables, spin inversion for free.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NAQS_HD __host__ __device__ __forceinline__
#define NAQS_HD_CONSTEXPR __host__ __device__ constexpr
#define NAQS_UNROLL _Pragma("unroll")
#else
#define NAQS_UNROLL
#define NAQS_HD inline
#define NAQS_HD_CONSTEXPR constexpr
#endif

namespace naqs {
namespace ed {

// Symmetry group action through byte tables: image(g, s) = OR_b table[g][b][byte_b(s)]
// (xor all_ones when flip[g]); table: [n_group, n_bytes, 256].
struct GroupTables {
  const uint64_t* table;  // [n_group, n_bytes, 256]
  const uint8_t* flip;    // [n_group]
  int64_t n_group;
  int n_bytes;
  uint64_t all_ones;      // (1 << N) - 1
  int flip_parity;        // character of the spin inversion: +1 or -1 (permutations: +1)
};

namespace group {

NAQS_HD uint64_t load_table(const uint64_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const unsigned long long*>(p));
#else
  return *p;
#endif
}

NAQS_HD uint64_t apply(const GroupTables& g, int64_t gi, uint64_t s) {
  const uint64_t* t = g.table + gi * g.n_bytes * 256;
  uint64_t out = 0;
  for (int b = 0; b < g.n_bytes; ++b) out |= load_table(t + b * 256 + ((s >> (8 * b)) & 0xFF));
  return g.flip[gi] ? (out ^ g.all_ones) : out;
}

NAQS_HD double character(const GroupTables& g, int64_t gi) { return (g.flip[gi] && g.flip_parity < 0) ? -1.0 : 1.0; }

// Orbit minimum of s and the character of the element that reaches it.
NAQS_HD uint64_t representative(const GroupTables& g, uint64_t s, double* sign) {
  uint64_t best = s;
  double chi = 1.0;
  for (int64_t gi = 1; gi < g.n_group; ++gi) {
    const uint64_t t = apply(g, gi, s);
    if (t < best) {
      best = t;
      chi = character(g, gi);
    }
  }
  *sign = chi;
  return best;
}

// The symmetrized vector of s vanishes when an element of character -1 fixes s.
NAQS_HD bool vanishes(const GroupTables& g, uint64_t s) {
  for (int64_t gi = 1; gi < g.n_group; ++gi)
    if (character(g, gi) < 0 && apply(g, gi, s) == s) return true;
  return false;
}

// s is a representative when no element maps it lower and no element of character -1
// fixes it; most states are rejected after a few elements. On success *orbit = |G|/|Stab|.
NAQS_HD bool is_representative(const GroupTables& g, uint64_t s, int64_t* orbit) {
  int64_t stabilizer = 1;
  for (int64_t gi = 1; gi < g.n_group; ++gi) {
    const uint64_t t = apply(g, gi, s);
    if (t < s || (t == s && character(g, gi) < 0)) return false;
    stabilizer += (t == s);
  }
  *orbit = g.n_group / stabilizer;
  return true;
}

// Colex unrank: the r-th (0-based) n-bit word with k set bits in numeric order;
// binom is the [65][65] table of C(n, r) (row-major).
NAQS_HD uint64_t unrank(uint64_t r, int n, int k, const uint64_t* binom) {
  uint64_t s = 0;
  for (int p = n - 1; p >= 0 && k > 0; --p) {
    const uint64_t c = binom[p * 65 + k];
    if (c <= r) {
      s |= uint64_t(1) << p;
      r -= c;
      --k;
    }
  }
  return s;
}

// Next word with the same popcount (Gosper's hack); v != 0.
NAQS_HD uint64_t next_same_popcount(uint64_t v) {
  const uint64_t t = v | (v - 1);
#if defined(__CUDA_ARCH__)
  const int tz = __ffsll(static_cast<long long>(v)) - 1;
#else
  const int tz = __builtin_ctzll(v);
#endif
  return (t + 1) | (((~t & (t + 1)) - 1) >> (tz + 1));
}

}  // namespace group
}  // namespace ed
}  // namespace naqs
