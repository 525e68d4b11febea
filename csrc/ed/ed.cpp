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

std::tuple<at::Tensor, at::Tensor> ed_sector_tables(int64_t n_sites, int64_t n_up, int64_t lo_bits) {
  check_n_sites(n_sites);
  NAQS_CHECK_VALUE(n_sites >= 2, "split rank tables need at least 2 sites, got n_sites=", n_sites);
  NAQS_CHECK_VALUE(n_up >= 0 && n_up <= n_sites, "n_up must be in [0, n_sites=", n_sites, "], got ", n_up);
  NAQS_CHECK_VALUE(lo_bits >= 1 && lo_bits < n_sites && lo_bits <= 30, "lo_bits must be in [1, min(30, n_sites - 1)], got ",
                    lo_bits, " for n_sites=", n_sites);
  NAQS_CHECK_VALUE(n_sites - lo_bits <= 26, n_sites, " sites with lo_bits=", lo_bits, " need a 2^",
                    n_sites - lo_bits, " high table: too large");
  auto lo_rank = at::empty({int64_t(1) << lo_bits}, at::TensorOptions().dtype(at::kInt));
  auto hi_offset = at::empty({int64_t(1) << (n_sites - lo_bits)}, at::TensorOptions().dtype(at::kLong));
  ed::sector_rank_tables_cpu(static_cast<int>(n_sites), static_cast<int>(n_up), static_cast<int>(lo_bits),
                             lo_rank.data_ptr<int32_t>(), hi_offset.data_ptr<int64_t>());
  return {lo_rank, hi_offset};
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

// Sector dimension with the checks every enumeration shares.
int64_t checked_sector_dim(int64_t n_sites, int64_t n_up) {
  check_n_sites(n_sites);
  NAQS_CHECK_VALUE(n_up >= 0 && n_up <= n_sites, "n_up must be in [0, n_sites=", n_sites, "], got ", n_up);
  const uint64_t dim = ed::binomial(static_cast<int>(n_sites), static_cast<int>(n_up));
  NAQS_CHECK_VALUE(dim < (uint64_t(1) << 40), "sector of ", n_sites, " sites with ", n_up, " up spins has ", dim,
                    " states: too many to scan");
  return static_cast<int64_t>(dim);
}

at::Device device_from_index(int64_t device_index) {
  NAQS_CHECK_VALUE(device_index >= -1, "device_index must be -1 (CPU) or a CUDA device index, got ", device_index);
  if (device_index < 0) return at::Device(at::kCPU);
#ifdef NAQS_WITH_CUDA
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index));
#else
  NAQS_CHECK_VALUE(false, "device_index=", device_index,
                    " asks for CUDA but naqs._C was built without CUDA (build_info()['cuda'] is False)");
  return at::Device(at::kCPU);
#endif
}

// Sorted (reps, orbit) from the callee-allocated buffers of a CPU enumeration.
std::vector<at::Tensor> wrap_cpu_reps(int64_t count, uint64_t* reps, int64_t* orbit) {
  auto reps_t = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  auto orbit_t = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  std::copy(reps, reps + count, reinterpret_cast<uint64_t*>(reps_t.data_ptr<int64_t>()));
  std::copy(orbit, orbit + count, orbit_t.data_ptr<int64_t>());
  ed::free_buffer(reps);
  ed::free_buffer(orbit);
  return {reps_t, orbit_t};
}

#ifdef NAQS_WITH_CUDA
at::Tensor binomial_table(const at::Device& device) {
  auto t = at::empty({65 * 65}, at::TensorOptions().dtype(at::kLong));
  auto* p = reinterpret_cast<uint64_t*>(t.data_ptr<int64_t>());
  for (int n = 0; n < 65; ++n)
    for (int r = 0; r < 65; ++r) p[n * 65 + r] = ed::binomial(n, r);
  return t.to(device);
}

