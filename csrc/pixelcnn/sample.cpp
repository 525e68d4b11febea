// Front end of the row-cached exact sampler (op naqs._C.pixelcnn_sample).
// Reference: naqs.models.pixelcnn.PixelCNN.sample_reference (same uniforms, same samples).
#include "front.h"

namespace naqs {
namespace pixelcnn {
namespace {

std::vector<at::Tensor> pixelcnn_sample(const std::vector<at::Tensor>& weights,  // packed_weights() values
                                        int64_t lx, int64_t ly, std::optional<int64_t> magnetization,
                                        const at::Tensor& uniforms)  // [B, N] float64 in [0, 1)
{
  const Net net = make_net(weights, lx, ly, magnetization);
  const int64_t n = net.dims.n_sites;
  check_dim(uniforms, 2, "uniforms");
  check_dtype(uniforms, at::kDouble, "uniforms");
  check_size(uniforms, 1, n, "uniforms");
  check_contiguous(uniforms, "uniforms");
  NAQS_CHECK_VALUE(uniforms.device() == net.device, "uniforms are on ", uniforms.device(),
                    " but the weights are on ", net.device);
  const int64_t batch = uniforms.size(0);
  auto spins = at::empty({batch, n}, uniforms.options().dtype(at::kChar));
  auto log_psi = at::zeros({batch, 2}, uniforms.options());
  if (batch == 0) return {spins, log_psi};
  auto go = [&](auto tag) {
    using T = decltype(tag);
    WalkArgs<T> a{};
    a.mode = kSample;
    a.n_jobs = batch;
    a.uniforms = uniforms.data_ptr<double>();
    a.spins_out = spins.data_ptr<int8_t>();
    a.log_psi = log_psi.data_ptr<double>();
    run_walk<T>(net, a);
  };
  if (net.dtype == at::kFloat) go(float{}); else go(double{});
  return {spins, log_psi};
}

void register_ops(pybind11::module_& m) {
  m.def("pixelcnn_sample", &pixelcnn_sample, pybind11::arg("weights"), pybind11::arg("lx"), pybind11::arg("ly"),
        pybind11::arg("magnetization"), pybind11::arg("uniforms"),
        "Row-cached exact sampling: (spins int8 [B,N], log_psi float64 [B,2] = (re, im), no sign rule).");
}

}  // namespace

NAQS_REGISTER_OPS(pixelcnn_sample, register_ops);

}  // namespace pixelcnn
}  // namespace naqs
