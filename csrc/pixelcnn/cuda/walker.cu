// The host side of the CUDA row-cached walker (walker_cuda.h): plan() sizes a walk (CTA
// size, tiles, chunks, shared memory, product arithmetic, which passes), walk() launches
// the chosen instance of the kernel (walk_kernel.cuh, compiled in the walk_*.cu files,
// walk_instances.h). Includes only the CUDA runtime.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../cone.h"
#include "walk_instances.h"
#include "walk_layout.h"
#include "walker_cuda.h"

namespace naqs {
namespace pixelcnn {
namespace cuda {
namespace {

// The kernel instance for a CTA size and channel count: the 32-channel specialization
// when it applies (NAQS_PIXELCNN_SPECIALIZE=0: always the generic one, A/B).
// NAQS_PIXELCNN_MATH: ffma (default: FP32/FP64 FFMA), 3xtf32 or tf32 (float networks;
// tensor cores, see product_mma).
int math_mode() {
  const char* env = std::getenv("NAQS_PIXELCNN_MATH");
  if (!env) return kFFMA;
  const std::string v(env);
  if (v == "3xtf32") return k3xTF32;
  if (v == "tf32") return kTF32;
  return kFFMA;
}

// Tensor-core instances (float only) exist for 512 threads, and for TF32 with 32 channels
// also for 256 (the local energies' default, see plan()); other 256-thread walks keep FFMA
// products. The 32-channel TF32 instances are the register-B ones (Ctx::kBRegs), which
// need the weights in shared memory: with NAQS_PIXELCNN_WEIGHTS_SMEM=0 a TF32 walk takes
// the generic instance.
bool specialized(int channels, int math) {
  const char* env = std::getenv("NAQS_PIXELCNN_SPECIALIZE");
  const char* ws = std::getenv("NAQS_PIXELCNN_WEIGHTS_SMEM");
  if (math == kTF32 && ws && ws[0] == '0') return false;
  return channels == 32 && !(env && env[0] == '0');
}

// The 32-channel float FFMA walks stage each pass's weights by one bulk copy (Ctx::kBulkW):
// the sampler 120.8 vs 127.8 ms at 21x21/20/4096 and 9.6 vs 11.1 ms at 12x12/10/1000
// (its single-position passes stage a block's 74 KB for every site, 4608 cp.async each),
// the local energies ~2% faster (one staging per pass there). NAQS_PIXELCNN_BULK_WEIGHTS=0:
// by cp.async instead (A/B).
bool bulk_weights() {
  const char* env = std::getenv("NAQS_PIXELCNN_BULK_WEIGHTS");
  return !(env && env[0] == '0');
}

// NAQS_PIXELCNN_WG_ROUND (Ctx::wg_round): how the wgmma passes' operands become TF32
// values. Default 3: every activation stored biased by half a TF32 unit, which the exact
// readers subtract (the pipelined passes' precision, run 117); 2: every activation stored
// rounded (2.5-4.6x the error, run 115); 1: the copied operands rounded in shared memory
// (round_wg, slower); 0: not at all, the MMAs truncate them (A/B only).
int wg_round_mode() {
  const char* env = std::getenv("NAQS_PIXELCNN_WG_ROUND");
  return env && env[0] >= '0' && env[0] <= '3' ? env[0] - '0' : 3;
}

// pipe: Plan::pipe (1: pass_seg_pipe, 2: pass_seg_wg, compiled only for sm_90a).
template <typename T>
WalkKernel<T> kernel_for(int threads, int channels, int math, int pipe = 0) {
  const bool c32 = specialized(channels, math);
  if constexpr (sizeof(T) == 4) {
#ifdef NAQS_WGMMA
    if (pipe == 2 && threads == 256 && math == kTF32 && c32) return walk_kernel_of<T, 256, 32, kTF32, false, true, true>();
#endif
    if (pipe && threads == 256 && math == kTF32 && c32) return walk_kernel_of<T, 256, 32, kTF32, false, true>();
    if (threads == 512 && math == k3xTF32)
      return c32 ? walk_kernel_of<T, 512, 32, k3xTF32>() : walk_kernel_of<T, 512, 0, k3xTF32>();
    if (threads == 512 && math == kTF32)
      return c32 ? walk_kernel_of<T, 512, 32, kTF32>() : walk_kernel_of<T, 512, 0, kTF32>();
    if (threads == 256 && math == kTF32 && c32) return walk_kernel_of<T, 256, 32, kTF32>();
    if (threads == 512 && math == kFFMA && c32 && bulk_weights()) return walk_kernel_of<T, 512, 32, kFFMA, true>();
  }
  if (c32) return threads == 512 ? walk_kernel_of<T, 512, 32, kFFMA>() : walk_kernel_of<T, 256, 32, kFFMA>();
  return threads == 512 ? walk_kernel_of<T, 512, 0, kFFMA>() : walk_kernel_of<T, 256, 0, kFFMA>();
}

int xs_stride_of(const Dims& d) {
  const int kmax = std::max(18 * d.channels, 9 * (1 + d.channels));
  return (kmax + 3) / 4 * 4 + 4;
}

size_t smem_bytes(const Dims& d, int tile, int rows, size_t elem, size_t member, bool w_shared, int threads,
                  bool b_regs, bool sample, int pipe = 0) {
  const int kmax = std::max(18 * d.channels, 9 * (1 + d.channels));
  size_t n = size_t(rows) * xs_stride_of(d);                      // xs
  n += size_t(red_elems(threads, rows, d.c4, b_regs));               // red
  if (pipe)  // red, then the segment buffers, red_b and block 0's weights (walk_kernel)
    n = size_t(red_elems(threads, rows, d.c4, true)) +
        pipe_region_elems(rows, xs_stride_of(d), d.channels, red_elems(threads, rows, d.c4, true));
  if (pipe == 2) n = std::max(n, wg_region_elems());  // the wgmma passes' region overlays it
  n += (sample ? size_t(tile) * d.channels : 0) + size_t(raw_elems(tile));  // hcur, raw
  size_t bytes = (n * elem + 15) & ~size_t(15);
  if (w_shared && !pipe) bytes += size_t(kmax) * (d.c4 + 8) * elem;
  return bytes + size_t(tile) * member + sizeof(Cone) + size_t(2) * d.blocks * d.ly * sizeof(int) + 16 +
         16 + size_t(tile) * (6 * sizeof(RowSrc<float>) + sizeof(void*));
}


}  // namespace

template <typename T>
cudaError_t plan(const Dims& d, int64_t n_jobs, Plan* out, int mode, bool kept_storage) {
  int dev = 0, sms = 0, optin = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) != cudaSuccess) return err;
  if (d.lx > kMaxWidth) return cudaErrorInvalidValue;
  Plan p;
  // CTA size: 512 threads (16 warps: more latency hidden in the gathers and
  // products; at most 128 registers a thread) for float, 256 for double;
  // NAQS_PIXELCNN_THREADS=256|512 overrides.
  const char* thr_env = std::getenv("NAQS_PIXELCNN_THREADS");
  p.math = math_mode();
  p.threads = sizeof(T) == 4 ? 512 : 256;
  // TF32 row walks (local energies and their forward walk, log psi) of 32-channel
  // networks: 256 threads, the register-B instance (E_loc 734 vs 778 ms at 21x21/20
  // already in run 24, before its product was rewritten; the forward walk 4.83 vs 7.06
  // Mcycles a CTA at 12x12/10/1000, run 38; local energies at 512 threads 591 vs 418 ms
  // at 21x21/20, run 49; the sampler's site walk stays at 512: 105 vs 115 ms at
  // 21x21/20/4096, run 49).
  if (sizeof(T) == 4 && p.math == kTF32 && mode != kSample && specialized(d.channels, p.math)) p.threads = 256;
  if (thr_env && std::string(thr_env) == "256") p.threads = 256;
  if (thr_env && std::string(thr_env) == "512") p.threads = 512;
  const char* env = std::getenv("NAQS_PIXELCNN_WEIGHTS_SMEM");
  const bool allow_ws = !(env && env[0] == '0');
  // without the weights in shared memory a TF32 walk takes the generic instance
  // (specialized()), which has tensor-core products only at 512 threads
  if (p.threads == 256 && p.math == kTF32 && !allow_ws) p.threads = 512;
  // the 32-channel TF32 instances (256 and 512 threads) keep B fragments in registers and
  // need 8 K groups of partial sums (Ctx::kBRegs)
  const bool b_regs = sizeof(T) == 4 && (p.threads == 256 || p.threads == 512) && p.math == kTF32 &&
                      specialized(d.channels, p.math);
  // Row walks on the 256-thread one: the pipelined segment passes (Ctx::pass_seg_pipe),
  // which need the segment path (NAQS_PIXELCNN_SEGMENTS, NAQS_PIXELCNN_PIPELINE are read
  // by walk()); NAQS_PIXELCNN_OVERLAP=0: pass_seg's chunks instead (A/B).
  const char* ov_env = std::getenv("NAQS_PIXELCNN_OVERLAP");
  const char* sg_env = std::getenv("NAQS_PIXELCNN_SEGMENTS");
  const char* pl_env = std::getenv("NAQS_PIXELCNN_PIPELINE");
  p.pipe = b_regs && p.threads == 256 && mode >= 0 && mode != kSample && !(ov_env && ov_env[0] == '0') &&
           !(sg_env && sg_env[0] == '0') && !(pl_env && pl_env[0] == '1');
  // ... or on wgmma (pass_seg_wg) where this build has it and the GPU is a 9.0 one, with
  // the activations stored biased (NAQS_PIXELCNN_WG_ROUND=3): the pipelined passes'
  // precision, local energies 3% faster at 12x12/10/1000 and 10% at 21x21/20/256 (run
  // 117); NAQS_PIXELCNN_WGMMA=0: pass_seg_pipe (A/B). Connected walks over the sampler's
  // kept activations (exact values, which these passes' MMAs would truncate) only with
  // the storage biased for the walk (walk(), WG_ROUND=3).
#ifdef NAQS_WGMMA
  if (p.pipe && (!kept_storage || wg_round_mode() == 3)) {
    const char* wg_env = std::getenv("NAQS_PIXELCNN_WGMMA");
    int major = 0, minor = 0;
    if ((err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev)) != cudaSuccess) return err;
    if ((err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev)) != cudaSuccess) return err;
    if (major == 9 && minor == 0 && !(wg_env && wg_env[0] == '0')) p.pipe = 2;
  }