// GPU enumeration: launch(reps, orbit, capacity, count) appends unsorted representatives;
// rerun once with the exact capacity if the estimate was short, then sort.
template <typename Launch>
std::vector<at::Tensor> enumerate_cuda(int64_t dim, int64_t n_group, const at::Device& device, const char* what,
                                       Launch launch) {
  const c10::cuda::CUDAGuard guard(device);
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  int64_t capacity = std::min<int64_t>(dim, dim / std::max<int64_t>(n_group, 1) + dim / (4 * std::max<int64_t>(n_group, 1)) + 65536);
  at::Tensor reps, orbit;
  int64_t count = 0;
  for (int attempt = 0; attempt < 2; ++attempt) {
    reps = at::empty({std::max<int64_t>(capacity, 1)}, opts);
    orbit = at::empty({std::max<int64_t>(capacity, 1)}, opts);
    auto counter = at::zeros({1}, opts);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
    const cudaError_t err = launch(reinterpret_cast<uint64_t*>(reps.data_ptr<int64_t>()), orbit.data_ptr<int64_t>(),
                                   capacity, reinterpret_cast<unsigned long long*>(counter.data_ptr<int64_t>()), stream);
    NAQS_CHECK(err == cudaSuccess, what, ": CUDA launch failed: ", cudaGetErrorString(err));
    count = counter.item<int64_t>();
    if (count <= capacity) break;
    capacity = count;
  }
  NAQS_CHECK(count <= capacity, what, ": representative count changed between runs (", count, " > ", capacity, ")");
  reps = reps.narrow(0, 0, count);
  orbit = orbit.narrow(0, 0, count);
  // Sector words of <= 63 sites are non-negative as int64: the signed sort is the numeric one.
  auto sorted = reps.sort(/*stable=*/false, /*dim=*/0, /*descending=*/false);
  return {std::get<0>(sorted).contiguous(), orbit.index_select(0, std::get<1>(sorted)).contiguous()};
}
#endif

std::vector<at::Tensor> ed_symmetric_representatives(int64_t n_sites, int64_t n_up, const at::Tensor& perms,
                                                     const at::Tensor& flips, int64_t flip_parity,
                                                     int64_t device_index) {
  const int64_t dim = checked_sector_dim(n_sites, n_up);
  (void)dim;
  auto group = make_group(perms, flips, n_sites, flip_parity);
  const at::Device device = device_from_index(device_index);
  if (device.is_cpu()) {
    uint64_t* reps = nullptr;
    int64_t* orbit = nullptr;
    const int64_t count = ed::symmetric_representatives_cpu(static_cast<int>(n_sites), static_cast<int>(n_up),
                                                            group.view, &reps, &orbit);
    return wrap_cpu_reps(count, reps, orbit);
  }
#ifdef NAQS_WITH_CUDA
  NAQS_CHECK_VALUE(n_sites <= 63, "the CUDA enumeration takes at most 63 sites, got ", n_sites);
  const c10::cuda::CUDAGuard guard(device);
  auto table = at::from_blob(group.table.data(), {static_cast<int64_t>(group.table.size())},
                             at::TensorOptions().dtype(at::kLong)).to(device);
  auto flip = at::from_blob(group.flip.data(), {static_cast<int64_t>(group.flip.size())},
                            at::TensorOptions().dtype(at::kByte)).to(device);
  auto binom = binomial_table(device);
  ed::GroupTables view = group.view;
  view.table = reinterpret_cast<const uint64_t*>(table.data_ptr<int64_t>());
  view.flip = flip.data_ptr<uint8_t>();
  return enumerate_cuda(dim, view.n_group, device, "ed_symmetric_representatives",
                        [&](uint64_t* r, int64_t* o, int64_t cap, unsigned long long* cnt, cudaStream_t stream) {
                          return ed::cuda::symmetric_representatives_generic(
                              static_cast<int>(n_sites), static_cast<int>(n_up), view,
                              reinterpret_cast<const uint64_t*>(binom.data_ptr<int64_t>()), r, o, cap, cnt, stream);
                        });
#else
  return {};
#endif
}

void check_symmetric_vectors(const at::Tensor& reps, const at::Tensor& orbit, const at::Tensor& x) {
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
  check_same_device(reps, orbit, "reps", "orbit");
  check_same_device(reps, x, "reps", "x");
}

void check_missing(int64_t missing) {
  NAQS_CHECK_VALUE(missing == 0, missing,
                    " connections led to states whose representative is not in reps: the representative list does "
                    "not match this group and sector");
}

