// The walker's pipelined TF32 row-pass instances (256 threads, 32 channels; plan() picks
// them for the TF32 row walks): pass_seg_pipe, and on sm_90a builds pass_seg_wg (wgmma)
// with the packing of its weights and the bias of kept storage (walk_instances.h).
#include "walk_kernel.cuh"

namespace naqs {
namespace pixelcnn {
namespace cuda {

template WalkKernel<float> walk_kernel_of<float, 256, 32, kTF32, false, true>();
#ifdef NAQS_WGMMA
template WalkKernel<float> walk_kernel_of<float, 256, 32, kTF32, false, true, true>();
#endif

namespace {

// Every block l > 0's weights of a 32-channel float network in pass_seg_wg's layout:
// block l - 1 at kWgPacked (l - 1), h ([18 C][C] -> [18 C / 4][C][4]) then v ([9 C][C]
// -> [9 C / 4][C][4]), each value rounded to TF32 (the MMAs ignore the low bits).
__global__ void pack_wg_weights(const float* __restrict__ wh, const float* __restrict__ wv, int blocks,
                                float* __restrict__ out) {
  constexpr int C = 32, kHElems = 18 * C * C;
  const int64_t n = int64_t(blocks - 1) * kWgPacked;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l1 = i / kWgPacked;
    int e = int(i - l1 * kWgPacked);
    const bool h = e < kHElems;
    if (!h) e -= kHElems;
    const int k = (e >> 7) * 4 + (e & 3), o = (e >> 2) & (C - 1);
    const float v = h ? wh[(l1 * 18 * C + k) * C + o] : wv[(l1 * 9 * C + k) * C + o];
    out[i] = tf32_round(v);
  }
}

// p[i] += delta on the bits (mod 2^32), i < n.
__global__ void add_to_bits(unsigned* __restrict__ p, int64_t n, unsigned delta) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] += delta;
}

}  // namespace

cudaError_t shift_storage_bits(float* p, int64_t n, int delta, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  add_to_bits<<<int(std::min<int64_t>((n + 255) / 256, 4096)), 256, 0, stream>>>(reinterpret_cast<unsigned*>(p), n,
                                                                                  unsigned(delta));
  return cudaGetLastError();
}

cudaError_t pack_wg_weights(const float* wh, const float* wv, int blocks, float* out, cudaStream_t stream) {
  const int64_t n = int64_t(blocks - 1) * kWgPacked;
  if (n <= 0) return cudaSuccess;
  pack_wg_weights<<<int(std::min<int64_t>((n + 255) / 256, 1024)), 256, 0, stream>>>(wh, wv, blocks, out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
