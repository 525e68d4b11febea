// Microbenchmark of the exact-diagonalization matvec (y = H x on a U(1) sector), without
// Python.
//
//   naqs_bench_ed [lx ly [cpu|cuda [repeats]]]     (default: 6 4 cpu 5, 24 sites)
//
// Heisenberg J1 model on the lx x ly torus, sector N/2 up. Side by side in one run:
//   baseline  the same gather form, each connected word ranked by binary search in the
//             sorted basis (std::lower_bound: the textbook sector matvec);
//   kernel    heisenberg_sector_matvec_cpu (two look-ups in the split rank tables);
//   cuda      heisenberg_sector_matvec, both rank-table variants (CUDA builds).
// Every result is checked against the baseline's y. Per line: ms per matvec, rows/s, and
// two memory floors at the copy bandwidth measured in the same run (a parallel copy of
// 2 x 256 MB on the CPU, a device-to-device copy on the GPU): basis, x and y streamed
// once (24 B a row) plus, per connection, the 8 B gathered from x, or the 64-byte line it
// sits in (the gathers are scattered: x of a 24-site sector is 21 MB).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ed/ed_kernels.h"
#ifdef NAQS_WITH_CUDA
#include "ed/cuda/ed_launch.h"
#endif

using namespace naqs::ed;
using namespace naqs_bench;

namespace {

struct Problem {
  int n_sites = 0, lo_bits = 0;
  std::vector<uint64_t> basis;
  std::vector<int64_t> edges;  // [E, 2]
  std::vector<double> zz, exch;
  std::vector<int32_t> lo_rank;
  std::vector<int64_t> hi_offset;
  std::vector<double> x;
  int64_t connections = 0;  // antiparallel (row, edge) pairs: the gathers of one matvec
};

Problem make_problem(int lx, int ly) {
  Problem p;
  p.n_sites = lx * ly;
  const int n = p.n_sites;
  for (int y = 0; y < ly; ++y)
    for (int x = 0; x < lx; ++x) {
      const int i = y * lx + x;
      if (lx > 1 && (lx > 2 || x == 0)) p.edges.insert(p.edges.end(), {i, y * lx + (x + 1) % lx});
      if (ly > 1 && (ly > 2 || y == 0)) p.edges.insert(p.edges.end(), {i, ((y + 1) % ly) * lx + x});
    }
  const int64_t n_edges = int64_t(p.edges.size() / 2);
  p.zz.assign(n_edges, 0.25);   // J S_i^z S_j^z with s = +-1
  p.exch.assign(n_edges, 0.5);  // J/2 (S^+ S^- + h.c.)
  const int n_up = n / 2;
  p.basis.resize(binomial(n, n_up));
  sector_basis_cpu(n, n_up, p.basis.data());
  p.lo_bits = std::min({14, (n + 1) / 2, n - 1});
  p.lo_rank.resize(size_t(1) << p.lo_bits);
  p.hi_offset.resize(size_t(1) << (n - p.lo_bits));
  sector_rank_tables_cpu(n, n_up, p.lo_bits, p.lo_rank.data(), p.hi_offset.data());
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  p.x.resize(p.basis.size());
  for (auto& v : p.x) v = u(rng);
  for (uint64_t s : p.basis)
    for (int64_t e = 0; e < n_edges; ++e) p.connections += ((s >> p.edges[2 * e]) ^ (s >> p.edges[2 * e + 1])) & 1;
  return p;
}

// The baseline: the kernel's sums in the kernel's order, ranks by binary search.
void matvec_binary_search(const Problem& p, double* y) {
  const int64_t dim = int64_t(p.basis.size()), n_edges = int64_t(p.zz.size());
  at::parallel_for(0, dim, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint64_t s = p.basis[r];
      double diag = 0.0, off = 0.0;
      for (int64_t e = 0; e < n_edges; ++e) {
        const int i = int(p.edges[2 * e]), j = int(p.edges[2 * e + 1]);
        diag += (((s >> i) ^ (s >> j)) & 1) ? -p.zz[e] : p.zz[e];
      }
      for (int64_t e = 0; e < n_edges; ++e) {
        const int i = int(p.edges[2 * e]), j = int(p.edges[2 * e + 1]);
        if ((((s >> i) ^ (s >> j)) & 1) == 0) continue;
        const uint64_t t = s ^ ((uint64_t(1) << i) | (uint64_t(1) << j));
        off += p.exch[e] * p.x[std::lower_bound(p.basis.begin(), p.basis.end(), t) - p.basis.begin()];
      }
      y[r] = diag * p.x[r] + off;
    }
  });
}

double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return den > 0 ? num / den : num;
}

// floors < 0: none on that line (the CPU baseline of a CUDA run)
void report(const char* dev, const char* what, const Problem& p, double sec, double floor_sec, double line_floor_sec,
            double diff) {
  std::printf("%-4s N=%-2d dim=%-10zu %-26s %10.3f ms %10.3g rows/s", dev, p.n_sites, p.basis.size(), what,
              sec * 1e3, double(p.basis.size()) / sec);
  if (floor_sec >= 0) std::printf("  floor %8.3f ms (%5.1f%%)", floor_sec * 1e3, 100.0 * floor_sec / sec);
  if (line_floor_sec >= 0)
    std::printf("  line floor %8.3f ms (%5.1f%%)", line_floor_sec * 1e3, 100.0 * line_floor_sec / sec);
  std::printf("  max rel diff %.1e\n", diff);
}

