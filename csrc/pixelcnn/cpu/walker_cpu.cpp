// CPU implementation of the row-cached PixelCNN walker (see ../walker.h for what is
// cached and why a walk is one forward pass of work).
//
// One job (sample, or sample x connection) per task of at::parallel_for; each worker
// thread keeps its own 3-row rings. The channel loops run over a compile-time channel
// count for the common widths (4..64) so that the accumulator row stays in registers.
// Only ATen/Parallel.h is included: this file compiles in seconds.
#include "walker_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../conditional.h"
#include "../cone.h"

namespace naqs {
namespace pixelcnn {
namespace cpu {
namespace {

template <int CC4, typename T>
inline void axpy(T* __restrict a, T x, const T* __restrict w, int c4) {
  const int n = CC4 ? CC4 : c4;
  for (int o = 0; o < n; ++o) a[o] += x * w[o];
}

// One walker per worker thread. CC4 = compile-time padded channel count (0: runtime).
template <typename T, int CC4>
struct Walker {
  const Dims& d;
  const Weights<T>& w;
  const int C, C4, Lx, Ly, N, L;
  // write buffers [L][R][Lx][C]
  T* h = nullptr;
  T* v = nullptr;
  int R = 3;
  // positions outside `cone` come from this storage of the unflipped sample,
  // [L][Ly][Lx][C] (connected walks; null otherwise: everything is walked)
  const T* hp = nullptr;
  const T* vp = nullptr;
  Cone cone;
  const int8_t* s = nullptr;  // the configuration being walked [N]
  std::vector<T> acc_dyn;

  Walker(const Dims& dims, const Weights<T>& weights)
      : d(dims),
        w(weights),
        C(dims.channels),
        C4(dims.c4),
        Lx(dims.lx),
        Ly(dims.ly),
        N(dims.n_sites),
        L(dims.blocks),
        cone(Cone::everything(dims.lx, dims.ly, 0)),
        acc_dyn(dims.c4) {}

  const T* h_at(int l, int r, int x) const {
    if (hp && !cone.has_h(l, r, x)) return hp + ((int64_t(l) * Ly + r) * Lx + x) * C;
    return h + ((int64_t(l) * R + r % R) * Lx + x) * C;
  }
  const T* v_at(int l, int r, int x) const {
    if (vp && !cone.has_v(l, r, x)) return vp + ((int64_t(l) * Ly + r) * Lx + x) * C;
    return v + ((int64_t(l) * R + r % R) * Lx + x) * C;
  }
  T* h_w(int l, int r, int x) { return h + ((int64_t(l) * R + r % R) * Lx + x) * C; }
  T* v_w(int l, int r, int x) { return v + ((int64_t(l) * R + r % R) * Lx + x) * C; }

  // h_l at (y, x): window rows y-2..y, cols x-2..x of [h_{l-1}, down(v_l)].
  void h_site(int l, int y, int x) {
    const int c4 = CC4 ? CC4 : C4;
    T acc_local[CC4 ? CC4 : 1];
    T* a = CC4 ? acc_local : acc_dyn.data();
    for (int o = 0; o < c4; ++o) a[o] = T(0);
    const int cprev = l == 0 ? 1 : C;
    const int cin = cprev + C;
    const T* W = l == 0 ? w.wh0 : w.wh + int64_t(l - 1) * 9 * cin * C4;
    for (int dy = 0; dy < 3; ++dy) {
      const int yy = y - 2 + dy;
      if (yy < 0) continue;
      for (int dx = 0; dx < 3; ++dx) {
        const int xx = x - 2 + dx;
        if (xx < 0) continue;
        const int tap = dy * 3 + dx;
        const T* wt = W + int64_t(tap) * cin * C4;
        if (l == 0) {
          // the current site's own spin has a zero weight (causality): skip it
          if (tap != 8) axpy<CC4>(a, T(s[yy * Lx + xx]), wt, c4);
        } else {
          const T* p = h_at(l - 1, yy, xx);
          for (int c = 0; c < C; ++c) axpy<CC4>(a, p[c], wt + int64_t(c) * C4, c4);
        }
        if (yy >= 1) {  // down(v_l) at (yy, xx) = v_l at (yy - 1, xx)
          const T* p = v_at(l, yy - 1, xx);
          const T* wv = wt + int64_t(cprev) * C4;
          for (int c = 0; c < C; ++c) axpy<CC4>(a, p[c], wv + int64_t(c) * C4, c4);
        }
      }
    }
    const T* bias = w.bh + int64_t(l) * C;
    const T* res = l > 0 ? h_at(l - 1, y, x) : nullptr;
    T* out = h_w(l, y, x);
    for (int o = 0; o < C; ++o) {
      T z = a[o] + bias[o];
      z = z > T(0) ? z : T(0);
      if (res) z += res[o];
      out[o] = z;
    }
  }

