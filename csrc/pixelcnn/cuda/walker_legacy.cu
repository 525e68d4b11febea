// The first CUDA walker (kept for side-by-side benchmarks; selected with
// NAQS_PIXELCNN_CUDA_KERNEL=legacy, see walker_cuda.h). Every mode walks site by site,
// the vertical branch position by position; see walk_kernel.cuh for the current kernel.
//
//
// Persistent kernel: each CTA (256 threads) owns a tile of `tile` jobs (samples or
// connections) at a time and walks all sites and blocks for them with only
// __syncthreads() between layers: jobs are independent, so no grid-wide sync. Per site
// and block the work is one [tile x K] x [K x C] product (K = 9 * (Cin_h)): the 3x3
// causal window of every job is gathered into shared memory, each thread accumulates a
// 4 (jobs) x 4 (output channels) register tile over a slice of K in FP32/FP64 FFMA,
// the K slices are reduced through shared memory, then bias, ReLU and the residual.
// The vertical branch runs once per finished row, position by position, with the same
// routine. Row rings (3 rows of h and v per block per job) live in global memory
// (scratch), weights are read through the read-only cache (L2 resident).
// Includes only the CUDA runtime.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "../conditional.h"
#include "walk_layout.h"
#include "walker_cuda.h"

namespace naqs {
namespace pixelcnn {
namespace cuda {
namespace legacy {
namespace {

constexpr int kThreads = 256;

// (Member: the per-job record of walk_layout.h, shared with the current kernel)

template <typename T>
struct Vec4 {
  T v[4];
};

__device__ __forceinline__ Vec4<float> load4(const float* p) {
  const float4 q = __ldg(reinterpret_cast<const float4*>(p));
  return Vec4<float>{{q.x, q.y, q.z, q.w}};
}
__device__ __forceinline__ Vec4<double> load4(const double* p) {
  const double2 a = __ldg(reinterpret_cast<const double2*>(p));
  const double2 b = __ldg(reinterpret_cast<const double2*>(p) + 1);
  return Vec4<double>{{a.x, a.y, b.x, b.y}};
}

__device__ __forceinline__ Vec4<float> load4_plain(const float* p) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  return Vec4<float>{{q.x, q.y, q.z, q.w}};
}
__device__ __forceinline__ Vec4<double> load4_plain(const double* p) {
  const double2 a = reinterpret_cast<const double2*>(p)[0];
  const double2 b = reinterpret_cast<const double2*>(p)[1];
  return Vec4<double>{{a.x, a.y, b.x, b.y}};
}

template <typename T>
struct Ctx {
  Dims d;
  Weights<T> w;
  int tile, ks, xs_stride, start;
  T* xs;          // [tile][xs_stride]   gathered windows
  T* red;         // [ks][tile][C4]       partial sums
  T* hcur;        // [tile][C]            h_{L-1} at the current site
  T* wsm;         // [Kmax][C4]           this layer's weights (null: read them from global)
  Member<T>* mem;  // [tile]

  __device__ const T* h_at(const Member<T>& m, int l, int r, int x) const {
    if (m.hp && r * d.lx + x < start) return m.hp + ((int64_t(l) * d.ly + r) * d.lx + x) * d.channels;
    return m.hw + ((int64_t(l) * m.R + r % m.R) * d.lx + x) * d.channels;
  }
  __device__ const T* v_at(const Member<T>& m, int l, int r, int x) const {
    if (m.vp && r < start / d.lx) return m.vp + ((int64_t(l) * d.ly + r) * d.lx + x) * d.channels;
    return m.vw + ((int64_t(l) * m.R + r % m.R) * d.lx + x) * d.channels;
  }

