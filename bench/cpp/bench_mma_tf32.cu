// Microbenchmark: the TF32 segment product of a horizontal row pass on Hopper's
// warpgroup MMA (wgmma) against the ceiling of the warp MMA (mma.sync) the walker uses.
//
//   naqs_bench_mma [iters]
//
// The walker's horizontal pass multiplies, per chunk of pairs, the 3x3 windows of two
// 32-channel inputs (K = 2 parts x 3 rows x 3 columns x 32 channels = 576) by the
// layer's weights (N = 32 output channels). Its windows are shifted views of row
// segments in shared memory: pair r, tap (dy, dx) reads segment column r + dx of row dy
// (docs/engine.md, Algorithm). This program checks that a wgmma m64n32k8 product can
// read such views directly: A from shared memory in the no-swizzle K-major layout
// [part][dy][channel quad][slot][4 floats] (8 consecutive slots of one quad are one
// 128-byte core matrix, so shifting a window by dx columns moves the descriptor's start
// address by dx x 16 bytes and nothing else), B as [k quad][n][4 floats]. It prints the
// error against a double-precision reference on TF32-rounded random inputs (a wrong
// descriptor gives errors of order 1, the right one ~1e-7 relative), then the rates:
//
// - wgmma chunks: per warpgroup, one 64-pair chunk (72 wgmma k-steps) per iteration,
//   waited on before the next (as a walk that finishes each chunk from its accumulators
//   would), and with two chunks in flight;
// - mma.sync peak: m16n8k8 TF32 MMAs on register operands only, 8 and 16 warps an SM,
//   8 independent accumulators a warp: no loads at all, the most the walker's
//   instruction can give.
//
// FLOP rates are per second of the whole grid (one CTA per SM). Compare them with the
// TF32 matrix ceiling measured by a large cuBLAS product (bench/gpu_run.sh prints it).
// Build: nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a (wgmma is sm_90a).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "pixelcnn/cuda/wgmma.cuh"

using namespace naqs::pixelcnn::cuda;

#define CHECK_CUDA(x)                                                                       \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

namespace {

constexpr int kC = 32;                 // channels of one input part, and output channels
constexpr int kParts = 2;              // h_{l-1} and down(v_l)
constexpr int kM = 64;                 // pairs of a warpgroup's chunk (wgmma's M)
constexpr int kSlots = kM + 8;         // segment columns (64 pairs + 2 halo, rounded up)
constexpr int kK = kParts * 9 * kC;    // 576
constexpr int kSteps = kK / 8;         // wgmma k-steps of 8 (72)
constexpr int kQuads = kC / 4;         // channel quads of one part (8)
constexpr int kAFloats = kParts * 3 * kQuads * kSlots * 4;
constexpr int kBFloats = kK * kC;
constexpr int kThreads = 256;          // two warpgroups

// Layouts (floats). A: element (part, dy, slot, c) at ((part 3 + dy) 8 + c/4) kSlots 4 +
// slot 4 + c % 4. B: element (k, n) at (k / 4) 128 + n 4 + k % 4. k = ((part 3 + dy) 3 +
// dx) 32 + c.
__host__ __device__ inline int a_index(int part, int dy, int slot, int c) {
  return (((part * 3 + dy) * kQuads + c / 4) * kSlots + slot) * 4 + c % 4;
}
__host__ __device__ inline int b_index(int k, int n) { return (k / 4) * (kC * 4) + n * 4 + k % 4; }

// One chunk: D (64 x 32) = sum over the 72 k-steps (kDepth 2: the same k-steps into a
// second accumulator set too, a second chunk in flight; each descriptor computed once).
// (Leading = K, stride = M/N as below; the swapped reading of the PTX fields read out of
// bounds, run 108 on an H100.)
template <int kDepth>
__device__ inline void chunk_product(float (&d0)[16], float (&d1)[16], unsigned a_base, unsigned b_base) {
  constexpr unsigned a_lbo = kSlots * 16, a_sbo = 128;  // next channel quad / next 8 slots
  constexpr unsigned b_lbo = kC * 16, b_sbo = 128;      // next k quad / next 8 n
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
    const int kq = s % 4, dx = (s / 4) % 3, pd = s / 12;  // pd = part 3 + dy
    const unsigned a = a_base + ((pd * kQuads + 2 * kq) * kSlots + dx) * 16;
    const unsigned b = b_base + (2 * s) * kC * 16;
    const unsigned long long da = wgmma_desc(a, a_lbo, a_sbo);
    const unsigned long long db = wgmma_desc(b, b_lbo, b_sbo);
    wgmma_m64n32k8_tf32(d0, da, db, s > 0);
    if constexpr (kDepth == 2) wgmma_m64n32k8_tf32(d1, da, db, s > 0);
  }
}

