// Front end of the row-cached exact sampler (op naqs._C.pixelcnn_sample).
// Reference: naqs.models.pixelcnn.PixelCNN.sample_reference (same uniforms, same samples).
#include "front.h"

namespace naqs {
namespace pixelcnn {
namespace {

std::vector<at::Tensor> pixelcnn_sample(const std::vector<at::Tensor>& weights,  // packed_weights() values
                                        int64_t lx, int64_t ly, std::optional<int64_t> magnetization,
                                        const at::Tensor& uniforms,  // [B, N] float64 in [0, 1)
                                        bool keep_activations)       // also return the walk's storage
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
  // keep_activations: the walk writes every activation (h_l, v_l at every site) and the
  // float64 prefix sums of the log-conditionals, the storage a connected walk reads
  // (pixelcnn_connected's store_h, store_v, prefix), instead of its 3-row rings
  std::vector<at::Tensor> storage;
  if (keep_activations) storage = make_storage(net, batch, uniforms);
  auto result = [&]() {
    std::vector<at::Tensor> out{spins, log_psi};
    out.insert(out.end(), storage.begin(), storage.end());
    return out;
  };
  if (batch == 0) return result();
  auto go = [&](auto tag) {
    using T = decltype(tag);
    WalkArgs<T> a{};
    a.mode = kSample;
    a.n_jobs = batch;
    a.uniforms = uniforms.data_ptr<double>();
    a.spins_out = spins.data_ptr<int8_t>();
    a.log_psi = log_psi.data_ptr<double>();
    if (keep_activations) {
      a.store_h = storage[0].data_ptr<T>();
      a.store_v = storage[1].data_ptr<T>();
      a.prefix = storage[2].data_ptr<double>();
    }
    run_walk<T>(net, a);
  };
  if (net.dtype == at::kFloat) go(float{}); else go(double{});
  return result();
}

void register_ops(pybind11::module_& m) {
  m.def("pixelcnn_sample", &pixelcnn_sample, pybind11::arg("weights"), pybind11::arg("lx"), pybind11::arg("ly"),
        pybind11::arg("magnetization"), pybind11::arg("uniforms"), pybind11::arg("keep_activations") = false,
        "Row-cached exact sampling: (spins int8 [B,N], log_psi float64 [B,2] = (re, im), no sign rule); with "
        "keep_activations also (store_h, store_v [B,L,Ly,Lx,C], prefix float64 [B,N+1,2]) for pixelcnn_connected.");
}

}  // namespace

NAQS_REGISTER_OPS(pixelcnn_sample, register_ops);

}  // namespace pixelcnn
}  // namespace naqs