#ifdef NAQS_WITH_CUDA
// Device matvec of either group form: launch(x, z, sqrt_orbit, y, missing, stream).
template <typename Launch>
at::Tensor symmetric_matvec_cuda(const at::Tensor& orbit, const at::Tensor& x, const char* what, Launch launch) {
  const c10::cuda::CUDAGuard guard(x.device());
  auto sqrt_orbit = orbit.to(at::kDouble).sqrt();
  auto z = (x / sqrt_orbit).contiguous();
  auto y = at::empty_like(x);
  auto missing = at::zeros({1}, at::TensorOptions().dtype(at::kLong).device(x.device()));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const cudaError_t err = launch(x.data_ptr<double>(), z.data_ptr<double>(), sqrt_orbit.data_ptr<double>(),
                                 y.data_ptr<double>(), reinterpret_cast<unsigned long long*>(missing.data_ptr<int64_t>()),
                                 stream);
  NAQS_CHECK(err == cudaSuccess, what, ": CUDA launch failed: ", cudaGetErrorString(err));
  check_missing(missing.item<int64_t>());
  return y;
}
#endif

at::Tensor ed_symmetric_matvec(const at::Tensor& reps,    // [dim] int64, sorted representatives
                               const at::Tensor& orbit,   // [dim] int64 orbit sizes
                               const at::Tensor& x,       // [dim] float64
                               const at::Tensor& edges, const at::Tensor& zz, const at::Tensor& exch,
                               const at::Tensor& perms, const at::Tensor& flips, int64_t n_sites,
                               int64_t flip_parity) {
  check_n_sites(n_sites);
  check_symmetric_vectors(reps, orbit, x);
  check_edges(edges, zz, exch, n_sites);
  auto group = make_group(perms, flips, n_sites, flip_parity);
  if (reps.size(0) == 0) return at::empty_like(x);
  if (reps.device().is_cpu()) {
    auto y = at::empty_like(x);
    check_missing(ed::heisenberg_symmetric_matvec_cpu(
        reinterpret_cast<const uint64_t*>(reps.data_ptr<int64_t>()), orbit.data_ptr<int64_t>(), reps.size(0),
        x.data_ptr<double>(), y.data_ptr<double>(), edges.data_ptr<int64_t>(), zz.data_ptr<double>(),
        exch.data_ptr<double>(), edges.size(0), group.view));
    return y;
  }
#ifdef NAQS_WITH_CUDA
  NAQS_CHECK_VALUE(reps.is_cuda(), "ed_symmetric_matvec: unsupported device ", reps.device());
  NAQS_CHECK_VALUE(edges.size(0) <= ed::cuda::kMaxEdges, "the CUDA matvec takes at most ", ed::cuda::kMaxEdges,
                    " edges, got ", edges.size(0));
  const c10::cuda::CUDAGuard guard(reps.device());
  auto table = at::from_blob(group.table.data(), {static_cast<int64_t>(group.table.size())},
                             at::TensorOptions().dtype(at::kLong)).to(reps.device());
  auto flip = at::from_blob(group.flip.data(), {static_cast<int64_t>(group.flip.size())},
                            at::TensorOptions().dtype(at::kByte)).to(reps.device());
  ed::GroupTables view = group.view;
  view.table = reinterpret_cast<const uint64_t*>(table.data_ptr<int64_t>());
  view.flip = flip.data_ptr<uint8_t>();
  return symmetric_matvec_cuda(
      orbit, x, "ed_symmetric_matvec",
      [&](const double* xp, const double* zp, const double* sp, double* yp, unsigned long long* missing,
          cudaStream_t stream) {
        return ed::cuda::symmetric_matvec_generic(
            reinterpret_cast<const uint64_t*>(reps.data_ptr<int64_t>()), xp, zp, sp, yp, reps.size(0),
            edges.data_ptr<int64_t>(), zz.data_ptr<double>(), exch.data_ptr<double>(),
            static_cast<int>(edges.size(0)), view, missing, stream);
      });
#else
  NAQS_CHECK_VALUE(false, "ed_symmetric_matvec: tensors are on ", reps.device(),
                    " but naqs._C was built without CUDA (build_info()['cuda'] is False)");
  return at::Tensor();
#endif
}