#endif
  p.xs_stride = xs_stride_of(d);
  // Weights of the pass in shared memory when they fit (NAQS_PIXELCNN_WEIGHTS_SMEM=0
  // reads them from global memory instead); then the largest chunk that fits.
  bool found = false;
  // (an unknown mode is planned as the sampler: shared memory for its current h, tiles
  // of at most rows jobs)
  const bool sample = mode == kSample || mode < 0;
  p.mode = mode;
  // (the kernel's static shared memory: next_tile, wbar_sh and the profile counters)
  const size_t smem_limit = size_t(optin) - 32 - 8 * kProfSlots;
  auto find_rows = [&]() {
    for (int ws = allow_ws ? 1 : 0; ws >= 0 && !found; --ws) {
      for (int rows = kMaxRows; rows >= 4 && !found; rows /= 2) {
        if (smem_bytes(d, rows, rows, sizeof(T), sizeof(Member<T>), ws != 0, p.threads, b_regs, sample, p.pipe) <=
            smem_limit) {
          p.w_shared = ws;
          p.rows = rows;
          found = true;
        }
      }
    }
  };
  find_rows();
  if (p.pipe == 2 && (!found || p.rows != kMaxRows)) {  // the wgmma region did not fit: pass_seg_pipe
    p.pipe = 1;
    found = false;
    find_rows();
  }
  // the pipelined passes need the full chunk (and with it their segment buffers of
  // pipe_ncol columns, which the kernel checks); a network too large for them takes the
  // instance before them
  if (p.pipe && (!found || p.rows != kMaxRows || pipe_ncol(p.rows, p.xs_stride, d.channels) < 8)) {
    p.pipe = 0;
    found = false;
    find_rows();
  }
  if (!found) return cudaErrorInvalidConfiguration;
  if (b_regs && !p.w_shared) return cudaErrorInvalidConfiguration;  // see pass_seg: no FFMA fallback
  const auto kernel = kernel_for<T>(p.threads, d.channels, p.math, p.pipe);
  p.smem = smem_bytes(d, p.rows, p.rows, sizeof(T), sizeof(Member<T>), p.w_shared != 0, p.threads, b_regs, sample,
                      p.pipe);
  if ((err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(p.smem))) !=
      cudaSuccess)
    return err;
  int per_sm = 0;
  if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, p.threads, p.smem)) != cudaSuccess)
    return err;
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  // The row walks (local energies, log psi) may take tiles of 2 rows jobs where they fit
  // next to everything else without costing occupancy: a pass's weight staging, row
  // tables and barriers then serve twice the pairs (chunks stay at rows pairs). Not the
  // sampler: its single-position passes take the whole tile as one chunk.
  // NAQS_PIXELCNN_BIG_TILES=0: at most rows jobs (A/B; NAQS_PIXELCNN_TILE=32 would also
  // change the forward walks' small tiles).
  const char* big_env = std::getenv("NAQS_PIXELCNN_BIG_TILES");
  const bool big_tiles = !(big_env && big_env[0] == '0');
  // The pipelined passes keep no weights in shared memory: their tiles may take 4 rows
  // jobs (on request, NAQS_PIXELCNN_TILE=128).
  int max_tile = p.rows;
  for (int f = 2; f <= (p.pipe ? 4 : 2) && big_tiles && !sample && f * p.rows <= p.threads; f *= 2) {
    const size_t smem_big =
        smem_bytes(d, f * p.rows, p.rows, sizeof(T), sizeof(Member<T>), p.w_shared != 0, p.threads, b_regs, sample, p.pipe);
    if (smem_big > smem_limit) break;
    int per_sm_big = 0;
    if ((err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_big))) != cudaSuccess ||
        (err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_big, kernel, p.threads, smem_big)) != cudaSuccess)
      return err;
    if (per_sm_big != per_sm) break;
    max_tile = f * p.rows;
  }
  // (the default stays at 2 rows: tiles of 4 rows are an A/B until measured)
  const int default_max_tile = std::min(max_tile, 2 * p.rows);
  // The smallest tile that still runs every job in one wave (the walk is a chain of
  // dependent steps: more CTAs with fewer jobs each finish sooner), else the largest.
  const int64_t slots = int64_t(per_sm) * sms;
  int tile = default_max_tile;
  for (int tl = 4; tl <= default_max_tile; tl *= 2) {
    if ((n_jobs + tl - 1) / tl <= slots) {
      tile = tl;
      break;
    }
  }
  // NAQS_PIXELCNN_TILE=4|8|16|32|64|128: jobs per CTA, at most the largest tile above (A/B of
  // the rings' L2 footprint against the per-pass weight staging, which fewer jobs per CTA
  // amortize worse).
  const char* tile_env = std::getenv("NAQS_PIXELCNN_TILE");
  if (tile_env) {
    const int want = std::atoi(tile_env);
    if (want == 4 || want == 8 || want == 16 || want == 32 || want == 64 || want == 128) tile = std::min(want, max_tile);
  }
  p.tile = tile;
  p.k_split = 0;
  p.smem = smem_bytes(d, tile, p.rows, sizeof(T), sizeof(Member<T>), p.w_shared != 0, p.threads, b_regs, sample, p.pipe);
  const int64_t n_tiles = (n_jobs + p.tile - 1) / p.tile;
  const int64_t grid = std::min<int64_t>(n_tiles, slots);
  p.grid = int(grid < 1 ? 1 : grid);
  const size_t ring = size_t(2) * d.blocks * 3 * d.lx * d.channels * sizeof(T);
  const size_t conf = (size_t(d.n_sites) + 15) & ~size_t(15);
  // (pass_seg_wg: every block's weights in the wgmma layout after the confs, walk())
  const size_t packed = p.pipe == 2 ? size_t(std::max(d.blocks - 1, 0)) * kWgPacked * sizeof(float) : 0;
  p.scratch_bytes = size_t(p.grid) * p.tile * (ring + conf) + 768 + (packed ? packed + 512 : 0);  // alignment, then the tile counter (walk)
  *out = p;
  return cudaSuccess;
}