  // Window of block l's horizontal branch at (y, x) for every job: [h_{l-1}, down(v_l)]
  // at rows y-2..y, cols x-2..x; k = tap * Cin + c.
  __device__ void gather_h(int l, int y, int x) const {
    const int C = d.channels, cprev = l == 0 ? 1 : C, cin = cprev + C;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
    if (C <= 32) {  // one channel per lane; 4 (job, tap) pairs per warp in flight
      for (int p0 = warp; p0 < tile * 9; p0 += 4 * nwarps) {
        T hv[4], vv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int p = p0 + u * nwarps;
          hv[u] = vv[u] = T(0);
          if (p < tile * 9) {
            const int j = p / 9, tap = p - 9 * j;
            const int yy = y - 2 + tap / 3, xx = x - 2 + tap % 3;
            const bool in = yy >= 0 && xx >= 0;
            const Member<T>& m = mem[j];
            if (in) {
              if (l == 0) {
                if (lane == 0 && tap != 8) hv[u] = T(m.s[yy * d.lx + xx]);
              } else if (lane < C) {
                hv[u] = h_at(m, l - 1, yy, xx)[lane];
              }
              if (yy >= 1 && lane < C) vv[u] = v_at(m, l, yy - 1, xx)[lane];
            }
          }
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int p = p0 + u * nwarps;
          if (p < tile * 9) {
            const int j = p / 9, tap = p - 9 * j;
            T* dst = xs + j * xs_stride + tap * cin;
            if (lane < cprev) dst[lane] = hv[u];
            if (lane < C) dst[cprev + lane] = vv[u];
          }
        }
      }
      return;
    }
    for (int p = warp; p < tile * 9; p += nwarps) {
      const int j = p / 9, tap = p - 9 * (p / 9);
      const int yy = y - 2 + tap / 3, xx = x - 2 + tap % 3;
      const bool in = yy >= 0 && xx >= 0;
      const Member<T>& m = mem[j];
      T* dst = xs + j * xs_stride + tap * cin;
      if (l == 0) {
        if (lane == 0) dst[0] = (in && tap != 8) ? T(m.s[yy * d.lx + xx]) : T(0);
      } else {
        const T* src = in ? h_at(m, l - 1, yy, xx) : nullptr;
        for (int c = lane; c < C; c += 32) dst[c] = src ? src[c] : T(0);
      }
      const T* vsrc = (in && yy >= 1) ? v_at(m, l, yy - 1, xx) : nullptr;
      for (int c = lane; c < C; c += 32) dst[cprev + c] = vsrc ? vsrc[c] : T(0);
    }
  }

  // Window of block l's vertical branch at (y, x): v_{l-1} at rows y-2..y, cols x-1..x+1.
  __device__ void gather_v(int l, int y, int x) const {
    const int C = d.channels, cin = l == 0 ? 1 : C;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
    if (C <= 32) {
      for (int p0 = warp; p0 < tile * 9; p0 += 4 * nwarps) {
        T vv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int p = p0 + u * nwarps;
          vv[u] = T(0);
          if (p < tile * 9) {
            const int j = p / 9, tap = p - 9 * j;
            const int yy = y - 2 + tap / 3, xx = x - 1 + tap % 3;
            const bool in = yy >= 0 && xx >= 0 && xx < d.lx;
            const Member<T>& m = mem[j];
            if (in) {
              if (l == 0) {
                if (lane == 0) vv[u] = T(m.s[yy * d.lx + xx]);
              } else if (lane < C) {
                vv[u] = v_at(m, l - 1, yy, xx)[lane];
              }
            }
          }
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int p = p0 + u * nwarps;
          if (p < tile * 9 && lane < cin) {
            const int j = p / 9, tap = p - 9 * j;
            xs[j * xs_stride + tap * cin + lane] = vv[u];
          }
        }
      }
      return;
    }
    for (int p = warp; p < tile * 9; p += nwarps) {
      const int j = p / 9, tap = p - 9 * (p / 9);
      const int yy = y - 2 + tap / 3, xx = x - 1 + tap % 3;
      const bool in = yy >= 0 && xx >= 0 && xx < d.lx;
      const Member<T>& m = mem[j];
      T* dst = xs + j * xs_stride + tap * cin;
      if (l == 0) {
        if (lane == 0) dst[0] = in ? T(m.s[yy * d.lx + xx]) : T(0);
      } else {
        const T* src = in ? v_at(m, l - 1, yy, xx) : nullptr;
        for (int c = lane; c < C; c += 32) dst[c] = src ? src[c] : T(0);
      }
    }
  }