  // v_l for columns xb..xe of row y: window rows y-2..y, cols x-1..x+1 of v_{l-1}.
  void v_row(int l, int y, int xb, int xe) {
    const int c4 = CC4 ? CC4 : C4;
    T acc_local[CC4 ? CC4 : 1];
    T* a = CC4 ? acc_local : acc_dyn.data();
    const int cin = l == 0 ? 1 : C;
    const T* W = l == 0 ? w.wv0 : w.wv + int64_t(l - 1) * 9 * C * C4;
    const T* bias = w.bv + int64_t(l) * C;
    for (int x = xb; x <= xe; ++x) {
      for (int o = 0; o < c4; ++o) a[o] = T(0);
      for (int dy = 0; dy < 3; ++dy) {
        const int yy = y - 2 + dy;
        if (yy < 0) continue;
        for (int dx = 0; dx < 3; ++dx) {
          const int xx = x - 1 + dx;
          if (xx < 0 || xx >= Lx) continue;
          const T* wt = W + int64_t(dy * 3 + dx) * cin * C4;
          if (l == 0) {
            axpy<CC4>(a, T(s[yy * Lx + xx]), wt, c4);
          } else {
            const T* p = v_at(l - 1, yy, xx);
            for (int c = 0; c < C; ++c) axpy<CC4>(a, p[c], wt + int64_t(c) * C4, c4);
          }
        }
      }
      const T* res = l > 0 ? v_at(l - 1, y, x) : nullptr;
      T* out = v_w(l, y, x);
      for (int o = 0; o < C; ++o) {
        T z = a[o] + bias[o];
        z = z > T(0) ? z : T(0);
        if (res) z += res[o];
        out[o] = z;
      }
    }
  }

  void outputs(int y, int x, T raw[4]) const {
    const T* hl = h_at(L - 1, y, x);
    for (int q = 0; q < 4; ++q) {
      T z = w.bo[q];
      for (int c = 0; c < C; ++c) z += w.wo[c * 4 + q] * hl[c];
      raw[q] = z;
    }
  }

