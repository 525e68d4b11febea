// Front end of the cached connected-log-psi op (naqs._C.pixelcnn_connected), the work
// of the local energy. Reference: naqs.local_energy.connected_log_psi_reference.
//
// Per chunk of samples (sized to memory_budget): (1) one forward walk of each sample
// that keeps all its activations and the float64 prefix sums P_i of its per-site
// log-conditionals; (2) one walk per valid connection, sorted by first flipped site k,
// from k onward only, reading everything before k from the sample's storage; the
// result is P_k + sum_{i>=k} log psi_i(s'_i), so log psi(s') - log psi(s) comes from
// the differing suffix alone.
#include "cone.h"
#include "front.h"

namespace naqs {
namespace pixelcnn {
namespace {

at::Tensor pixelcnn_connected(const std::vector<at::Tensor>& weights,  // packed_weights() values
                              int64_t lx, int64_t ly, std::optional<int64_t> magnetization,
                              const at::Tensor& spins,   // [B, N] int8 +-1
                              const at::Tensor& flips,   // [B, M, 2] int64, (i, j) / (i, -1) / (-1, -1)
                              const at::Tensor& counts,  // [B] int64, valid rows first
                              int64_t memory_budget,     // bytes of activation storage per chunk
                              // the samples' storage from pixelcnn_sample(keep_activations) (all
                              // three or none): no forward walk, the whole batch in one chunk
                              const std::optional<at::Tensor>& store_h, const std::optional<at::Tensor>& store_v,
                              const std::optional<at::Tensor>& prefix)
{
  const Net net = make_net(weights, lx, ly, magnetization);
  check_spins(spins, net, "spins");
  const int64_t batch = spins.size(0), n = net.dims.n_sites;
  check_dim(flips, 3, "flips");
  check_dtype(flips, at::kLong, "flips");
  check_size(flips, 0, batch, "flips");
  check_size(flips, 2, 2, "flips");
  check_contiguous(flips, "flips");
  check_dim(counts, 1, "counts");
  check_dtype(counts, at::kLong, "counts");
  check_size(counts, 0, batch, "counts");
  check_contiguous(counts, "counts");
  check_same_device(flips, spins, "flips", "spins");
  check_same_device(counts, spins, "counts", "spins");
  NAQS_CHECK_VALUE(memory_budget > 0, "memory_budget must be positive, got ", memory_budget);
  const bool kept = store_h.has_value() || store_v.has_value() || prefix.has_value();
  if (kept) {
    NAQS_CHECK_VALUE(store_h.has_value() && store_v.has_value() && prefix.has_value(),
                     "store_h, store_v and prefix come together (pixelcnn_sample with keep_activations)");
    const auto act = activation_shape(net, batch);
    for (const auto* t : {&*store_h, &*store_v}) {
      NAQS_CHECK_VALUE(t->sizes().vec() == act, "the kept activations must have shape ", at::IntArrayRef(act),
                       " (these spins and weights), got ", shape_str(*t));
      NAQS_CHECK_TYPE(t->scalar_type() == net.dtype, "the kept activations have dtype ", t->scalar_type(),
                      " but the weights ", net.dtype);
      check_same_device(*t, spins, "kept activations", "spins");
      check_contiguous(*t, "kept activations");
    }
    NAQS_CHECK_VALUE(prefix->sizes().vec() == prefix_shape(net, batch), "prefix must have shape [", batch, ", ",
                     n + 1, ", 2], got ", shape_str(*prefix));
    check_dtype(*prefix, at::kDouble, "prefix");
    check_same_device(*prefix, spins, "prefix", "spins");
    check_contiguous(*prefix, "prefix");
  }
  const int64_t m_conn = flips.size(1);
  auto out = at::zeros({batch, m_conn, 2}, spins.options().dtype(at::kDouble));
  if (batch == 0 || m_conn == 0) return out;
  // Validate the connection layout (one device sync).
  auto valid = at::arange(m_conn, counts.options()).unsqueeze(0) < counts.unsqueeze(1);  // [B, M]
  auto first = flips.select(2, 0), second = flips.select(2, 1);
  auto bad_counts = (counts < 0) | (counts > m_conn);
  auto bad_rows = valid & ((first < 0) | (first >= n) | (second < -1) | (second >= n) | (second == first));
  NAQS_CHECK_VALUE(!(bad_counts.any() | bad_rows.any()).item<bool>(), "flips/counts are not a valid connection ",
                    "layout: counts must lie in [0, ", m_conn, "] and valid rows hold a site in [0, ", n,
                    ") and a second distinct site or -1; got flips of shape ", shape_str(flips));
  // First changed site of each connection.
  auto k_all = at::where(second >= 0, at::minimum(first, second), first);  // [B, M]

  const int64_t elem = net.dtype == at::kFloat ? 4 : 8;
  const int64_t per_sample = 2 * int64_t(net.dims.blocks) * n * net.dims.channels * elem + (n + 1) * 16;
  const int64_t chunk = kept ? std::max<int64_t>(1, batch) : std::max<int64_t>(1, memory_budget / per_sample);
  // NAQS_PIXELCNN_CONE=0: walk everything from k on (the walk before the light cone;
  // A/B benchmarks and tests), read at each call.
  const char* cone_env = std::getenv("NAQS_PIXELCNN_CONE");
  const int no_cone = (cone_env && cone_env[0] == '0') ? 1 : 0;
  auto go = [&](auto tag) {
    using T = decltype(tag);
    for (int64_t b0 = 0; b0 < batch; b0 += chunk) {
      const int64_t nb = std::min(chunk, batch - b0);
      auto sp = spins.narrow(0, b0, nb);
      auto fl = flips.narrow(0, b0, nb);
      auto vmask = valid.narrow(0, b0, nb);
      auto idx = vmask.nonzero();  // [V, 2] (b, m), row-major
      const int64_t n_jobs = idx.size(0);
      if (n_jobs == 0) continue;
      auto k = k_all.narrow(0, b0, nb).index({vmask});  // [V]
      auto order = std::get<1>(k.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
      auto jobs = at::cat({idx.index_select(0, order), k.index_select(0, order).unsqueeze(1)}, 1).contiguous();
      at::Tensor sh, sv, pf;
      if (kept) {  // the sampler's storage of these samples (one chunk)
        sh = *store_h;
        sv = *store_v;
        pf = *prefix;
      } else {
        auto st = make_storage(net, nb, spins);
        sh = st[0];
        sv = st[1];
        pf = st[2];
      }
      WalkArgs<T> f{};
      f.mode = kForward;
      f.n_jobs = nb;
      f.spins = sp.data_ptr<int8_t>();
      f.store_h = sh.data_ptr<T>();
      f.store_v = sv.data_ptr<T>();
      f.prefix = pf.data_ptr<double>();
      if (!kept) run_walk<T>(net, f);
      WalkArgs<T> c = f;
      c.mode = kConnected;
      c.n_jobs = n_jobs;
      c.jobs = jobs.data_ptr<int64_t>();
      c.flips = fl.data_ptr<int64_t>();
      c.n_conn = m_conn;
      c.out = out.narrow(0, b0, nb).data_ptr<double>();
      c.no_cone = no_cone;
      c.kept_storage = kept ? 1 : 0;
      c.n_stored = nb;
      run_walk<T>(net, c);
    }
  };
  if (net.dtype == at::kFloat) go(float{}); else go(double{});
  return out;
}

// The light cone the connected walks use (cone.h), as masks [L, Ly, Lx] of the positions
// of h_l and v_l that a walk of s with `sites` flipped computes (tests check it against
// an explicit dilation of the flipped sites).
std::tuple<at::Tensor, at::Tensor> pixelcnn_cone(int64_t lx, int64_t ly, int64_t blocks, std::vector<int64_t> sites) {
  NAQS_CHECK_VALUE(lx >= 1 && ly >= 1 && blocks >= 1, "lx, ly and blocks must be positive, got ", lx, ", ", ly,
                   ", ", blocks);
  NAQS_CHECK_VALUE(!sites.empty(), "sites must name at least one flipped site");
  Cone cone = Cone::of_flips(int(lx), int(ly));
  for (const int64_t i : sites) {
    NAQS_CHECK_VALUE(i >= 0 && i < lx * ly, "flipped site ", i, " is outside the lattice of ", lx * ly, " sites");
    cone.add(int(i));
  }
  auto h = at::zeros({blocks, ly, lx}, at::kBool), v = at::zeros({blocks, ly, lx}, at::kBool);
  auto ha = h.accessor<bool, 3>(), va = v.accessor<bool, 3>();
  for (int l = 0; l < blocks; ++l)
    for (int y = 0; y < ly; ++y)
      for (int x = 0; x < lx; ++x) {
        ha[l][y][x] = cone.has_h(l, y, x);
        va[l][y][x] = cone.has_v(l, y, x);
      }
  return {h, v};
}

void register_ops(pybind11::module_& m) {
  m.def("pixelcnn_cone", &pixelcnn_cone, pybind11::arg("lx"), pybind11::arg("ly"), pybind11::arg("blocks"),
        pybind11::arg("sites"), "masks [L, Ly, Lx] (h, v) of the light cone a connected walk computes (cone.h).");
  m.def("pixelcnn_connected", &pixelcnn_connected, pybind11::arg("weights"), pybind11::arg("lx"),
        pybind11::arg("ly"), pybind11::arg("magnetization"), pybind11::arg("spins"), pybind11::arg("flips"),
        pybind11::arg("counts"), pybind11::arg("memory_budget") = int64_t(1) << 30,
        pybind11::arg("store_h") = pybind11::none(), pybind11::arg("store_v") = pybind11::none(),
        pybind11::arg("prefix") = pybind11::none(),
        "log psi of every connected configuration, float64 [B,M,2] = (re, im) (padding rows 0), no sign rule; "
        "store_h, store_v, prefix: the samples' storage from pixelcnn_sample(keep_activations=True).");
}

}  // namespace

NAQS_REGISTER_OPS(pixelcnn_connected, register_ops);

}  // namespace pixelcnn
}  // namespace naqs