// kDepth 1: each chunk waited on before the next; 2: two chunks in flight.
template <int kDepth>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_chunks(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ out, int iters) {
  extern __shared__ __align__(128) float sm[];
  float* as = sm;
  float* bs = sm + kAFloats;
  for (int i = threadIdx.x; i < kAFloats; i += kThreads) as[i] = A[i];
  for (int i = threadIdx.x; i < kBFloats; i += kThreads) bs[i] = B[i];
  // ordinary stores read next by the tensor cores (the async proxy)
  fence_proxy_async_shared();
  __syncthreads();
  const unsigned a_base = unsigned(__cvta_generic_to_shared(as)), b_base = unsigned(__cvta_generic_to_shared(bs));
  float d0[16], d1[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) d0[i] = d1[i] = 0.f;
  for (int it = 0; it < iters; it += kDepth) {
    wgmma_fence_regs(d0);
    wgmma_fence_regs(d1);
    wgmma_fence();
    chunk_product<kDepth>(d0, d1, a_base, b_base);
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_regs(d0);
    wgmma_fence_regs(d1);
  }
  // accumulator layout (as mma.sync's C fragments per n-tile of 8): register 4 j + q of
  // thread t holds row 16 (t / 32) + (t % 32) / 4 + 8 (q / 2), column 8 j + 2 (t % 4) + q % 2
  if (blockIdx.x == 0) {
    const int t = threadIdx.x % 128, wg = threadIdx.x / 128;
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int row = 16 * (t / 32) + (t % 32) / 4 + 8 * (q / 2), col = 8 * j + 2 * (t % 4) + q % 2;
        out[(wg * kM + row) * kC + col] = d0[4 * j + q] + (kDepth == 2 ? 0.f * d1[4 * j + q] : 0.f);
      }
  }
}

__device__ inline void mma_sync_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// mma.sync on register operands only: 8 independent accumulators a warp.
__global__ void mma_sync_peak(float* out, int iters, float seed) {
  unsigned a[4], b[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) a[i] = __float_as_uint(seed + threadIdx.x * 1e-3f + i) & 0xffffe000u;
  b[0] = __float_as_uint(seed * 0.5f) & 0xffffe000u;
  b[1] = __float_as_uint(seed * 0.25f) & 0xffffe000u;
  float acc[8][4];
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[j][q] = 0.f;
  for (int it = 0; it < iters; ++it)
#pragma unroll
    for (int j = 0; j < 8; ++j) mma_sync_tf32(acc[j], a, b);
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int q = 0; q < 4; ++q) s += acc[j][q];
  if (s == 12345.f) out[0] = s;  // keeps the MMAs (never true for these inputs)
}

float tf32_round(float x) {  // round to nearest, ties away (cvt.rna), as the kernels do
  unsigned u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x1000u) & 0xffffe000u;
  std::memcpy(&x, &u, 4);
  return x;
}

