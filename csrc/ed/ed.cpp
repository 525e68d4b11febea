// Front end of the exact-diagonalization ops: checks shapes, dtypes and devices
// (messages show what was received), then dispatches to the CPU kernels
// (ed_cpu.cpp) or the CUDA launchers (cuda/*.cu, NAQS_WITH_CUDA builds only).
// Reference implementations: naqs/ed.py (sector_basis_reference,
// heisenberg_matvec_reference, symmetric_representatives_reference,
// symmetric_matvec_reference).
//
// uint64 configurations travel as int64 tensors (same bits; torch's uint64 support
// is thin); naqs/ed.py views them as numpy uint64.
#include "../checks.h"
#include "../registry.h"
#include "ed_kernels.h"

#ifdef NAQS_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/ed_launch.h"
#endif

namespace naqs {
namespace {

void check_edges(const at::Tensor& edges, const at::Tensor& zz, const at::Tensor& exch, int64_t n_sites) {
  check_dim(edges, 2, "edges");
  check_dtype(edges, at::kLong, "edges");
  check_size(edges, 1, 2, "edges");
  check_contiguous(edges, "edges");
  check_dim(zz, 1, "zz");
  check_dtype(zz, at::kDouble, "zz");
  check_size(zz, 0, edges.size(0), "zz");
  check_dim(exch, 1, "exch");
  check_dtype(exch, at::kDouble, "exch");
  check_size(exch, 0, edges.size(0), "exch");
  NAQS_CHECK_VALUE(edges.device().is_cpu() && zz.device().is_cpu() && exch.device().is_cpu(),
                    "edges, zz and exch must be CPU tensors (they are small and read on the host), got edges on ",
                    edges.device(), ", zz on ", zz.device(), ", exch on ", exch.device());
  const int64_t* e = edges.data_ptr<int64_t>();
  for (int64_t k = 0; k < edges.size(0); ++k) {
    NAQS_CHECK_VALUE(e[2 * k] >= 0 && e[2 * k] < n_sites && e[2 * k + 1] >= 0 && e[2 * k + 1] < n_sites &&
                          e[2 * k] != e[2 * k + 1],
                      "edge ", k, " = (", e[2 * k], ", ", e[2 * k + 1], ") is not a pair of distinct sites in [0, ",
                      n_sites, ")");
  }
}

void check_n_sites(int64_t n_sites) {
  NAQS_CHECK_VALUE(n_sites >= 1 && n_sites <= 64, "n_sites must be in [1, 64], got ", n_sites);
}

at::Tensor ed_sector_basis(int64_t n_sites, int64_t n_up) {
  check_n_sites(n_sites);
  NAQS_CHECK_VALUE(n_up >= 0 && n_up <= n_sites, "n_up must be in [0, n_sites=", n_sites, "], got ", n_up);
  const uint64_t dim = ed::binomial(static_cast<int>(n_sites), static_cast<int>(n_up));
  NAQS_CHECK_VALUE(dim < (uint64_t(1) << 40), "sector of ", n_sites, " sites with ", n_up, " up spins has ", dim,
                    " states: too many to list");
  auto out = at::empty({static_cast<int64_t>(dim)}, at::TensorOptions().dtype(at::kLong));
  ed::sector_basis_cpu(static_cast<int>(n_sites), static_cast<int>(n_up),
                       reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>()));
  return out;
}

at::Tensor ed_heisenberg_matvec(const at::Tensor& basis,      // [dim] int64 (uint64 bits), sorted sector
                                const at::Tensor& x,          // [dim] float64
                                const at::Tensor& edges,      // [E, 2] int64, CPU
                                const at::Tensor& zz,         // [E] float64, CPU
                                const at::Tensor& exch,       // [E] float64, CPU
                                const at::Tensor& lo_rank,    // [2^L] int32
                                const at::Tensor& hi_offset,  // [2^(N-L)] int64
                                int64_t n_sites, int64_t lo_bits, int64_t variant) {
  check_n_sites(n_sites);
  check_dim(basis, 1, "basis");
  check_dtype(basis, at::kLong, "basis");
  check_contiguous(basis, "basis");
  check_dim(x, 1, "x");
  check_dtype(x, at::kDouble, "x");
  check_contiguous(x, "x");
  check_size(x, 0, basis.size(0), "x");
  check_edges(edges, zz, exch, n_sites);
  NAQS_CHECK_VALUE(lo_bits >= 1 && lo_bits <= 14 && lo_bits < n_sites, "lo_bits must be in [1, min(14, n_sites - 1)], got ",
                    lo_bits, " for n_sites=", n_sites);
  check_dim(lo_rank, 1, "lo_rank");
  check_dtype(lo_rank, at::kInt, "lo_rank");
  check_contiguous(lo_rank, "lo_rank");
  check_size(lo_rank, 0, int64_t(1) << lo_bits, "lo_rank");
  check_dim(hi_offset, 1, "hi_offset");
  check_dtype(hi_offset, at::kLong, "hi_offset");
  check_contiguous(hi_offset, "hi_offset");
  check_size(hi_offset, 0, int64_t(1) << (n_sites - lo_bits), "hi_offset");
  check_same_device(basis, x, "basis", "x");
  check_same_device(basis, lo_rank, "basis", "lo_rank");
  check_same_device(basis, hi_offset, "basis", "hi_offset");
  auto y = at::empty_like(x);
  const int64_t dim = basis.size(0);
  if (dim == 0) return y;
  if (basis.device().is_cpu()) {
    ed::heisenberg_sector_matvec_cpu(reinterpret_cast<const uint64_t*>(basis.data_ptr<int64_t>()),
                                     x.data_ptr<double>(), y.data_ptr<double>(), dim, edges.data_ptr<int64_t>(),
                                     zz.data_ptr<double>(), exch.data_ptr<double>(), edges.size(0),
                                     lo_rank.data_ptr<int32_t>(), hi_offset.data_ptr<int64_t>(),
                                     static_cast<int>(lo_bits));
    return y;
  }
#ifdef NAQS_WITH_CUDA
  NAQS_CHECK_VALUE(basis.is_cuda(), "ed_heisenberg_matvec: unsupported device ", basis.device());
  NAQS_CHECK_VALUE(edges.size(0) <= ed::cuda::kMaxEdges, "the CUDA matvec takes at most ", ed::cuda::kMaxEdges,
                    " edges, got ", edges.size(0));
  const c10::cuda::CUDAGuard guard(basis.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(basis.device().index()).stream();
  const cudaError_t err = ed::cuda::heisenberg_sector_matvec(
      reinterpret_cast<const uint64_t*>(basis.data_ptr<int64_t>()), x.data_ptr<double>(), y.data_ptr<double>(), dim,
      edges.data_ptr<int64_t>(), zz.data_ptr<double>(), exch.data_ptr<double>(), static_cast<int>(edges.size(0)),
      lo_rank.data_ptr<int32_t>(), hi_offset.data_ptr<int64_t>(), static_cast<int>(lo_bits),
      variant == 1 ? ed::cuda::RankTables::kGlobal : ed::cuda::RankTables::kSharedLow, stream);
  NAQS_CHECK(err == cudaSuccess, "ed_heisenberg_matvec: CUDA launch failed: ", cudaGetErrorString(err));
  return y;
#else
  NAQS_CHECK_VALUE(false, "ed_heisenberg_matvec: tensors are on ", basis.device(),
                    " but naqs._C was built without CUDA (build_info()['cuda'] is False)");
#endif
}

// Byte tables of the group action: table[g][b][v] = image under g of the byte value v
// placed at byte b. Built here from perms so that Python passes only perms/flips.
struct GroupBuffers {
  std::vector<uint64_t> table;
  std::vector<uint8_t> flip;
  ed::GroupTables view;
};

GroupBuffers make_group(const at::Tensor& perms, const at::Tensor& flips, int64_t n_sites, int64_t flip_parity) {
  NAQS_CHECK_VALUE(flip_parity == 1 || flip_parity == -1, "flip_parity must be +1 or -1, got ", flip_parity);
  check_dim(perms, 2, "perms");
  check_dtype(perms, at::kLong, "perms");
  check_size(perms, 1, n_sites, "perms");
  check_dim(flips, 1, "flips");
  check_dtype(flips, at::kBool, "flips");
  check_size(flips, 0, perms.size(0), "flips");
  NAQS_CHECK_VALUE(perms.device().is_cpu() && flips.device().is_cpu(), "perms and flips must be CPU tensors");
  NAQS_CHECK_VALUE(perms.size(0) >= 1, "the group needs at least the identity, got ", perms.size(0), " elements");
  const auto p = perms.contiguous();
  const auto f = flips.contiguous();
  const int64_t g_count = p.size(0);
  const int n_bytes = static_cast<int>((n_sites + 7) / 8);
  GroupBuffers out;
  out.table.assign(static_cast<size_t>(g_count) * n_bytes * 256, 0);
  out.flip.resize(g_count);
  const int64_t* pp = p.data_ptr<int64_t>();
  const bool* fp = f.data_ptr<bool>();
  for (int64_t g = 0; g < g_count; ++g) {
    // (T s)[i] = s[perm[i]]: bit perm[i] of s lands on bit i of T s.
    std::vector<int> dest(n_sites, -1);
    for (int64_t i = 0; i < n_sites; ++i) {
      const int64_t src = pp[g * n_sites + i];
      NAQS_CHECK_VALUE(src >= 0 && src < n_sites && dest[src] < 0, "perms[", g, "] is not a permutation of ",
                        n_sites, " sites");
      dest[src] = static_cast<int>(i);
    }
    out.flip[g] = fp[g] ? 1 : 0;
    for (int b = 0; b < n_bytes; ++b) {
      for (int v = 0; v < 256; ++v) {
        uint64_t image = 0;
        for (int q = 0; q < 8; ++q) {
          const int site = 8 * b + q;
          if (site < n_sites && ((v >> q) & 1)) image |= uint64_t(1) << dest[site];
        }
        out.table[(static_cast<size_t>(g) * n_bytes + b) * 256 + v] = image;
      }
    }
  }
  out.view.table = out.table.data();
  out.view.flip = out.flip.data();
  out.view.n_group = g_count;
  out.view.n_bytes = n_bytes;
  out.view.flip_parity = static_cast<int>(flip_parity);
  out.view.all_ones = n_sites == 64 ? ~uint64_t(0) : ((uint64_t(1) << n_sites) - 1);
  return out;
}

std::vector<at::Tensor> ed_symmetric_representatives(int64_t n_sites, int64_t n_up, const at::Tensor& perms,
                                                     const at::Tensor& flips, int64_t flip_parity) {
  check_n_sites(n_sites);
  NAQS_CHECK_VALUE(n_up >= 0 && n_up <= n_sites, "n_up must be in [0, n_sites=", n_sites, "], got ", n_up);
  auto group = make_group(perms, flips, n_sites, flip_parity);
  uint64_t* reps = nullptr;
  int64_t* orbit = nullptr;
  const int64_t count = ed::symmetric_representatives_cpu(static_cast<int>(n_sites), static_cast<int>(n_up),
                                                          group.view, &reps, &orbit);
  auto reps_t = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  auto orbit_t = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  std::copy(reps, reps + count, reinterpret_cast<uint64_t*>(reps_t.data_ptr<int64_t>()));
  std::copy(orbit, orbit + count, orbit_t.data_ptr<int64_t>());
  ed::free_buffer(reps);
  ed::free_buffer(orbit);
  return {reps_t, orbit_t};
}

at::Tensor ed_symmetric_matvec(const at::Tensor& reps,    // [dim] int64, sorted representatives
                               const at::Tensor& orbit,   // [dim] int64 orbit sizes
                               const at::Tensor& x,       // [dim] float64
                               const at::Tensor& edges, const at::Tensor& zz, const at::Tensor& exch,
                               const at::Tensor& perms, const at::Tensor& flips, int64_t n_sites,
                               int64_t flip_parity) {
  check_n_sites(n_sites);
  check_dim(reps, 1, "reps");
  check_dtype(reps, at::kLong, "reps");
  check_contiguous(reps, "reps");
  check_dim(orbit, 1, "orbit");
  check_dtype(orbit, at::kLong, "orbit");
  check_contiguous(orbit, "orbit");
  check_size(orbit, 0, reps.size(0), "orbit");
  check_dim(x, 1, "x");
  check_dtype(x, at::kDouble, "x");
  check_contiguous(x, "x");
  check_size(x, 0, reps.size(0), "x");
  check_edges(edges, zz, exch, n_sites);
  NAQS_CHECK_VALUE(reps.device().is_cpu() && orbit.device().is_cpu() && x.device().is_cpu(),
                    "ed_symmetric_matvec has a CPU kernel only, got reps on ", reps.device(), " and x on ",
                    x.device());
  auto group = make_group(perms, flips, n_sites, flip_parity);
  auto y = at::empty_like(x);
  if (reps.size(0) == 0) return y;
  const int64_t missing = ed::heisenberg_symmetric_matvec_cpu(
      reinterpret_cast<const uint64_t*>(reps.data_ptr<int64_t>()), orbit.data_ptr<int64_t>(), reps.size(0),
      x.data_ptr<double>(), y.data_ptr<double>(), edges.data_ptr<int64_t>(), zz.data_ptr<double>(),
      exch.data_ptr<double>(), edges.size(0), group.view);
  NAQS_CHECK_VALUE(missing == 0, missing,
                    " connections led to states whose representative is not in reps: the representative list does "
                    "not match this group and sector");
  return y;
}

void register_ops(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("ed_sector_basis", &ed_sector_basis, py::arg("n_sites"), py::arg("n_up"),
        "Sorted U(1) sector basis [C(N, n_up)] int64 (uint64 bits; bit i = site i, set = up).");
  m.def("ed_heisenberg_matvec", &ed_heisenberg_matvec, py::arg("basis"), py::arg("x"), py::arg("edges"),
        py::arg("zz"), py::arg("exch"), py::arg("lo_rank"), py::arg("hi_offset"), py::arg("n_sites"),
        py::arg("lo_bits"), py::arg("variant") = 0,
        "y = H x in a U(1) sector (float64, gather form; CPU or CUDA by the device of basis/x).");
  m.def("ed_symmetric_representatives", &ed_symmetric_representatives, py::arg("n_sites"), py::arg("n_up"),
        py::arg("perms"), py::arg("flips"), py::arg("flip_parity") = 1,
        "(representatives [R] int64 sorted, orbit sizes [R] int64) of the sector under the group.");
  m.def("ed_symmetric_matvec", &ed_symmetric_matvec, py::arg("reps"), py::arg("orbit"), py::arg("x"),
        py::arg("edges"), py::arg("zz"), py::arg("exch"), py::arg("perms"), py::arg("flips"), py::arg("n_sites"),
        py::arg("flip_parity") = 1, "y = H x in the fully symmetric (trivial representation) basis (CPU).");
}

}  // namespace

NAQS_REGISTER_OPS(ed, register_ops);

}  // namespace naqs