  // Copies K x C4 weights to shared memory with 16-byte loads, several in flight.
  __device__ void stage_weights(int K, const T* __restrict__ W) const {
    if (!wsm) return;
    const int n16 = K * d.c4 * int(sizeof(T)) / 16;
    const int4* src = reinterpret_cast<const int4*>(W);
    int4* dst = reinterpret_cast<int4*>(wsm);
#pragma unroll 8
    for (int e = threadIdx.x; e < n16; e += blockDim.x) dst[e] = __ldg(src + e);
  }

  // red[kg] = xs[:, K slice kg] @ W[K slice kg, :]; W is [K][C4].
  __device__ void product(int K, const T* __restrict__ W) const {
    const int C4 = d.c4;
    const int ntile = (C4 / 4) * (tile / 4);
    const int t = threadIdx.x;
    int kg, r0, rstep;
    if (ks > 1) {
      kg = t / ntile;
      r0 = kg < ks ? t - kg * ntile : ntile;
      rstep = ntile;
    } else {
      kg = 0;
      r0 = t;
      rstep = blockDim.x;
    }
    const int kper = (K + ks - 1) / ks;
    const int k0 = kg * kper, k1 = min(K, k0 + kper);
    if (wsm) {
      product_impl<true>(K, wsm, kg, r0, rstep, k0, k1, ntile);
    } else {
      product_impl<false>(K, W, kg, r0, rstep, k0, k1, ntile);
    }
  }

  template <bool kShared>
  __device__ void product_impl(int K, const T* __restrict__ W, int kg, int r0, int rstep, int k0, int k1,
                               int ntile) const {
    const int C4 = d.c4;
    for (int r = r0; r < ntile; r += rstep) {
      const int og = r % (C4 / 4), bg = r / (C4 / 4);
      T acc[4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[i][q] = T(0);
      const T* x0 = xs + (bg * 4) * xs_stride;
      const T* wp = W + og * 4;
#pragma unroll 4
      for (int k = k0; k < k1; ++k) {
        const Vec4<T> wv = kShared ? load4_plain(wp + k * C4) : load4(wp + int64_t(k) * C4);
        T xv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) xv[i] = x0[i * xs_stride + k];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[i][q] += xv[i] * wv.v[q];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int q = 0; q < 4; ++q) red[(kg * tile + bg * 4 + i) * C4 + og * 4 + q] = acc[i][q];
    }
  }

  // out = relu(sum of partials + bias) (+ residual from the window at tap `res_tap`).
  __device__ void finish(int K_cin, int res_tap, bool residual, const T* __restrict__ bias, bool is_h, int l, int y,
                         int x, bool keep) const {
    const int C = d.channels, C4 = d.c4;
    for (int e = threadIdx.x; e < tile * C; e += blockDim.x) {
      const int j = e / C, o = e - j * C;
      T z = T(0);
      for (int kg = 0; kg < ks; ++kg) z += red[(kg * tile + j) * C4 + o];
      z += bias[o];
      z = z > T(0) ? z : T(0);
      if (residual) z += xs[j * xs_stride + res_tap * K_cin + o];
      const Member<T>& m = mem[j];
      T* base = is_h ? m.hw : m.vw;
      base[((int64_t(l) * m.R + y % m.R) * d.lx + x) * C + o] = z;
      if (keep) hcur[j * C + o] = z;
    }
  }

  __device__ void h_site(int l, int y, int x) const {
    const int C = d.channels, cin = (l == 0 ? 1 : C) + C;
    const T* W = l == 0 ? w.wh0 : w.wh + int64_t(l - 1) * 9 * cin * d.c4;
    stage_weights(9 * cin, W);
    gather_h(l, y, x);
    __syncthreads();
    product(9 * cin, W);
    __syncthreads();
    finish(cin, 8, l > 0, w.bh + int64_t(l) * C, true, l, y, x, l == d.blocks - 1);
    __syncthreads();
  }