// ------------------------------------------------------------------ torus form
// Point tables of the torus form (ed_torus.h) from the coset representatives point_perms
// (row 0 = identity): table[p][y][v] = lane word of the image of row value v at row y.
struct TorusBuffers {
  std::vector<uint64_t> table;
  ed::torus::TorusView view;
};

constexpr int64_t kMaxTorusTableBytes = 160 * 1024;  // shared memory of one GPU block

TorusBuffers make_torus(int64_t n_sites, int64_t lx, int64_t ly, const at::Tensor& point_perms, bool spin_flip,
                        int64_t flip_parity) {
  check_n_sites(n_sites);
  NAQS_CHECK_VALUE(lx >= 1 && lx <= ed::torus::kMaxSide && ly >= 1 && ly <= ed::torus::kMaxSide,
                    "the torus form needs 1 <= lx, ly <= ", ed::torus::kMaxSide, ", got lx=", lx, ", ly=", ly);
  NAQS_CHECK_VALUE(lx * ly == n_sites, "lx * ly = ", lx * ly, " must equal n_sites = ", n_sites);
  NAQS_CHECK_VALUE(n_sites <= 63, "the torus form takes at most 63 sites, got ", n_sites);
  NAQS_CHECK_VALUE(flip_parity == 1 || flip_parity == -1, "flip_parity must be +1 or -1, got ", flip_parity);
  check_dim(point_perms, 2, "point_perms");
  check_dtype(point_perms, at::kLong, "point_perms");
  check_size(point_perms, 1, n_sites, "point_perms");
  NAQS_CHECK_VALUE(point_perms.device().is_cpu(), "point_perms must be a CPU tensor, got ", point_perms.device());
  const int64_t n_point = point_perms.size(0);
  NAQS_CHECK_VALUE(n_point >= 1 && n_point <= ed::torus::kMaxPoint, "point_perms must hold 1 to ",
                    ed::torus::kMaxPoint, " point operations, got ", n_point);
  const int64_t table_bytes = n_point * (ly << lx) * 8;
  NAQS_CHECK_VALUE(table_bytes <= kMaxTorusTableBytes, "the point tables of ", n_point, " operations on a ", lx, "x",
                    ly, " torus take ", table_bytes, " bytes (limit ", kMaxTorusTableBytes,
                    "): use the generic group form");
  const auto p = point_perms.contiguous();
  const int64_t* pp = p.data_ptr<int64_t>();
  for (int64_t i = 0; i < n_sites; ++i)
    NAQS_CHECK_VALUE(pp[i] == i, "point_perms[0] must be the identity, got ", pp[i], " at site ", i);
  TorusBuffers out;
  out.table.assign(static_cast<size_t>(n_point * (ly << lx)), 0);
  for (int64_t g = 0; g < n_point; ++g) {
    std::vector<int64_t> dest(n_sites, -1);  // (P s)[i] = s[perm[i]]: bit perm[i] of s lands on bit i
    for (int64_t i = 0; i < n_sites; ++i) {
      const int64_t src = pp[g * n_sites + i];
      NAQS_CHECK_VALUE(src >= 0 && src < n_sites && dest[src] < 0, "point_perms[", g, "] is not a permutation of ",
                        n_sites, " sites");
      dest[src] = i;
    }
    for (int64_t y = 0; y < ly; ++y) {
      for (int64_t v = 0; v < (int64_t(1) << lx); ++v) {
        uint64_t image = 0;
        for (int64_t x = 0; x < lx; ++x) {
          if (!((v >> x) & 1)) continue;
          const int64_t d = dest[x + lx * y];
          image |= uint64_t(1) << ((d % lx) + 8 * (d / lx));
        }
        out.table[static_cast<size_t>((g * ly + y) << lx) + static_cast<size_t>(v)] = image;
      }
    }
  }
  auto& v = out.view;
  v.table = out.table.data();
  v.lx = static_cast<int32_t>(lx);
  v.ly = static_cast<int32_t>(ly);
  v.n_point = static_cast<int32_t>(n_point);
  v.spin_flip = spin_flip ? 1 : 0;
  v.flip_parity = spin_flip ? static_cast<int32_t>(flip_parity) : 1;
  v.key_mask = ed::torus::key_mask(static_cast<int>(lx), static_cast<int>(ly));
  v.rest_mask = ed::torus::rest_mask(static_cast<int>(lx), static_cast<int>(ly));
  v.n_group = n_point * lx * ly * (spin_flip ? 2 : 1);
  return out;
}