template <typename T>
cudaError_t walk(const Dims& d, const Weights<T>& w, const WalkArgs<T>& a, const Plan& p, void* scratch,
                 cudaStream_t stream) {
  if (a.n_jobs <= 0) return cudaSuccess;
  // a plan made for a row walk may have tiles larger than a chunk and no room for the
  // sampler's current h
  if (a.mode == kSample && p.mode >= 0 && p.mode != kSample) return cudaErrorInvalidValue;
  const size_t ring_bytes = size_t(p.grid) * p.tile * size_t(2) * d.blocks * 3 * d.lx * d.channels * sizeof(T);
  T* ring = reinterpret_cast<T*>(scratch);
  int8_t* confs = reinterpret_cast<int8_t*>(scratch) + ((ring_bytes + 255) & ~size_t(255));
  // the kernel's tile counter, 256-aligned in the last 512 bytes of the scratch (past the
  // confs: scratch_bytes - 511 > ring + 255 + confs)
  auto* tiles_taken =
      reinterpret_cast<unsigned long long*>(static_cast<unsigned char*>(scratch) + ((p.scratch_bytes - 256) & ~size_t(255)));
  cudaError_t err = cudaMemsetAsync(tiles_taken, 0, sizeof(unsigned long long), stream);
  if (err != cudaSuccess) return err;
  // NAQS_PIXELCNN_PIPELINE=1: copy the next chunk's windows during a product (two
  // half-size chunk buffers); measured slower on an H100 (docs/engine.md), so off.
  const char* pipe_env = std::getenv("NAQS_PIXELCNN_PIPELINE");
  const int pipeline = (pipe_env && pipe_env[0] == '1') ? 1 : 0;
  // NAQS_PIXELCNN_SEGMENTS=0: windows gathered tap by tap on every pass (the previous
  // kernel); default 1: row segments, double-buffered (pass_seg) on passes of >= 3
  // positions per job; 2: also on passes of 1-2 positions (tests).
  const char* seg_env = std::getenv("NAQS_PIXELCNN_SEGMENTS");
  const int segments = !seg_env ? 1 : (seg_env[0] == '0' ? 0 : (seg_env[0] == '2' ? 2 : 1));
  const int math = p.math;
  // NAQS_PIXELCNN_PREFETCH=0: the sampler's single-position passes fetch their own
  // windows (A/B of pass()'s prefetch).
  const char* pf_env = std::getenv("NAQS_PIXELCNN_PREFETCH");
  const int prefetch = pf_env && pf_env[0] == '0' ? 0 : 1;
  // NAQS_PIXELCNN_WIDE_V=0: the vertical segment passes with FFMA products take chunks of
  // rows pairs like every other pass (default: 2 rows where they fit, see the kernel).
  const char* wv_env = std::getenv("NAQS_PIXELCNN_WIDE_V");
  const int wide_v = wv_env && wv_env[0] == '0' ? 0 : 1;
  // NAQS_PIXELCNN_TILE_MAP=0|1|2|3: how the FFMA product's thread tiles cover channels and
  // rows (Ctx::product; default 1, where it applies: sampling 110.2 vs 113.4 ms, local
  // energies 919 vs 950 ms at 21x21/20/4096 against map 0, run 86)
  const char* tm_env = std::getenv("NAQS_PIXELCNN_TILE_MAP");
  const int tile_map = tm_env ? std::atoi(tm_env) & 3 : 1;
  // NAQS_PIXELCNN_BLOCK0=window: block 0 of the pipelined passes by the window path (A/B)
  const char* b0_env = std::getenv("NAQS_PIXELCNN_BLOCK0");
  const int block0_window = b0_env && std::string(b0_env) == "window" ? 1 : 0;
  const int wg_round = wg_round_mode();
  const int product_flags = wide_v | tile_map << 1 | block0_window << 5 | wg_round << 6;
  const char* env = std::getenv("NAQS_PIXELCNN_PROFILE");
  const auto kernel = kernel_for<T>(p.threads, d.channels, math, p.pipe);
  // pass_seg_wg reads every block's weights packed for wgmma ([K / 4][C][4] a branch,
  // rounded to TF32 as the other TF32 products round them), after the confs
  const float* wg_w = nullptr;
  if constexpr (sizeof(T) == 4) {
    if (p.pipe == 2 && d.blocks > 1) {
      const size_t conf_bytes = size_t(p.grid) * p.tile * ((size_t(d.n_sites) + 15) & ~size_t(15));
      const size_t off = ((ring_bytes + 255) & ~size_t(255)) + ((conf_bytes + 255) & ~size_t(255));
      float* packed = reinterpret_cast<float*>(static_cast<unsigned char*>(scratch) + off);
      if ((err = pack_wg_weights(w.wh, w.wv, d.blocks, packed, stream)) != cudaSuccess) return err;
      wg_w = packed;
    }
  }
  // A connected walk of the wgmma passes over the sampler's kept activations (plan()
  // allows it with NAQS_PIXELCNN_WG_ROUND=3 only): the storage in this mode's form for the
  // walk (bits + half a TF32 unit, tf32_bias), and exactly as it was after it.
  const int64_t n_biased = p.pipe == 2 && a.mode == kConnected && a.kept_storage
                               ? a.n_stored * d.blocks * d.n_sites * d.channels
                               : 0;
  T* const stores[2] = {a.store_h, a.store_v};
  if constexpr (sizeof(T) == 4) {
    if (n_biased > 0) {
      if (wg_round != 3) return cudaErrorInvalidValue;  // (NAQS_PIXELCNN_WG_ROUND changed since plan())
      for (T* s : stores)
        if ((err = shift_storage_bits(s, n_biased, 0x1000, stream)) != cudaSuccess) return err;
    }
  }
  // Diagnostics (NAQS_PIXELCNN_PROFILE=1): per-CTA clock64 counters of thread 0 (time in
  // each phase, barrier waits included), printed to stderr as fractions of the kernel's
  // cycles.
  const bool profile = env && env[0] == '1';
  long long* prof = nullptr;
  if (profile && (err = cudaMalloc(&prof, sizeof(long long) * kProfSlots * p.grid)) == cudaSuccess)
    err = cudaMemsetAsync(prof, 0, sizeof(long long) * kProfSlots * p.grid, stream);
  if (err == cudaSuccess) {
    kernel<<<p.grid, p.threads, p.smem, stream>>>(d, w, a, p.tile, p.rows, p.xs_stride, p.w_shared, pipeline,
                                                  segments, prefetch, product_flags, ring, confs, tiles_taken, prof,
                                                  wg_w);
    err = cudaGetLastError();
  }
  if constexpr (sizeof(T) == 4) {
    if (n_biased > 0) {  // (taken back whatever happened above; the first error is returned)
      for (T* s : stores) {
        const cudaError_t e = shift_storage_bits(s, n_biased, -0x1000, stream);
        if (err == cudaSuccess) err = e;
      }
    }
  }
  if (err != cudaSuccess || !profile) {
    if (prof) cudaFree(prof);
    return err;
  }
  std::vector<long long> h(size_t(kProfSlots) * p.grid);
  err = cudaMemcpyAsync(h.data(), prof, h.size() * sizeof(long long), cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  cudaFree(prof);
  if (err != cudaSuccess) return err;
  double sum[kProfSlots] = {0};
  for (int b = 0; b < p.grid; ++b)
    for (int q = 0; q < kProfSlots; ++q) sum[q] += double(h[size_t(b) * kProfSlots + q]) / p.grid;
  const double tot = sum[4] > 0 ? sum[4] : 1;
  // the three phases as before the segment path's finer slots (see Ctx::prof)
  const double gather = sum[0] + sum[8], product = sum[1] + sum[9], finish = sum[2] + sum[10] + sum[11];
  std::fprintf(stderr,
               "naqs-walker-profile threads=%d pipe=%d mode=%d math=%d pipeline=%d segments=%d jobs=%lld grid=%d tile=%d rows=%d w_shared=%d smem=%zu | per CTA: "
               "%.3g Mcycles, %.0f chunks (%.0f cycles each) | gather+wait %.1f%% product %.1f%% finish %.1f%% "
               "outputs %.1f%% | segment passes: setup %.1f%% next-chunk gathers %.1f%% | thread 0 in segment chunks (256-thread TF32): "
               "copy wait %.1f%% barrier %.1f%%, product %.1f%% barrier %.1f%%, weight staging %.1f%%, finishing %.1f%% "
               "barrier %.1f%% | sampler's vertical passes %.1f%%\n",
               p.threads, p.pipe, a.mode, math, pipeline, segments, (long long)a.n_jobs, p.grid, p.tile, p.rows, p.w_shared, p.smem, sum[4] / 1e6, sum[5],
               sum[5] > 0 ? (gather + product + finish + sum[6] + sum[7]) / sum[5] : 0.0, 100 * gather / tot,
               100 * product / tot, 100 * finish / tot, 100 * sum[3] / tot, 100 * sum[6] / tot, 100 * sum[7] / tot,
               100 * sum[8] / tot, 100 * sum[0] / tot, 100 * sum[9] / tot, 100 * sum[1] / tot, 100 * sum[10] / tot,
               100 * sum[11] / tot, 100 * sum[2] / tot, 100 * sum[12] / tot);
  if (p.pipe)
    std::fprintf(stderr,
                 "naqs-walker-profile pipe: tables %.1f%% B+first copies %.1f%% barriers %.1f%% copies %.1f%% "
                 "waits %.1f%% products %.1f%% finishing %.1f%% pass-end barrier %.1f%% | block 0 windows: "
                 "gather %.1f%% product %.1f%% finishing %.1f%% | row outputs %.1f%%\n",
                 100 * sum[15] / tot, 100 * sum[6] / tot, 100 * sum[13] / tot, 100 * sum[7] / tot,
                 100 * sum[8] / tot, 100 * sum[9] / tot, 100 * sum[11] / tot, 100 * sum[14] / tot,
                 100 * sum[0] / tot, 100 * sum[1] / tot, 100 * sum[2] / tot, 100 * sum[3] / tot);
  return cudaSuccess;
}

template cudaError_t plan<float>(const Dims&, int64_t, Plan*, int, bool);
template cudaError_t plan<double>(const Dims&, int64_t, Plan*, int, bool);
template cudaError_t walk<float>(const Dims&, const Weights<float>&, const WalkArgs<float>&, const Plan&, void*,
                                 cudaStream_t);
template cudaError_t walk<double>(const Dims&, const Weights<double>&, const WalkArgs<double>&, const Plan&, void*,
                                  cudaStream_t);

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