// Bytes a matvec must move at least: basis, x and y once, and gather_bytes per connection
// (8: the x entry itself; 64: its cache line).
double streamed_bytes(const Problem& p, double gather_bytes) {
  return 24.0 * double(p.basis.size()) + gather_bytes * double(p.connections);
}

}  // namespace

int main(int argc, char** argv) {
  const int lx = argc > 1 ? std::atoi(argv[1]) : 6, ly = argc > 2 ? std::atoi(argv[2]) : 4;
  const std::string dev = argc > 3 ? argv[3] : "cpu";
  const int reps = argc > 4 ? std::max(1, std::atoi(argv[4])) : 5;
  if (lx < 1 || ly < 1 || lx * ly < 2 || lx * ly > 36 || (dev != "cpu" && dev != "cuda")) {
    std::fprintf(stderr, "usage: naqs_bench_ed [lx ly [cpu|cuda [repeats]]] with 2 <= lx ly <= 36\n");
    return 2;
  }
  const Problem p = make_problem(lx, ly);
  const size_t dim = p.basis.size();
  std::printf("Heisenberg J1, %dx%d torus, %zu edges, sector %d up: dim %zu, %lld connections, %d threads\n", lx,
              ly, p.zz.size(), p.n_sites / 2, dim, (long long)p.connections, at::get_num_threads());
  std::vector<double> y_ref(dim), y(dim);
  const double t_base = time_host([&] { matvec_binary_search(p, y_ref.data()); }, reps);
  if (dev == "cpu") {
    // copy bandwidth: 256 MB each way, read + written bytes counted
    const size_t n_copy = size_t(32) << 20;
    std::vector<double> a(n_copy, 1.0), b(n_copy, 0.0);
    const double t_copy = time_host(
        [&] {
          at::parallel_for(0, int64_t(n_copy), 1 << 20, [&](int64_t begin, int64_t end) {
            std::memcpy(b.data() + begin, a.data() + begin, size_t(end - begin) * sizeof(double));
          });
        },
        reps);
    const double bw = 2.0 * n_copy * sizeof(double) / t_copy;
    std::printf("cpu  copy bandwidth %.1f GB/s\n", bw / 1e9);
    const double floor_sec = streamed_bytes(p, 8) / bw, line_sec = streamed_bytes(p, 64) / bw;
    report("cpu", "baseline (binary search)", p, t_base, floor_sec, line_sec, 0.0);
    const double t_kernel = time_host(
        [&] {
          heisenberg_sector_matvec_cpu(p.basis.data(), p.x.data(), y.data(), int64_t(dim), p.edges.data(),
                                       p.zz.data(), p.exch.data(), int64_t(p.zz.size()), p.lo_rank.data(),
                                       p.hi_offset.data(), p.lo_bits);
        },
        reps);
    report("cpu", "kernel (split tables)", p, t_kernel, floor_sec, line_sec, max_rel_diff(y, y_ref));
    return max_rel_diff(y, y_ref) < 1e-12 ? 0 : 1;
  }
#ifdef NAQS_WITH_CUDA
  uint64_t* d_basis = to_device(p.basis);
  double* d_x = to_device(p.x);
  int32_t* d_lo = to_device(p.lo_rank);
  int64_t* d_hi = to_device(p.hi_offset);
  double *d_y = nullptr, *d_copy = nullptr;
  check(cudaMalloc(&d_y, dim * sizeof(double)), "cudaMalloc");
  const size_t n_copy = size_t(64) << 20;  // 512 MB each way
  check(cudaMalloc(&d_copy, 2 * n_copy * sizeof(double)), "cudaMalloc");
  const double t_copy = time_device(
      [&] { return cudaMemcpyAsync(d_copy + n_copy, d_copy, n_copy * sizeof(double), cudaMemcpyDeviceToDevice); },
      reps);
  const double bw = 2.0 * n_copy * sizeof(double) / t_copy;
  std::printf("cuda copy bandwidth %.1f GB/s\n", bw / 1e9);
  const double floor_sec = streamed_bytes(p, 8) / bw, line_sec = streamed_bytes(p, 64) / bw;
  report("cpu", "baseline (binary search)", p, t_base, -1.0, -1.0, 0.0);
  bool ok = true;
  for (const auto variant : {cuda::RankTables::kSharedLow, cuda::RankTables::kGlobal}) {
    const double t = time_device(
        [&] {
          return cuda::heisenberg_sector_matvec(d_basis, d_x, d_y, int64_t(dim), p.edges.data(), p.zz.data(),
                                                p.exch.data(), int(p.zz.size()), d_lo, d_hi, p.lo_bits, variant, 0);
        },
        reps);
    check(cudaMemcpy(y.data(), d_y, dim * sizeof(double), cudaMemcpyDeviceToHost), "cudaMemcpy");
    const double diff = max_rel_diff(y, y_ref);
    ok = ok && diff < 1e-12;
    report("cuda", variant == cuda::RankTables::kSharedLow ? "kernel (low table in smem)" : "kernel (tables in L2)",
           p, t, floor_sec, line_sec, diff);
  }
  for (void* q : {(void*)d_basis, (void*)d_x, (void*)d_lo, (void*)d_hi, (void*)d_y, (void*)d_copy}) cudaFree(q);
  return ok ? 0 : 1;
#else
  std::fprintf(stderr, "built without CUDA\n");
  return 1;
#endif
}