std::vector<at::Tensor> ed_torus_representatives(int64_t n_sites, int64_t n_up, int64_t lx, int64_t ly,
                                                 const at::Tensor& point_perms, bool spin_flip, int64_t flip_parity,
                                                 int64_t device_index, bool specialized) {
  const int64_t dim = checked_sector_dim(n_sites, n_up);
  (void)dim;
  NAQS_CHECK_VALUE(!spin_flip || 2 * n_up == n_sites, "the spin inversion maps n_up to N - n_up: spin_flip needs n_up = ",
                    "N/2, got n_up=", n_up, " for N=", n_sites);
  auto torus = make_torus(n_sites, lx, ly, point_perms, spin_flip, flip_parity);
  const at::Device device = device_from_index(device_index);
  if (device.is_cpu()) {
    uint64_t* reps = nullptr;
    int64_t* orbit = nullptr;
    const int64_t count = ed::torus_representatives_cpu(static_cast<int>(n_sites), static_cast<int>(n_up),
                                                        torus.view, specialized, &reps, &orbit);
    return wrap_cpu_reps(count, reps, orbit);
  }
#ifdef NAQS_WITH_CUDA
  const c10::cuda::CUDAGuard guard(device);
  auto table = at::from_blob(torus.table.data(), {static_cast<int64_t>(torus.table.size())},
                             at::TensorOptions().dtype(at::kLong)).to(device);
  auto binom = binomial_table(device);
  ed::torus::TorusView view = torus.view;
  view.table = reinterpret_cast<const uint64_t*>(table.data_ptr<int64_t>());
  return enumerate_cuda(dim, view.n_group, device, "ed_torus_representatives",
                        [&](uint64_t* r, int64_t* o, int64_t cap, unsigned long long* cnt, cudaStream_t stream) {
                          return ed::cuda::symmetric_representatives_torus(
                              static_cast<int>(n_sites), static_cast<int>(n_up), view, specialized,
                              reinterpret_cast<const uint64_t*>(binom.data_ptr<int64_t>()), r, o, cap, cnt, stream);
                        });
#else
  return {};
#endif
}

at::Tensor ed_torus_matvec(const at::Tensor& reps, const at::Tensor& orbit, const at::Tensor& x,
                           const at::Tensor& edges, const at::Tensor& zz, const at::Tensor& exch, int64_t lx,
                           int64_t ly, const at::Tensor& point_perms, bool spin_flip, int64_t flip_parity,
                           bool specialized) {
  const int64_t n_sites = lx * ly;
  auto torus = make_torus(n_sites, lx, ly, point_perms, spin_flip, flip_parity);
  check_symmetric_vectors(reps, orbit, x);
  check_edges(edges, zz, exch, n_sites);
  if (reps.size(0) == 0) return at::empty_like(x);
  if (reps.device().is_cpu()) {
    auto y = at::empty_like(x);
    check_missing(ed::torus_symmetric_matvec_cpu(
        reinterpret_cast<const uint64_t*>(reps.data_ptr<int64_t>()), orbit.data_ptr<int64_t>(), reps.size(0),
        x.data_ptr<double>(), y.data_ptr<double>(), edges.data_ptr<int64_t>(), zz.data_ptr<double>(),
        exch.data_ptr<double>(), edges.size(0), torus.view, specialized));
    return y;
  }
#ifdef NAQS_WITH_CUDA
  NAQS_CHECK_VALUE(reps.is_cuda(), "ed_torus_matvec: unsupported device ", reps.device());
  NAQS_CHECK_VALUE(edges.size(0) <= ed::cuda::kMaxEdges, "the CUDA matvec takes at most ", ed::cuda::kMaxEdges,
                    " edges, got ", edges.size(0));
  const c10::cuda::CUDAGuard guard(reps.device());
  auto table = at::from_blob(torus.table.data(), {static_cast<int64_t>(torus.table.size())},
                             at::TensorOptions().dtype(at::kLong)).to(reps.device());
  ed::torus::TorusView view = torus.view;
  view.table = reinterpret_cast<const uint64_t*>(table.data_ptr<int64_t>());
  return symmetric_matvec_cuda(
      orbit, x, "ed_torus_matvec",
      [&](const double* xp, const double* zp, const double* sp, double* yp, unsigned long long* missing,
          cudaStream_t stream) {
        return ed::cuda::symmetric_matvec_torus(
            reinterpret_cast<const uint64_t*>(reps.data_ptr<int64_t>()), xp, zp, sp, yp, reps.size(0),
            edges.data_ptr<int64_t>(), zz.data_ptr<double>(), exch.data_ptr<double>(),
            static_cast<int>(edges.size(0)), view, specialized, missing, stream);
      });
#else
  NAQS_CHECK_VALUE(false, "ed_torus_matvec: tensors are on ", reps.device(),
                    " but naqs._C was built without CUDA (build_info()['cuda'] is False)");
  return at::Tensor();
#endif
}

