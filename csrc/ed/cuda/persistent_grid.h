// Launch size of the ED kernels' persistent grids (CUDA runtime only).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace naqs {
namespace ed {
namespace cuda {

// Blocks for a persistent grid of `kernel` launched with `threads` threads and `shared`
// bytes of dynamic shared memory: as many as are resident on the device at once (each
// block then loops over the work, so shared tables load once per block), at most one
// per `threads` work items, at least one. Opts the kernel into > 48 KiB of dynamic
// shared memory when asked for.
template <typename Kernel>
cudaError_t persistent_grid(Kernel kernel, int64_t work_items, int threads, size_t shared, int* blocks) {
  cudaError_t err;
  if (shared > 48 * 1024) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (err != cudaSuccess) return err;
  }
  int device = 0, sms = 0, per_sm = 0;
  if ((err = cudaGetDevice(&device)) != cudaSuccess) return err;
  if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess) return err;
  if ((err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared)) != cudaSuccess)
    return err;
  const int64_t needed = (work_items + threads - 1) / threads;
  const int64_t resident = int64_t(sms) * (per_sm > 0 ? per_sm : 1);
  *blocks = static_cast<int>(needed < resident ? (needed > 0 ? needed : 1) : resident);
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace ed
}  // namespace naqs
