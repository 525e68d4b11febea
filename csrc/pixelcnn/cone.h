// Light cone of a connected walk: which activations of s' (s with one or two spins
// flipped) can differ from those of s. Shared by the CPU and CUDA walkers; plain C++.
//
// The walk of s' (kConnected) starts at its first flipped site k and reads everything
// before k from s's storage. Most positions after k are unchanged too: the receptive
// field of one block is small. Flipping site (fy, fx) can change, in block l,
//   v_l  rows fy .. fy+2l+2, cols fx-l-1 .. fx+l+1 (the vertical branch reads rows
//        y-2..y, cols x-1..x+1 of v_(l-1); layer 0 reads the spins);
//   h_l  row fy: cols fx+1 .. fx+2l+2 (window rows y-2..y, cols x-2..x of h_(l-1); block
//        0 masks its own site), rows fy+1 .. fy+2l+5: cols fx-l-1 .. fx+2l+3 (the
//        shifted v_m, m <= l, at rows y-3..y-1, cols x-2..x, carried right by later
//        blocks' h windows);
// and nothing else (docs/engine.md derives it; tests/test_engine.py checks it against
// an explicit dilation of the flipped sites). For several flips the bounding box
// fy0..fy1, fx0..fx1 of the flipped sites replaces (fy, fx): a superset of the union,
// exact for one flip. Positions before `start` (the first walked site) are never in the
// cone. The walk computes exactly the positions in the cone (whole intervals per row,
// so the CUDA passes stay contiguous) and reads every other one from s's storage:
// a local energy does 25% fewer FLOPs than walking everything after k at 21x21 with 20
// blocks, 46% with 10 (docs/engine.md).
//
// `all` turns the cone off (NAQS_PIXELCNN_CONE=0 and the non-connected walks): then
// every position from `start` on is walked, the walk before the cone existed.
#pragma once

#include <cstdint>

#include "hd.h"

namespace naqs {
namespace pixelcnn {

struct Cone {
  int lx, ly;        // lattice
  int start;         // first walked site
  int fy0, fy1;      // rows of the flipped sites (bounding box)
  int fx0, fx1;      // columns
  bool all;          // no cone: everything from start on

  // Everything from site `first` on.
  NAQS_HD static Cone everything(int lx, int ly, int first) {
    Cone c{lx, ly, first, first / lx, ly - 1, 0, lx - 1, true};
    return c;
  }
  // The cone of nothing yet (add the flipped sites); start = the first flipped site.
  NAQS_HD static Cone of_flips(int lx, int ly) {
    Cone c{lx, ly, lx * ly, ly, -1, lx, -1, false};
    return c;
  }
  NAQS_HD void add(int site) {
    const int y = site / lx, x = site - y * lx;
    start = site < start ? site : start;
    fy0 = y < fy0 ? y : fy0;
    fy1 = y > fy1 ? y : fy1;
    fx0 = x < fx0 ? x : fx0;
    fx1 = x > fx1 ? x : fx1;
  }
  // The (at most two) flipped sites of one connection, -1 for none (WalkArgs::flips).
  NAQS_HD void add_flips(const int64_t* pair) {
    for (int q = 0; q < 2; ++q)
      if (pair[q] >= 0) add(int(pair[q]));
  }

  // Columns [lo, hi] of row y where h_l is walked; false when none.
  NAQS_HD bool h_cols(int l, int y, int& lo, int& hi) const {
    const int y0 = start / lx;
    if (y < y0 || y >= ly) return false;
    if (all) {
      lo = 0;
      hi = lx - 1;
    } else if (y == fy0) {
      lo = fx0 + 1;
      hi = fx1 + 2 * l + 2;
    } else if (y <= fy1 + 2 * l + 5) {
      lo = fx0 - l - 1;
      hi = fx1 + 2 * l + 3;
    } else {
      return false;
    }
    if (y == y0 && lo < start - y0 * lx) lo = start - y0 * lx;
    if (lo < 0) lo = 0;
    if (hi > lx - 1) hi = lx - 1;
    return lo <= hi;
  }
  // Columns [lo, hi] of row y where v_l is walked (never the last row: nothing reads
  // it); false when none.
  NAQS_HD bool v_cols(int l, int y, int& lo, int& hi) const {
    if (y < start / lx || y >= ly - 1) return false;
    if (all) {
      lo = 0;
      hi = lx - 1;
      return true;
    }
    if (y > fy1 + 2 * l + 2) return false;
    lo = fx0 - l - 1;
    hi = fx1 + l + 1;
    if (lo < 0) lo = 0;
    if (hi > lx - 1) hi = lx - 1;
    return lo <= hi;
  }
  NAQS_HD bool has_h(int l, int y, int x) const {
    int lo, hi;
    return h_cols(l, y, lo, hi) && x >= lo && x <= hi;
  }
  NAQS_HD bool has_v(int l, int y, int x) const {
    int lo, hi;
    return v_cols(l, y, lo, hi) && x >= lo && x <= hi;
  }
};

}  // namespace pixelcnn
}  // namespace naqs
