// The instances of the CUDA walker's kernel (walk_kernel.cuh) as the host pointers that
// walker.cu launches. Each walk_*.cu file compiles a few of them: one translation unit
// per group, so that a parallel build compiles them at the same time (the whole kernel
// in one file was ~90 s of nvcc, the longest step of the package's CUDA build).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "walker_cuda.h"

namespace naqs {
namespace pixelcnn {
namespace cuda {

// walk_kernel's signature (walk_kernel.cuh)
template <typename T>
using WalkKernel = void (*)(Dims, Weights<T>, WalkArgs<T>, int tile, int rows, int xs_stride, int w_shared,
                            int pipeline, int segments, int prefetch, int product_flags, T* ring, int8_t* confs,
                            unsigned long long* tiles_taken, long long* prof, const float* wg_w);

// walk_kernel<T, kThr, kCC, kMath, kBulkW, kPipe, kWG>, instantiated in one walk_*.cu:
//   walk_ffma.cu       float FFMA, 32 channels: 512 and 256 threads, 512 with bulk-copied weights
//   walk_ffma_any.cu   float FFMA, any channel count: 512 and 256 threads
//   walk_double.cu     double (FFMA): 32 and any channels, 512 and 256 threads
//   walk_tf32.cu       float TF32: 32 and any channels at 512 threads, 32 at 256
//   walk_3xtf32.cu     float 3xTF32: 32 and any channels, 512 threads
//   walk_tf32_pipe.cu  float TF32, 256 threads, 32 channels: the pipelined row passes, and
//                      on sm_90a builds (NAQS_WGMMA) their wgmma variant
template <typename T, int kThr, int kCC, int kMath, bool kBulkW = false, bool kPipe = false, bool kWG = false>
WalkKernel<T> walk_kernel_of();

// Every block l > 0's weights of a 32-channel float network in the wgmma passes' layout
// (walk_tf32_pipe.cu), on `stream`.
cudaError_t pack_wg_weights(const float* wh, const float* wv, int blocks, float* out, cudaStream_t stream);

// The bits of n floats at p plus delta (integer add, mod 2^32), on `stream`: the sampler's
// kept storage into and out of the wgmma passes' biased form (NAQS_PIXELCNN_WG_ROUND=3,
// walk_tf32_pipe.cu).
cudaError_t shift_storage_bits(float* p, int64_t n, int delta, cudaStream_t stream);

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
