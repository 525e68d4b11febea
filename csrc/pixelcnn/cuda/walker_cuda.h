// Launchers of the CUDA row-cached walker (see ../walker.h). Plain C++ types only:
// raw device pointers, sizes and a cudaStream_t, so the .cu includes only the CUDA
// runtime and the torch-heavy front ends do the checking.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "../walker.h"

namespace naqs {
namespace pixelcnn {
namespace cuda {

// Widest lattice the CUDA walker takes (its index arithmetic divides pair and column
// indices below 2^16 by multiply-high, see FastDiv in walk_kernel.cuh).
constexpr int kMaxWidth = 2047;

// How a walk is launched: a persistent grid of CTAs of `threads` threads, each owning
// a tile of `tile` jobs at a time; `scratch_bytes` of device memory (3-row rings and
// walked configurations of every CTA) must be passed to walk().
struct Plan {
  int tile = 0;          // jobs per CTA tile (4 .. 128)
  int rows = 0;          // rows (job, position pairs) of one product chunk (>= tile, but
                         // row walks may take tiles of 2 rows)
  int mode = -1;         // the walk it was made for (plan's mode): walk() refuses to
                         // sample with a plan made for a row walk
  int k_split = 1;       // legacy kernel: K-split groups of the [tile x K] x [K x C] product
  int xs_stride = 0;     // row stride of the shared input window
  int w_shared = 0;      // 1: each pass stages its layer's weights in shared memory
  int threads = 256;
  int pipe = 0;          // 1: the pipelined segment passes of the TF32 row walks (walk_kernel.cuh)
  int math = 0;          // product arithmetic (NAQS_PIXELCNN_MATH when the plan was made)
  int grid = 0;
  size_t smem = 0;       // dynamic shared memory per CTA
  size_t scratch_bytes = 0;
};

// mode: the walk it is for (WalkArgs::mode; -1 when unknown), which can change the CTA size.
// kept_storage: a connected walk over the sampler's kept activations (WalkArgs::kept_storage),
// which the wgmma passes (NAQS_PIXELCNN_WGMMA=1) take only in the biased-storage mode
// (NAQS_PIXELCNN_WG_ROUND=3, walk() biases the storage for the walk).
template <typename T>
cudaError_t plan(const Dims& dims, int64_t n_jobs, Plan* out, int mode = -1, bool kept_storage = false);

// Runs every job of `args` on `stream`; `scratch` has plan.scratch_bytes bytes.
template <typename T>
cudaError_t walk(const Dims& dims, const Weights<T>& weights, const WalkArgs<T>& args, const Plan& plan,
                 void* scratch, cudaStream_t stream);

// The first kernel (walker_legacy.cu: every mode site by site, the vertical branch
// position by position), kept for side-by-side benchmarks. run_walk (front.h) uses it
// when the environment has NAQS_PIXELCNN_CUDA_KERNEL=legacy.
namespace legacy {
template <typename T>
cudaError_t plan(const Dims& dims, int64_t n_jobs, Plan* out);
template <typename T>
cudaError_t walk(const Dims& dims, const Weights<T>& weights, const WalkArgs<T>& args, const Plan& plan,
                 void* scratch, cudaStream_t stream);
}  // namespace legacy

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
