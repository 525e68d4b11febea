// Front end of the row-cached log-psi evaluation (op naqs._C.pixelcnn_log_psi): the
// forward of the autograd Function in naqs.ops. Reference: PixelCNN.log_psi (without
// the sign rule, which Python adds).
#include "front.h"

namespace naqs {
namespace pixelcnn {
namespace {

at::Tensor pixelcnn_log_psi(const std::vector<at::Tensor>& weights,  // packed_weights() values
                            int64_t lx, int64_t ly, std::optional<int64_t> magnetization,
                            const at::Tensor& spins)  // [B, N] int8 +-1
{
  const Net net = make_net(weights, lx, ly, magnetization);
  check_spins(spins, net, "spins");
  const int64_t batch = spins.size(0);
  auto log_psi = at::zeros({batch, 2}, spins.options().dtype(at::kDouble));
  if (batch == 0) return log_psi;
  auto go = [&](auto tag) {
    using T = decltype(tag);
    WalkArgs<T> a{};
    a.mode = kForward;
    a.n_jobs = batch;
    a.spins = spins.data_ptr<int8_t>();
    a.log_psi = log_psi.data_ptr<double>();
    run_walk<T>(net, a);
  };
  if (net.dtype == at::kFloat) go(float{}); else go(double{});
  return log_psi;
}

void register_ops(pybind11::module_& m) {
  m.def("pixelcnn_log_psi", &pixelcnn_log_psi, pybind11::arg("weights"), pybind11::arg("lx"), pybind11::arg("ly"),
        pybind11::arg("magnetization"), pybind11::arg("spins"),
        "log psi of given configurations, float64 [B,2] = (re, im), no sign rule; per-site terms summed in float64.");
}

}  // namespace

NAQS_REGISTER_OPS(pixelcnn_log_psi, register_ops);

}  // namespace pixelcnn
}  // namespace naqs