  __device__ void v_site(int l, int y, int x) const {
    const int C = d.channels, cin = l == 0 ? 1 : C;
    const T* W = l == 0 ? w.wv0 : w.wv + int64_t(l - 1) * 9 * C * d.c4;
    stage_weights(9 * cin, W);
    gather_v(l, y, x);
    __syncthreads();
    product(9 * cin, W);
    __syncthreads();
    finish(cin, 7, l > 0, w.bv + int64_t(l) * C, false, l, y, x, false);
    __syncthreads();
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) walk_kernel(Dims d,            // lattice and network sizes
                                                        Weights<T> w,      // kernel layout, see walker.h
                                                        WalkArgs<T> a,     // inputs/outputs of the mode
                                                        int tile, int ks, int xs_stride, int w_shared,
                                                        T* __restrict__ ring,        // [grid][tile][2][L][3][Lx][C]
                                                        int8_t* __restrict__ confs)  // [grid][tile][N]
{
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int C = d.channels, N = d.n_sites, L = d.blocks;
  Ctx<T> cx;
  cx.d = d;
  cx.w = w;
  cx.tile = tile;
  cx.ks = ks;
  cx.xs_stride = xs_stride;
  cx.xs = reinterpret_cast<T*>(smem_raw);
  cx.red = cx.xs + size_t(tile) * xs_stride;
  cx.hcur = cx.red + size_t(ks) * d.c4 * tile;
  size_t off = (reinterpret_cast<size_t>(cx.hcur + size_t(tile) * C) + 15) & ~size_t(15);
  cx.wsm = nullptr;
  if (w_shared) {
    cx.wsm = reinterpret_cast<T*>(off);
    off += size_t(18) * C * d.c4 * sizeof(T);  // largest K = 9 * 2C
  }
  cx.mem = reinterpret_cast<Member<T>*>(off);
  const int64_t ring_job = int64_t(L) * 3 * d.lx * C;  // one branch of one job
  const int64_t store_job = int64_t(L) * d.ly * d.lx * C;
  const int64_t n_tiles = (a.n_jobs + tile - 1) / tile;

  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    // ---- tile setup: one thread per job
    if (threadIdx.x < tile) {
      const int j = threadIdx.x;
      int64_t job = t * tile + j;
      Member<T> m{};
      m.valid = job < a.n_jobs;
      if (!m.valid) job = t * tile;  // mirror the first job of the tile (reads stay valid)
      T* my_ring = ring + (int64_t(blockIdx.x) * tile + j) * 2 * ring_job;
      m.hw = my_ring;
      m.vw = my_ring + ring_job;
      m.R = 3;
      if (a.mode == kSample) {
        m.b = job;
        m.s_w = a.spins_out + job * N;
        m.s = m.s_w;
        m.u = a.uniforms + job * N;
      } else if (a.mode == kForward) {
        m.b = job;
        m.s = a.spins + job * N;
        if (a.store_h && m.valid) {
          m.hw = a.store_h + job * store_job;
          m.vw = a.store_v + job * store_job;
          m.R = d.ly;
        }
      } else {
        m.b = a.jobs[3 * job];
        m.m = a.jobs[3 * job + 1];
        m.k = int(a.jobs[3 * job + 2]);
        m.s = confs + (int64_t(blockIdx.x) * tile + j) * N;
        m.hp = a.store_h + m.b * store_job;
        m.vp = a.store_v + m.b * store_job;
      }
      cx.mem[j] = m;
    }
    __syncthreads();
    if (a.mode == kSample) {  // undecided sites read as 0 (their weights are zero anyway)
      for (int e = threadIdx.x; e < tile * N; e += blockDim.x) {
        const int j = e / N;
        if (cx.mem[j].valid) cx.mem[j].s_w[e - j * N] = 0;
      }
    } else if (a.mode == kConnected) {
      for (int e = threadIdx.x; e < tile * N; e += blockDim.x) {
        const int j = e / N, i = e - j * N;
        const_cast<int8_t*>(cx.mem[j].s)[i] = a.spins[cx.mem[j].b * N + i];
      }
    }
    __syncthreads();
    const int start = a.mode == kConnected ? cx.mem[0].k : 0;  // jobs sorted by k: the tile's minimum
    cx.start = start;
    if (threadIdx.x < tile) {
      Member<T>& m = cx.mem[threadIdx.x];
      if (a.mode == kConnected) {
        int8_t* conf = const_cast<int8_t*>(m.s);
        for (int q = 0; q < 2; ++q) {
          const int64_t site = a.flips[(m.b * a.n_conn + m.m) * 2 + q];
          if (site >= 0) conf[site] = int8_t(-conf[site]);
        }
      }
      int ups = 0;
      for (int i = 0; i < start; ++i) ups += m.s[i] > 0;
      m.ups = ups;
      m.re = m.im = 0.0;
      if (a.mode == kForward && a.prefix && m.valid) {
        double* P = a.prefix + m.b * 2 * (N + 1);
        P[0] = P[1] = 0.0;
      }
    }
    __syncthreads();

    // ---- the walk
    for (int i = start; i < N; ++i) {
      const int y = i / d.lx, x = i - y * d.lx;
      for (int l = 0; l < L; ++l) cx.h_site(l, y, x);
      if (threadIdx.x < tile) {
        Member<T>& m = cx.mem[threadIdx.x];
        const T* hl = cx.hcur + threadIdx.x * C;
        T raw[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          T z = w.bo[q];
          for (int c = 0; c < C; ++c) z += w.wo[c * 4 + q] * hl[c];
          raw[q] = z;
        }
        bool ad, au;
        sector_allow(d.target_up, m.ups, N, i, ad, au);
        bool up;
        if (a.mode == kSample) {
          up = draw_up<T>(raw[0], raw[1], ad, au, m.u[i]);
          if (m.valid) m.s_w[i] = up ? 1 : -1;
        } else {
          up = m.s[i] > 0;
        }
        m.ups += up;
        if (a.mode != kConnected || i >= m.k) {
          m.re += log_abs_cond(double(raw[0]), double(raw[1]), ad, au, up);
          m.im += double(up ? raw[3] : raw[2]);
        }
        if (a.mode == kForward && a.prefix && m.valid) {
          double* P = a.prefix + m.b * 2 * (N + 1);
          P[2 * (i + 1)] = m.re;
          P[2 * (i + 1) + 1] = m.im;
        }
      }
      __syncthreads();
      if (x == d.lx - 1 && y < d.ly - 1)
        for (int l = 0; l < L; ++l)
          for (int xx = 0; xx < d.lx; ++xx) cx.v_site(l, y, xx);
    }

    // ---- results
    if (threadIdx.x < tile) {
      const Member<T>& m = cx.mem[threadIdx.x];
      if (m.valid) {
        if (a.mode == kConnected) {
          const double* P = a.prefix + m.b * 2 * (N + 1);
          a.out[2 * (m.b * a.n_conn + m.m)] = P[2 * m.k] + m.re;
          a.out[2 * (m.b * a.n_conn + m.m) + 1] = P[2 * m.k + 1] + m.im;
        } else if (a.log_psi) {
          a.log_psi[2 * m.b] = m.re;
          a.log_psi[2 * m.b + 1] = m.im;
        }
      }
    }
    __syncthreads();
  }
}

size_t smem_bytes(const Dims& d, int tile, int ks, int xs_stride, size_t elem, size_t member, bool w_shared) {
  size_t bytes = (size_t(tile) * xs_stride + size_t(ks) * d.c4 * tile + size_t(tile) * d.channels) * elem;
  bytes = (bytes + 15) & ~size_t(15);
  if (w_shared) bytes += size_t(18) * d.channels * d.c4 * elem;
  return bytes + size_t(tile) * member + 16;
}

}  // namespace

template <typename T>
cudaError_t plan(const Dims& d, int64_t n_jobs, Plan* out) {
  int dev = 0, sms = 0, optin = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess) return err;
  Plan p;
  p.threads = kThreads;
  p.xs_stride = 9 * 2 * d.channels + 1;  // largest K (any block, either branch) + 1
  int tile = 32;
  while (tile > 4 && (n_jobs + tile - 1) / tile < 2 * int64_t(sms)) tile /= 2;
  auto fill = [&](int tl) {
    p.tile = tl;
    const int ntile = (d.c4 / 4) * (tl / 4);
    int ks = kThreads / ntile;
    ks = ks < 1 ? 1 : (ks > 8 ? 8 : ks);
    p.k_split = ks;
    p.smem = smem_bytes(d, tl, ks, p.xs_stride, sizeof(T), sizeof(Member<T>), p.w_shared != 0);
  };
  // Weights of the layer in shared memory (opt-in, NAQS_PIXELCNN_WEIGHTS_SMEM=1): measured
  // slower on an H200 for C = 32 (one CTA per SM instead of two), see docs/engine.md.
  const char* env = std::getenv("NAQS_PIXELCNN_WEIGHTS_SMEM");
  p.w_shared = (env && env[0] == '1') ? 1 : 0;
  fill(tile);
  while (p.smem > size_t(optin) && tile > 8) fill(tile /= 2);
  if (p.smem > size_t(optin)) {
    p.w_shared = 0;
    fill(tile);
    while (p.smem > size_t(optin) && tile > 4) fill(tile /= 2);
  }
  if (p.smem > size_t(optin)) return cudaErrorInvalidConfiguration;
  if ((err = cudaFuncSetAttribute(walk_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(p.smem))) !=
      cudaSuccess)
    return err;
  int per_sm = 0;
  if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, walk_kernel<T>, kThreads, p.smem)) != cudaSuccess)
    return err;
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  const int64_t n_tiles = (n_jobs + p.tile - 1) / p.tile;
  const int64_t grid = std::min<int64_t>(n_tiles, int64_t(per_sm) * sms);
  p.grid = int(grid < 1 ? 1 : grid);
  const size_t ring = size_t(2) * d.blocks * 3 * d.lx * d.channels * sizeof(T);
  const size_t conf = (size_t(d.n_sites) + 15) & ~size_t(15);
  p.scratch_bytes = size_t(p.grid) * p.tile * (ring + conf) + 256;
  *out = p;
  return cudaSuccess;
}

