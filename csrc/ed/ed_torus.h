// Orbit minima on a periodic Lx x Ly torus with bit operations (shared by the CPU and
// CUDA kernels; see ed_group.h for the generic byte-table form).
//
// Group: G = {t o p (o f)} with t one of the Lx*Ly translations, p one of n_point point
// operations (coset representatives, p = 0 the identity) and f the optional global spin
// inversion (character flip_parity). Sites are row-major, site = x + Lx*y (bit of the
// configuration word), Lx, Ly <= 8, N = Lx*Ly <= 63.
//
// Lane layout: row y sits in byte y of a 64-bit word held as two 32-bit halves
// (lo = rows 0-3, hi = rows 4-7), its Lx bits at the bottom of the byte. Numeric order
// of configurations = lexicographic order of (row Ly-1, ..., row 0) = numeric order of
// the lane word, so minima can be taken there.
//  - column shift by dx (all rows at once): ((v << dx) & A_dx) | ((v >> (Lx-dx)) & B_dx)
//    per half, A/B the in-lane masks of bits >= dx / < dx;
//  - row shift by dy: a byte permutation. It is fused with the comparison: one PRMT
//    (__byte_perm) gathers the top four rows of the shifted word into a 32-bit "key"
//    (row Ly-1 in the top byte); a second one gathers the remaining rows ("rest") only
//    when the key ties with the best so far. (key, rest) compared lexicographically is
//    the numeric order.
//  - point operations: tables [n_point][Ly][2^Lx] of lane words (row value -> image).
//  - spin inversion: min over flipped images = complement of the max over unflipped
//    ones, tracked in the same pass.
// Cost per orbit minimum: n_point * (Ly table loads + Lx column shifts + Lx*Ly key
// permutations and compares) ~ 2000 integer instructions for the 6x6 D4 group, against
// ~2900 table loads for the generic form.
#pragma once

#include <cstdint>

#include "ed_group.h"