void register_ops(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("ed_sector_basis", &ed_sector_basis, py::arg("n_sites"), py::arg("n_up"),
        "Sorted U(1) sector basis [C(N, n_up)] int64 (uint64 bits; bit i = site i, set = up).");
  m.def("ed_sector_tables", &ed_sector_tables, py::arg("n_sites"), py::arg("n_up"), py::arg("lo_bits"),
        "(lo_rank [2^lo_bits] int32, hi_offset [2^(n_sites - lo_bits)] int64): the split rank tables of the sector.");
  m.def("ed_heisenberg_matvec", &ed_heisenberg_matvec, py::arg("basis"), py::arg("x"), py::arg("edges"),
        py::arg("zz"), py::arg("exch"), py::arg("lo_rank"), py::arg("hi_offset"), py::arg("n_sites"),
        py::arg("lo_bits"), py::arg("variant") = 0,
        "y = H x in a U(1) sector (float64, gather form; CPU or CUDA by the device of basis/x).");
  m.def("ed_symmetric_representatives", &ed_symmetric_representatives, py::arg("n_sites"), py::arg("n_up"),
        py::arg("perms"), py::arg("flips"), py::arg("flip_parity") = 1, py::arg("device_index") = -1,
        "(representatives [R] int64 sorted, orbit sizes [R] int64) of the sector under the group (byte tables); "
        "device_index -1: CPU, else that CUDA device.");
  m.def("ed_symmetric_matvec", &ed_symmetric_matvec, py::arg("reps"), py::arg("orbit"), py::arg("x"),
        py::arg("edges"), py::arg("zz"), py::arg("exch"), py::arg("perms"), py::arg("flips"), py::arg("n_sites"),
        py::arg("flip_parity") = 1,
        "y = H x in the fully symmetric (trivial representation) basis, byte-table group form (CPU or CUDA by "
        "the device of reps/x).");
  m.def("ed_torus_representatives", &ed_torus_representatives, py::arg("n_sites"), py::arg("n_up"), py::arg("lx"),
        py::arg("ly"), py::arg("point_perms"), py::arg("spin_flip"), py::arg("flip_parity") = 1,
        py::arg("device_index") = -1, py::arg("specialized") = true,
        "ed_symmetric_representatives for the group translations(lx x ly torus) x point_perms [x spin inversion] "
        "(bit-operation translations; same output).");
  m.def("ed_torus_matvec", &ed_torus_matvec, py::arg("reps"), py::arg("orbit"), py::arg("x"), py::arg("edges"),
        py::arg("zz"), py::arg("exch"), py::arg("lx"), py::arg("ly"), py::arg("point_perms"), py::arg("spin_flip"),
        py::arg("flip_parity") = 1, py::arg("specialized") = true,
        "ed_symmetric_matvec for the torus group form (CPU or CUDA by the device of reps/x).");
}

}  // namespace

NAQS_REGISTER_OPS(ed, register_ops);

}  // namespace naqs