template <typename T>
cudaError_t walk(const Dims& d, const Weights<T>& w, const WalkArgs<T>& a, const Plan& p, void* scratch,
                 cudaStream_t stream) {
  if (a.n_jobs <= 0) return cudaSuccess;
  const size_t ring_bytes = size_t(p.grid) * p.tile * size_t(2) * d.blocks * 3 * d.lx * d.channels * sizeof(T);
  T* ring = reinterpret_cast<T*>(scratch);
  int8_t* confs = reinterpret_cast<int8_t*>(scratch) + ((ring_bytes + 255) & ~size_t(255));
  walk_kernel<T><<<p.grid, p.threads, p.smem, stream>>>(d, w, a, p.tile, p.k_split, p.xs_stride, p.w_shared, ring,
                                                        confs);
  return cudaGetLastError();
}

template cudaError_t plan<float>(const Dims&, int64_t, Plan*);
template cudaError_t plan<double>(const Dims&, int64_t, Plan*);
template cudaError_t walk<float>(const Dims&, const Weights<float>&, const WalkArgs<float>&, const Plan&, void*,
                                 cudaStream_t);
template cudaError_t walk<double>(const Dims&, const Weights<double>&, const WalkArgs<double>&, const Plan&, void*,
                                  cudaStream_t);

}  // namespace legacy
}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
