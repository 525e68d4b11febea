// Per-site normalization of the PixelCNN outputs (NAQS eq. 3 with the sector mask),
// shared by the CPU and CUDA walkers. Plain C++ (host/device), no torch headers.
#pragma once

#include <cmath>
#include <cstdint>

#include "hd.h"

namespace naqs {
namespace pixelcnn {

// Which choices (-1, +1) at site i keep the sector reachable (PixelCNN._sector_mask):
// need = ups still needed (site i included), remaining = N - i sites left.
NAQS_HD void sector_allow(int target_up, int ups_before, int n_sites, int site, bool& allow_down, bool& allow_up) {
  if (target_up < 0) {
    allow_down = allow_up = true;
    return;
  }
  const int need = target_up - ups_before;
  const int remaining = n_sites - site;
  allow_up = need >= 1;
  allow_down = need <= remaining - 1;
}

// The sampling decision, computed in the model dtype T exactly as
// PixelCNN.normalize + sample_reference do it: torch.logsumexp (max subtracted, an
// infinite max replaced by 0), log psi(+1) = a1 - lse / 2, p = exp(2 log psi(+1)),
// up iff (T) u < p.
template <typename T>
NAQS_HD bool draw_up(T a0, T a1, bool allow_down, bool allow_up, double u) {
  const T ninf = -INFINITY;
  const T l0 = allow_down ? a0 : ninf;
  const T l1 = allow_up ? a1 : ninf;
  const T t0 = T(2) * l0, t1 = T(2) * l1;
  T m = t0 > t1 ? t0 : t1;
  if (std::isinf(m)) m = T(0);
  const T lse = std::log(std::exp(t0 - m) + std::exp(t1 - m)) + m;
  const T log_norm = T(0.5) * lse;
  const T c1 = l1 - log_norm;
  const T p = std::exp(T(2) * c1);
  return T(u) < p;
}

// log |psi_i(choice | s_<i)| in float64 from the raw outputs (a0, a1): the value
// accumulated into log psi. -inf for a masked choice.
NAQS_HD double log_abs_cond(double a0, double a1, bool allow_down, bool allow_up, bool up) {
  if (up ? !allow_up : !allow_down) return -INFINITY;
  double lse;
  if (allow_down && allow_up) {
    const double t0 = 2.0 * a0, t1 = 2.0 * a1;
    const double m = t0 > t1 ? t0 : t1;
    lse = m + std::log1p(std::exp(-std::fabs(t0 - t1)));
  } else {
    lse = allow_up ? 2.0 * a1 : 2.0 * a0;
  }
  return (up ? a1 : a0) - 0.5 * lse;
}

}  // namespace pixelcnn
}  // namespace naqs