  // Walk sites first..N-1 (cone.start = first), computing the activations in the cone
  // only; per_site(i, raw) may write s[i] (sampling) before the vertical branch of a
  // finished row reads it.
  template <typename F>
  void walk(int first, F&& per_site) {
    for (int i = first; i < N; ++i) {
      const int y = i / Lx, x = i % Lx;
      for (int l = 0; l < L; ++l)
        if (cone.has_h(l, y, x)) h_site(l, y, x);
      T raw[4];
      outputs(y, x, raw);
      per_site(i, raw);
      if (x == Lx - 1) {
        int lo, hi;
        for (int l = 0; l < L; ++l)
          if (cone.v_cols(l, y, lo, hi)) v_row(l, y, lo, hi);
      }
    }
  }
};

template <typename T, int CC4>
void run(const Dims& d, const Weights<T>& w, const WalkArgs<T>& a) {
  const bool use_cone = !a.no_cone;
  const int N = d.n_sites;
  const int64_t per_job_act = int64_t(d.blocks) * d.ly * d.lx * d.channels;  // storage
  const int64_t ring_size = int64_t(d.blocks) * 3 * d.lx * d.channels;
  const int64_t grain = a.mode == kConnected ? 8 : 1;
  at::parallel_for(0, a.n_jobs, grain, [&](int64_t begin, int64_t end) {
    Walker<T, CC4> wk(d, w);
    std::vector<T> ring_h(ring_size), ring_v(ring_size);
    std::vector<int8_t> conf(N);
    for (int64_t job = begin; job < end; ++job) {
      wk.hp = wk.vp = nullptr;
      wk.cone = Cone::everything(d.lx, d.ly, 0);
      wk.h = ring_h.data();
      wk.v = ring_v.data();
      wk.R = 3;
      int ups = 0;
      double re = 0.0, im = 0.0;
      if (a.mode == kSample || a.mode == kForward) {
        // both walk sample b from site 0; kSample draws each site, kForward reads it;
        // either may keep the storage (every activation, prefix sums) for kConnected
        const int64_t b = job;
        const bool draw = a.mode == kSample;
        int8_t* drawn = draw ? a.spins_out + b * N : nullptr;
        if (draw) std::memset(drawn, 0, N);
        const int8_t* s = draw ? drawn : a.spins + b * N;
        wk.s = s;
        const double* u = draw ? a.uniforms + b * N : nullptr;
        double* P = a.prefix ? a.prefix + b * 2 * (N + 1) : nullptr;
        if (a.store_h) {
          wk.h = a.store_h + b * per_job_act;
          wk.v = a.store_v + b * per_job_act;
          wk.R = d.ly;
        }
        if (P) P[0] = P[1] = 0.0;
        wk.walk(0, [&](int i, const T* raw) {
          bool ad, au;
          sector_allow(d.target_up, ups, N, i, ad, au);
          const bool up = draw ? draw_up<T>(raw[0], raw[1], ad, au, u[i]) : s[i] > 0;
          if (draw) drawn[i] = up ? 1 : -1;
          ups += up;
          re += log_abs_cond(double(raw[0]), double(raw[1]), ad, au, up);
          im += double(up ? raw[3] : raw[2]);
          if (P) {
            P[2 * (i + 1)] = re;
            P[2 * (i + 1) + 1] = im;
          }
        });
        if (a.log_psi) {
          a.log_psi[2 * b] = re;
          a.log_psi[2 * b + 1] = im;
        }
      } else {  // kConnected
        const int64_t b = a.jobs[3 * job], m = a.jobs[3 * job + 1];
        const int k = int(a.jobs[3 * job + 2]);
        std::memcpy(conf.data(), a.spins + b * N, N);
        for (int q = 0; q < 2; ++q) {
          const int64_t site = a.flips[(b * a.n_conn + m) * 2 + q];
          if (site >= 0) conf[site] = int8_t(-conf[site]);
        }
        wk.s = conf.data();
        wk.hp = a.store_h + b * per_job_act;
        wk.vp = a.store_v + b * per_job_act;
        if (use_cone) {
          wk.cone = Cone::of_flips(d.lx, d.ly);
          wk.cone.add_flips(a.flips + (b * a.n_conn + m) * 2);
        } else {
          wk.cone = Cone::everything(d.lx, d.ly, k);
        }
        for (int i = 0; i < k; ++i) ups += conf[i] > 0;
        wk.walk(k, [&](int i, const T* raw) {
          bool ad, au;
          sector_allow(d.target_up, ups, N, i, ad, au);
          const bool up = conf[i] > 0;
          ups += up;
          re += log_abs_cond(double(raw[0]), double(raw[1]), ad, au, up);
          im += double(up ? raw[3] : raw[2]);
        });
        const double* P = a.prefix + b * 2 * (N + 1);
        a.out[2 * (b * a.n_conn + m)] = P[2 * k] + re;
        a.out[2 * (b * a.n_conn + m) + 1] = P[2 * k + 1] + im;
      }
    }
  });
}

}  // namespace

template <typename T>
void walk(const Dims& d, const Weights<T>& w, const WalkArgs<T>& a) {
  if (a.n_jobs <= 0) return;
  switch (d.c4) {
    case 4: return run<T, 4>(d, w, a);
    case 8: return run<T, 8>(d, w, a);
    case 16: return run<T, 16>(d, w, a);
    case 32: return run<T, 32>(d, w, a);
    case 64: return run<T, 64>(d, w, a);
    default: return run<T, 0>(d, w, a);
  }
}

template void walk<float>(const Dims&, const Weights<float>&, const WalkArgs<float>&);
template void walk<double>(const Dims&, const Weights<double>&, const WalkArgs<double>&);

}  // namespace cpu
}  // namespace pixelcnn
}  // namespace naqs