namespace naqs {
namespace ed {
namespace torus {

constexpr int kMaxSide = 8;
constexpr int kMaxPoint = 16;

struct TorusView {
  const uint64_t* table;  // [n_point][ly][2^lx] lane words; point 0 (identity) is never read
  int32_t lx, ly;
  int32_t n_point;
  int32_t spin_flip;      // 0 or 1
  int32_t flip_parity;    // +1 or -1 (only used with spin_flip)
  uint32_t key_mask;      // valid bits of a key (for the complement)
  uint32_t rest_mask;     // valid bits of a rest
  int64_t n_group;        // n_point * lx * ly * (1 + spin_flip)
};

// Byte permutation: byte n of the result is byte (sel >> 4n) & 7 of {a (bytes 0-3), b (4-7)}.
NAQS_HD uint32_t byte_perm(uint32_t a, uint32_t b, uint32_t sel) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(a, b, sel);
#else
  const uint64_t v = (uint64_t(b) << 32) | a;
  uint32_t out = 0;
  for (int n = 0; n < 4; ++n) out |= uint32_t((v >> (8 * ((sel >> (4 * n)) & 7))) & 0xFF) << (8 * n);
  return out;
#endif
}

// Byte selector of 4 consecutive rows after a row shift by dy (new row i = old row
// (i - dy) mod ly): byte n = new row first + n; rows < 0 read byte 7 (row 7, zero when
// ly <= 7).
NAQS_HD_CONSTEXPR uint32_t rows_selector(int ly, int dy, int first) {
  uint32_t sel = 0;
  for (int n = 0; n < 4; ++n) {
    const int row = first + n;
    const int src = row >= 0 ? (row - dy + ly) % ly : 7;
    sel |= uint32_t(src) << (4 * n);
  }
  return sel;
}

// The key: the top four rows (ly-4 .. ly-1, row ly-1 in the top byte).
NAQS_HD_CONSTEXPR uint32_t key_selector(int ly, int dy) { return rows_selector(ly, dy, ly - 4); }

// The rest: rows ly-8 .. ly-5.
NAQS_HD_CONSTEXPR uint32_t rest_selector(int ly, int dy) { return rows_selector(ly, dy, ly - 8); }

// Inverse: lane half (rows 4*half .. 4*half+3) from (rest = bytes 0-3, key = bytes 4-7):
// row j is byte j - ly + 8; rows >= ly read byte 0 (row ly-8 < 0, zero when ly < 8).
NAQS_HD_CONSTEXPR uint32_t lanes_selector(int ly, int half) {
  uint32_t sel = 0;
  for (int n = 0; n < 4; ++n) {
    const int row = 4 * half + n;
    const int src = row < ly ? row - ly + 8 : 0;
    sel |= uint32_t(src) << (4 * n);
  }
  return sel;
}

NAQS_HD_CONSTEXPR uint32_t key_mask(int lx, int ly) {
  uint32_t m = 0;
  for (int n = 0; n < 4; ++n)
    if (ly - 4 + n >= 0) m |= ((1u << lx) - 1) << (8 * n);
  return m;
}

NAQS_HD_CONSTEXPR uint32_t rest_mask(int lx, int ly) {
  uint32_t m = 0;
  for (int n = 0; n < 4; ++n)
    if (ly - 8 + n >= 0) m |= ((1u << lx) - 1) << (8 * n);
  return m;
}

// Column shift of every row by dx (bit x -> bit (x + dx) mod lx), one 32-bit half.
NAQS_HD uint32_t col_shift(uint32_t v, int lx, int dx) {
  if (dx == 0) return v;
  const uint32_t low = (1u << dx) - 1;
  const uint32_t high = ((1u << lx) - 1) & ~low;
  return ((v << dx) & (high * 0x01010101u)) | ((v >> (lx - dx)) & (low * 0x01010101u));
}

// Numeric word <-> lane word. LX/LY > 0: compile-time sizes (loops unrolled).
template <int LX, int LY>
NAQS_HD void to_lanes(uint64_t s, const TorusView& g, uint32_t& lo, uint32_t& hi) {
  const int lx = LX ? LX : g.lx, ly = LY ? LY : g.ly;
  const uint64_t row_mask = (uint64_t(1) << lx) - 1;
  uint64_t v = 0;
NAQS_UNROLL
  for (int y = 0; y < kMaxSide; ++y)
    if (y < ly) v |= ((s >> (lx * y)) & row_mask) << (8 * y);
  lo = static_cast<uint32_t>(v);
  hi = static_cast<uint32_t>(v >> 32);
}

template <int LX, int LY>
NAQS_HD uint64_t from_lanes(uint32_t lo, uint32_t hi, const TorusView& g) {
  const int lx = LX ? LX : g.lx, ly = LY ? LY : g.ly;
  const uint64_t row_mask = (uint64_t(1) << lx) - 1;
  const uint64_t v = (uint64_t(hi) << 32) | lo;
  uint64_t s = 0;
NAQS_UNROLL
  for (int y = 0; y < kMaxSide; ++y)
    if (y < ly) s |= ((v >> (8 * y)) & row_mask) << (lx * y);
  return s;
}

// Numeric word of a (key, rest) pair.
template <int LX, int LY>
NAQS_HD uint64_t from_key(uint32_t key, uint32_t rest, const TorusView& g) {
  const int ly = LY ? LY : g.ly;
  return from_lanes<LX, LY>(byte_perm(rest, key, lanes_selector(ly, 0)), byte_perm(rest, key, lanes_selector(ly, 1)),
                            g);
}

// Image of the lane word under point operation p (p >= 1) through its tables.
template <int LX, int LY>
NAQS_HD void apply_point(const TorusView& g, int p, uint32_t lo, uint32_t hi, uint32_t& olo, uint32_t& ohi) {
  const int lx = LX ? LX : g.lx, ly = LY ? LY : g.ly;
  const uint32_t lane = (1u << lx) - 1;
  const uint64_t* tab = g.table + static_cast<int64_t>(p) * (ly << lx);
  uint64_t out = 0;
NAQS_UNROLL
  for (int y = 0; y < kMaxSide; ++y) {
    if (y < ly) {
      const uint32_t row = ((y < 4 ? lo : hi) >> (8 * (y & 3))) & lane;
      out |= tab[(y << lx) | row];
    }
  }
  olo = static_cast<uint32_t>(out);
  ohi = static_cast<uint32_t>(out >> 32);
}

// Visits every image of the lane word (lo, hi) under point operation x column shift x
// row shift, as (key, lane words after the column shift, row shift dy): the caller takes
// the rest word with rest_of(). visit returns false to stop early (then so does this).
template <int LX, int LY, typename Visit>
NAQS_HD bool for_each_image(const TorusView& g, uint32_t lo, uint32_t hi, Visit&& visit) {
  const int lx = LX ? LX : g.lx, ly = LY ? LY : g.ly;
  for (int p = 0; p < g.n_point; ++p) {
    uint32_t ulo = lo, uhi = hi;
    if (p) apply_point<LX, LY>(g, p, lo, hi, ulo, uhi);
NAQS_UNROLL
    for (int dx = 0; dx < (LX ? LX : kMaxSide); ++dx) {
      if (!LX && dx >= lx) break;
      const uint32_t clo = col_shift(ulo, lx, dx), chi = col_shift(uhi, lx, dx);
NAQS_UNROLL
      for (int dy = 0; dy < (LY ? LY : kMaxSide); ++dy) {
        if (!LY && dy >= ly) break;
        if (!visit(byte_perm(clo, chi, key_selector(ly, dy)), clo, chi, dy)) return false;
      }
    }
  }
  return true;
}

// The rest word of an image visited by for_each_image (only needed on key ties).
NAQS_HD uint32_t rest_of(uint32_t clo, uint32_t chi, int ly, int dy) { return byte_perm(clo, chi, rest_selector(ly, dy)); }

// Is the configuration (lane word lo, hi) the minimum of its orbit with a non-vanishing
// symmetrized vector? On success *orbit = |G| / |Stab|. Early exit at the first image
// below it, so most non-representatives cost a handful of key compares.
template <int LX, int LY>
NAQS_HD bool is_representative(const TorusView& g, uint32_t lo, uint32_t hi, int64_t* orbit) {
  const int ly = LY ? LY : g.ly;
  const uint32_t sk = byte_perm(lo, hi, key_selector(ly, 0)), sr = byte_perm(lo, hi, rest_selector(ly, 0));
  const uint32_t fk = sk ^ g.key_mask, fr = sr ^ g.rest_mask;  // the complement of s
  const bool flip = g.spin_flip != 0;
  int64_t stabilizer = 0;
  const bool minimal = for_each_image<LX, LY>(g, lo, hi, [&](uint32_t k, uint32_t clo, uint32_t chi, int dy) {
    if (k <= sk) {
      if (k < sk) return false;
      const uint32_t r = rest_of(clo, chi, ly, dy);
      if (r < sr) return false;
      stabilizer += (r == sr);
    }
    // Flipped image ~c < s  <=>  c > ~s; ~c == s with character -1: the state vanishes.
    if (flip && k >= fk) {
      if (k > fk) return false;
      const uint32_t r = rest_of(clo, chi, ly, dy);
      if (r > fr) return false;
      if (r == fr) {
        if (g.flip_parity < 0) return false;
        ++stabilizer;
      }
    }
    return true;
  });
  if (!minimal) return false;
  *orbit = g.n_group / stabilizer;
  return true;
}

// Orbit minimum (numeric word) of the lane word (lo, hi) and the character of the element
// that reaches it; returns 0 when the symmetrized vector vanishes (an element of character
// -1 fixes the state: exactly when the minimum over flipped images ties with the minimum
// over unflipped ones), else +1 or -1.
template <int LX, int LY>
NAQS_HD int representative(const TorusView& g, uint32_t lo, uint32_t hi, uint64_t* rep) {
  const int ly = LY ? LY : g.ly;
  const bool flip = g.spin_flip != 0;
  uint32_t bk = 0xFFFFFFFFu, br = 0xFFFFFFFFu;  // min over unflipped images
  uint32_t mk = 0, mr = 0;                      // max over unflipped images
  for_each_image<LX, LY>(g, lo, hi, [&](uint32_t k, uint32_t clo, uint32_t chi, int dy) {
    if (k <= bk) {
      const uint32_t r = rest_of(clo, chi, ly, dy);
      if (k < bk || r < br) {
        bk = k;
        br = r;
      }
    }
    if (flip && k >= mk) {
      const uint32_t r = rest_of(clo, chi, ly, dy);
      if (k > mk || r > mr) {
        mk = k;
        mr = r;
      }
    }
    return true;
  });
  int chi_sign = 1;
  if (flip) {
    const uint32_t fk = mk ^ g.key_mask, fr = mr ^ g.rest_mask;  // min over flipped images
    if (fk == bk && fr == br) {
      if (g.flip_parity < 0) return 0;
    } else if (fk < bk || (fk == bk && fr < br)) {
      bk = fk;
      br = fr;
      chi_sign = g.flip_parity;
    }
  }
  *rep = from_key<LX, LY>(bk, br, g);
  return chi_sign;
}

// Calls f(std::integral_constant<int, LX>, std::integral_constant<int, LY>) with the
// compile-time sizes when (lx, ly) is one of the specialized tori, else with (0, 0):
// run-time sizes, same results.
template <int A, int B>
struct Dims {
  static constexpr int lx = A;
  static constexpr int ly = B;
};

template <typename F>
auto dispatch(int lx, int ly, bool specialized, F&& f) {
  if (specialized) {
    if (lx == 6 && ly == 6) return f(Dims<6, 6>{});
    if (lx == 4 && ly == 4) return f(Dims<4, 4>{});
    if (lx == 4 && ly == 6) return f(Dims<4, 6>{});
    if (lx == 6 && ly == 4) return f(Dims<6, 4>{});
  }
  return f(Dims<0, 0>{});
}

}  // namespace torus
}  // namespace ed
}  // namespace naqs
