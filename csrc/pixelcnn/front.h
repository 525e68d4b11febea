// Shared pieces of the PixelCNN op front ends (sample.cpp, log_psi.cpp,
// connected.cpp): weight checks, repacking into the kernel layout (walker.h), and the
// CPU/CUDA dispatch of one walk. Every bad input raises a Python exception that shows
// what was received.
#pragma once

#include <torch/extension.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "../checks.h"
#include "../registry.h"
#include "cpu/walker_cpu.h"
#include "walker.h"

#ifdef NAQS_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/walker_cuda.h"
#endif

namespace naqs {
namespace pixelcnn {

// The network in kernel layout: repacked, padded weights that own their memory.
struct Net {
  Dims dims{};
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  std::vector<at::Tensor> w;  // wv0, wv, bv, wh0, wh, bh, wo, bo (kernel layout)

  template <typename T>
  Weights<T> weights() const {
    return Weights<T>{w[0].data_ptr<T>(), w[1].data_ptr<T>(), w[2].data_ptr<T>(), w[3].data_ptr<T>(),
                      w[4].data_ptr<T>(), w[5].data_ptr<T>(), w[6].data_ptr<T>(), w[7].data_ptr<T>()};
  }
};

inline void check_shape(const at::Tensor& t, std::vector<int64_t> want, const char* name) {
  NAQS_CHECK_VALUE(t.sizes().vec() == want, "weight ", name, " must have shape ", at::IntArrayRef(want),
                    " (from the other weights), got ", shape_str(t));
}

// Checks the 8 tensors of PixelCNN.packed_weights() (in its key order: wv0, wv, bv,
// wh0, wh, bh, wo, bo) against each other and the lattice, and repacks them.
inline Net make_net(const std::vector<at::Tensor>& packed, int64_t lx, int64_t ly,
                    std::optional<int64_t> magnetization) {
  NAQS_CHECK_VALUE(packed.size() == 8, "weights must be the 8 tensors of PixelCNN.packed_weights() ",
                    "(wv0, wv, bv, wh0, wh, bh, wo, bo), got ", packed.size());
  static const char* names[8] = {"wv0", "wv", "bv", "wh0", "wh", "bh", "wo", "bo"};
  NAQS_CHECK_VALUE(lx >= 1 && ly >= 1, "lattice must be at least 1x1, got ", lx, "x", ly);
  const auto dtype = packed[0].scalar_type();
  NAQS_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble, "weights must be float32 or float64, got ", dtype);
  for (int i = 0; i < 8; ++i) {
    NAQS_CHECK_TYPE(packed[i].scalar_type() == dtype, "weight ", names[i], " has dtype ", packed[i].scalar_type(),
                     " but wv0 has ", dtype);
    check_same_device(packed[i], packed[0], names[i], "wv0");
    check_contiguous(packed[i], names[i]);
  }
  NAQS_CHECK_VALUE(packed[2].dim() == 2 && packed[2].size(0) >= 1, "weight bv must be [L, C] with L >= 1, got ",
                    shape_str(packed[2]));
  const int64_t L = packed[2].size(0), C = packed[2].size(1);
  NAQS_CHECK_VALUE(C >= 1, "the network needs at least one channel, got bv of shape ", shape_str(packed[2]));
  check_shape(packed[0], {C, 1, 3, 3}, names[0]);
  check_shape(packed[1], {L - 1, C, C, 3, 3}, names[1]);
  check_shape(packed[3], {C, 1 + C, 3, 3}, names[3]);
  check_shape(packed[4], {L - 1, C, 2 * C, 3, 3}, names[4]);
  check_shape(packed[5], {L, C}, names[5]);
  check_shape(packed[6], {4, C}, names[6]);
  check_shape(packed[7], {4}, names[7]);
  const int64_t n = lx * ly;
  NAQS_CHECK_VALUE(n < (int64_t(1) << 24), "lattice too large: ", lx, "x", ly);
  int target_up = -1;
  if (magnetization.has_value()) {
    const int64_t m = *magnetization;
    NAQS_CHECK_VALUE(m >= -n && m <= n && (n + m) % 2 == 0, "magnetization ", m, " is impossible for ", n,
                      " spins: it must have the parity of N and |M| <= N");
    target_up = int((n + m) / 2);
  }
  Net net;
  net.dtype = dtype;
  net.device = packed[0].device();
  const int64_t c4 = (C + 3) / 4 * 4;
  net.dims = Dims{int(lx), int(ly), int(n), int(L), int(C), int(c4), target_up};
  auto pad = [&](at::Tensor t) {  // last dim C -> C4 with zero columns
    t = t.contiguous();
    if (c4 == C) return t;
    auto sizes = t.sizes().vec();
    sizes.back() = c4;
    auto out = at::zeros(sizes, t.options());
    out.narrow(-1, 0, C).copy_(t);
    return out;
  };
  net.w = {
      pad(packed[0].permute({2, 3, 1, 0}).reshape({9, 1, C})),
      pad(packed[1].permute({0, 3, 4, 2, 1}).reshape({L - 1, 9, C, C})),
      packed[2].contiguous(),
      pad(packed[3].permute({2, 3, 1, 0}).reshape({9, 1 + C, C})),
      pad(packed[4].permute({0, 3, 4, 2, 1}).reshape({L - 1, 9, 2 * C, C})),
      packed[5].contiguous(),
      packed[6].t().contiguous(),
      packed[7].contiguous(),
  };
  return net;
}

// The storage of `batch` samples that a forward walk (or a sampling walk keeping its
// activations) writes and a connected walk reads: every activation h_l, v_l as
// [B, L, Ly, Lx, C] in the network dtype, and the float64 prefix sums of the
// log-conditionals as [B, N + 1, 2].
inline std::vector<int64_t> activation_shape(const Net& net, int64_t batch) {
  return {batch, net.dims.blocks, net.dims.ly, net.dims.lx, net.dims.channels};
}
inline std::vector<int64_t> prefix_shape(const Net& net, int64_t batch) { return {batch, net.dims.n_sites + 1, 2}; }
// (store_h, store_v, prefix), uninitialized, on the device of `like`.
inline std::vector<at::Tensor> make_storage(const Net& net, int64_t batch, const at::Tensor& like) {
  const auto act = activation_shape(net, batch);
  return {at::empty(act, like.options().dtype(net.dtype)), at::empty(act, like.options().dtype(net.dtype)),
          at::empty(prefix_shape(net, batch), like.options().dtype(at::kDouble))};
}

// An int8 [B, N] configuration tensor of +-1 on the weights' device.
inline void check_spins(const at::Tensor& spins, const Net& net, const char* name) {
  check_dim(spins, 2, name);
  check_dtype(spins, at::kChar, name);
  check_size(spins, 1, net.dims.n_sites, name);
  check_contiguous(spins, name);
  NAQS_CHECK_VALUE(spins.device() == net.device, name, " is on ", spins.device(), " but the weights are on ",
                    net.device);
  if (spins.numel()) {
    NAQS_CHECK_VALUE(spins.abs().eq(1).all().item<bool>(), name, " must contain only +1 and -1");
  }
}

// Runs one walk on the weights' device (CPU kernel, or CUDA kernel on the current stream).
template <typename T>
void run_walk(const Net& net, const WalkArgs<T>& args) {
  if (args.n_jobs <= 0) return;
  const auto weights = net.weights<T>();
  if (net.device.is_cpu()) {
    cpu::walk<T>(net.dims, weights, args);
    return;
  }
#ifdef NAQS_WITH_CUDA
  NAQS_CHECK_VALUE(net.device.is_cuda(), "unsupported device ", net.device);
  c10::cuda::CUDAGuard guard(net.device);
  // NAQS_PIXELCNN_CUDA_KERNEL=legacy: the first kernel, for side-by-side benchmarks.
  const char* kernel_env = std::getenv("NAQS_PIXELCNN_CUDA_KERNEL");
  const bool legacy = kernel_env && std::string(kernel_env) == "legacy";
  NAQS_CHECK_VALUE(!(legacy && args.mode == kSample && args.store_h),
                   "the legacy CUDA kernel (NAQS_PIXELCNN_CUDA_KERNEL=legacy) does not keep the sampler's ",
                   "activations: sample without keep_activations");
  NAQS_CHECK_VALUE(net.dims.lx <= cuda::kMaxWidth, "the CUDA walker takes lattices at most ", cuda::kMaxWidth,
                   " sites wide, got lx = ", net.dims.lx, " (the CPU kernel has no such limit)");
  cuda::Plan plan;
  cudaError_t err = legacy ? cuda::legacy::plan<T>(net.dims, args.n_jobs, &plan)
                           : cuda::plan<T>(net.dims, args.n_jobs, &plan, args.mode,
                                           args.mode == kConnected && args.kept_storage);
  NAQS_CHECK_VALUE(err == cudaSuccess, "naqs pixelcnn CUDA walk: no launch configuration fits this network (",
                    net.dims.channels, " channels, ", net.dims.lx, "x", net.dims.ly, "): ", cudaGetErrorString(err));
  auto scratch = at::empty({int64_t(plan.scratch_bytes)}, at::TensorOptions().dtype(at::kByte).device(net.device));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  err = legacy ? cuda::legacy::walk<T>(net.dims, weights, args, plan, scratch.data_ptr(), stream)
               : cuda::walk<T>(net.dims, weights, args, plan, scratch.data_ptr(), stream);
  NAQS_CHECK(err == cudaSuccess, "naqs pixelcnn CUDA walk (mode ", args.mode, ") failed: ", cudaGetErrorString(err));
#else
  NAQS_CHECK_VALUE(false, "naqs._C was built without CUDA; tensors on ", net.device, " are not supported");
#endif
}

}  // namespace pixelcnn
}  // namespace naqs