template <typename F>
float time_ms(F launch, int reps) {
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  launch();  // warm-up
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> t;
  for (int r = 0; r < reps; ++r) {
    CHECK_CUDA(cudaEventRecord(e0));
    launch();
    CHECK_CUDA(cudaEventRecord(e1));
    CHECK_CUDA(cudaEventSynchronize(e1));
    CHECK_CUDA(cudaGetLastError());
    float ms;
    CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 4000;
  if (iters < 2 || iters % 2) {
    std::fprintf(stderr, "iters must be an even number >= 2 (got %d)\n", iters);
    return 2;
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  std::printf("device: %s, %d SMs\n", prop.name, sms);

  std::mt19937 rng(12345);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  // inputs rounded to TF32, so the products are exact and only the float32 sums differ
  std::vector<float> seg(kParts * 3 * kSlots * kC), w(kK * kC);
  for (float& x : seg) x = tf32_round(uni(rng));
  for (float& x : w) x = tf32_round(uni(rng));
  std::vector<float> a_host(kAFloats, 0.f), b_host(kBFloats);
  for (int part = 0; part < kParts; ++part)
    for (int dy = 0; dy < 3; ++dy)
      for (int s = 0; s < kSlots; ++s)
        for (int c = 0; c < kC; ++c) a_host[a_index(part, dy, s, c)] = seg[((part * 3 + dy) * kSlots + s) * kC + c];
  for (int k = 0; k < kK; ++k)
    for (int n = 0; n < kC; ++n) b_host[b_index(k, n)] = w[k * kC + n];
  std::vector<double> ref(kM * kC, 0.0);
  for (int m = 0; m < kM; ++m)
    for (int n = 0; n < kC; ++n) {
      double s = 0;
      for (int part = 0; part < kParts; ++part)
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx)
            for (int c = 0; c < kC; ++c) {
              const int k = ((part * 3 + dy) * 3 + dx) * kC + c;
              s += double(seg[((part * 3 + dy) * kSlots + m + dx) * kC + c]) * double(w[k * kC + n]);
            }
      ref[m * kC + n] = s;
    }

  float *dA, *dB, *dOut;
  CHECK_CUDA(cudaMalloc(&dA, kAFloats * 4));
  CHECK_CUDA(cudaMalloc(&dB, kBFloats * 4));
  CHECK_CUDA(cudaMalloc(&dOut, 2 * kM * kC * 4));
  CHECK_CUDA(cudaMemcpy(dA, a_host.data(), kAFloats * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dB, b_host.data(), kBFloats * 4, cudaMemcpyHostToDevice));
  const size_t smem = size_t(kAFloats + kBFloats) * 4;

  auto check = [&](const char* name, auto kernel) -> bool {
    CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    CHECK_CUDA(cudaMemset(dOut, 0xff, 2 * kM * kC * 4));  // NaN: every element must be written
    kernel<<<1, kThreads, smem>>>(dA, dB, dOut, 2);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<float> got(2 * kM * kC);
    CHECK_CUDA(cudaMemcpy(got.data(), dOut, got.size() * 4, cudaMemcpyDeviceToHost));
    double num = 0, den = 0, worst = 0;
    bool finite = true;
    for (int wg = 0; wg < 2; ++wg)
      for (int i = 0; i < kM * kC; ++i) {
        const double g = got[wg * kM * kC + i], r = ref[i];
        finite = finite && std::isfinite(g);
        num += (g - r) * (g - r);
        den += r * r;
        worst = std::max(worst, std::abs(g - r));
      }
    const double rel = std::sqrt(num / den);
    const bool ok = finite && rel < 1e-5;
    std::printf("check %-30s rel. error %.3e, max abs %.3e: %s\n", name, rel, worst, ok ? "ok" : "WRONG");
    return ok;
  };
  const bool ok_plain = check("wgmma, one chunk in flight", wgmma_chunks<1>);
  const bool ok_deep = check("wgmma, 2 chunks in flight", wgmma_chunks<2>);

  const double chunk_flop = 2.0 * kM * kC * kK;
  std::printf("\n%-44s %10s %10s\n", "kernel (one CTA per SM)", "ms", "TFLOP/s");
  auto report = [&](const char* name, float ms, double flop) {
    std::printf("%-44s %10.3f %10.1f\n", name, ms, flop / (ms * 1e-3) / 1e12);
  };
  if (ok_plain) {
    CHECK_CUDA(cudaFuncSetAttribute(wgmma_chunks<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const float ms = time_ms([&] { wgmma_chunks<1><<<sms, kThreads, smem>>>(dA, dB, dOut, iters); }, 7);
    report("wgmma 64-pair chunks, waited one by one", ms, chunk_flop * 2 * iters * sms);
  }
  if (ok_deep) {
    CHECK_CUDA(cudaFuncSetAttribute(wgmma_chunks<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const float ms = time_ms([&] { wgmma_chunks<2><<<sms, kThreads, smem>>>(dA, dB, dOut, iters); }, 7);
    report("wgmma 64-pair chunks, two in flight", ms, chunk_flop * 2 * iters * sms);
  }
  const double mma_flop = 2.0 * 16 * 8 * 8;
  for (int warps : {8, 16, 32}) {
    const int n = iters * 4;
    const float ms = time_ms([&] { mma_sync_peak<<<sms, warps * 32>>>(dOut, n, 1.5f); }, 7);
    char name[64];
    std::snprintf(name, sizeof name, "mma.sync registers only, %d warps/SM", warps);
    report(name, ms, mma_flop * 8 * n * warps * sms);
  }
  CHECK_CUDA(cudaFree(dA));
  CHECK_CUDA(cudaFree(dB));
  CHECK_CUDA(cudaFree(dOut));
  return ok_plain ? 0 : 1;
}
