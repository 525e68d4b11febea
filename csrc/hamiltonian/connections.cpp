// Off-diagonal connections of a two-body exchange Hamiltonian, for a batch.
//
// For every sample b and every edge e = (i, j) with s_i != s_j, the exchange term
// flips both spins; the connections of a sample are written compactly (valid edges
// first, in edge order) and padded with flip sites -1 and element 0.
// Reference: naqs.hamiltonian.exchange_connections_reference.
#include <ATen/Parallel.h>

#include "../checks.h"
#include "../registry.h"

namespace naqs {
namespace {

std::vector<at::Tensor> exchange_connections_cpu(const at::Tensor& spins,     // [B, N] int8, +-1
                                                 const at::Tensor& edges,     // [E, 2] int64
                                                 const at::Tensor& exchange)  // [E] float64
{
  check_dim(spins, 2, "spins");
  check_dtype(spins, at::kChar, "spins");
  check_dim(edges, 2, "edges");
  check_dtype(edges, at::kLong, "edges");
  check_size(edges, 1, 2, "edges");
  check_dim(exchange, 1, "exchange");
  check_dtype(exchange, at::kDouble, "exchange");
  check_size(exchange, 0, edges.size(0), "exchange");
  NAQS_CHECK_VALUE(spins.device().is_cpu() && edges.device().is_cpu() && exchange.device().is_cpu(),
                    "exchange_connections (CPU kernel) needs CPU tensors, got spins on ", spins.device());
  const auto s = spins.contiguous();
  const auto ed = edges.contiguous();
  const auto jx = exchange.contiguous();
  const int64_t batch = s.size(0), n_sites = s.size(1), n_edges = ed.size(0);
  const int64_t* e_ptr = ed.data_ptr<int64_t>();
  for (int64_t e = 0; e < n_edges; ++e) {
    const int64_t i = e_ptr[2 * e], j = e_ptr[2 * e + 1];
    NAQS_CHECK_VALUE(i >= 0 && i < n_sites && j >= 0 && j < n_sites && i != j, "edge ", e, " = (", i, ", ",
                      j, ") is not a pair of distinct sites in [0, ", n_sites, ")");
  }
  auto flips = at::full({batch, n_edges, 2}, -1, ed.options());
  auto elements = at::zeros({batch, n_edges}, jx.options());
  auto counts = at::zeros({batch}, ed.options());
  const int8_t* s_ptr = s.data_ptr<int8_t>();
  const double* j_ptr = jx.data_ptr<double>();
  int64_t* f_ptr = flips.data_ptr<int64_t>();
  double* el_ptr = elements.data_ptr<double>();
  int64_t* c_ptr = counts.data_ptr<int64_t>();
  at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int8_t* sb = s_ptr + b * n_sites;
      int64_t m = 0;
      for (int64_t e = 0; e < n_edges; ++e) {
        const int64_t i = e_ptr[2 * e], j = e_ptr[2 * e + 1];
        if (sb[i] != sb[j] && j_ptr[e] != 0.0) {
          int64_t lo = i < j ? i : j, hi = i < j ? j : i;
          f_ptr[(b * n_edges + m) * 2] = lo;
          f_ptr[(b * n_edges + m) * 2 + 1] = hi;
          el_ptr[b * n_edges + m] = j_ptr[e];
          ++m;
        }
      }
      c_ptr[b] = m;
    }
  });
  return {flips, elements, counts};
}

void register_ops(pybind11::module_& m) {
  m.def("exchange_connections", &exchange_connections_cpu, pybind11::arg("spins"), pybind11::arg("edges"),
        pybind11::arg("exchange"),
        "Exchange connections of a batch: (flips [B,E,2] int64, elements [B,E] float64, counts [B] int64).");
}

}  // namespace

NAQS_REGISTER_OPS(hamiltonian, register_ops);

}  // namespace naqs
