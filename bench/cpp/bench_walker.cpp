// Microbenchmark of the row-cached walker kernels, without Python.
//
//   naqs_bench_walker [lx ly blocks channels batch [cpu|cuda]]
//
// Random weights (scaled like the PixelCNN's initialization), random configurations.
// Times the three modes: kSample (exact sampling), kForward with storage (the first
// phase of the local energy) and kConnected for all N single flips of every sample
// (Ising), and prints ms, samples/s and GFLOP/s (analytic FLOP count; the connected
// walks' FLOPs are those of the light cones they compute, pixelcnn/cone.h).
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "pixelcnn/cone.h"
#include "pixelcnn/cpu/walker_cpu.h"
#ifdef NAQS_WITH_CUDA
#include "pixelcnn/cuda/walker_cuda.h"
#endif

using namespace naqs::pixelcnn;
using namespace naqs_bench;

namespace {

double forward_flops(const Dims& d) {
  double per_site = 0;
  for (int l = 0; l < d.blocks; ++l) {
    const int cv = l == 0 ? 1 : d.channels, ch = (l == 0 ? 1 : d.channels) + d.channels;
    per_site += 2.0 * 9 * d.channels * (cv + ch);
  }
  return d.n_sites * (per_site + 8.0 * d.channels);
}

// FLOPs of the connected walk of one sample with site k flipped: the positions of its
// light cone (cone.h) and the outputs of sites k..N-1.
double cone_flops(const Dims& d, int k) {
  Cone cone = Cone::of_flips(d.lx, d.ly);
  cone.add(k);
  double total = 8.0 * d.channels * (d.n_sites - k);
  for (int l = 0; l < d.blocks; ++l) {
    const int cv = l == 0 ? 1 : d.channels, ch = (l == 0 ? 1 : d.channels) + d.channels;
    for (int y = 0; y < d.ly; ++y) {
      int lo, hi;
      if (cone.h_cols(l, y, lo, hi)) total += 2.0 * 9 * d.channels * ch * (hi - lo + 1);
      if (cone.v_cols(l, y, lo, hi)) total += 2.0 * 9 * d.channels * cv * (hi - lo + 1);
    }
  }
  return total;
}

struct HostNet {
  std::vector<float> wv0, wv, bv, wh0, wh, bh, wo, bo;
};

HostNet random_net(const Dims& d, std::mt19937& rng) {
  const int C = d.channels, C4 = d.c4, L = d.blocks;
  auto fill = [&](std::vector<float>& v, size_t n, float scale, int cols) {
    std::uniform_real_distribution<float> u(-scale, scale);
    v.assign(n, 0.f);
    for (size_t i = 0; i < n; ++i)
      if (cols == 0 || int(i % C4) < cols) v[i] = u(rng);
  };
  HostNet n;
  fill(n.wv0, 9 * C4, 1.0f / 3, C);
  fill(n.wv, size_t(std::max(L - 1, 0)) * 9 * C * C4, 1.0f / std::sqrt(9.f * C), C);
  fill(n.bv, size_t(L) * C, 0.1f, 0);
  fill(n.wh0, 9 * size_t(1 + C) * C4, 1.0f / std::sqrt(9.f * (1 + C)), C);
  for (int c = 0; c < C4; ++c) n.wh0[(8 * (1 + C)) * C4 + c] = 0.f;  // causal tap
  fill(n.wh, size_t(std::max(L - 1, 0)) * 9 * 2 * C * C4, 1.0f / std::sqrt(18.f * C), C);
  fill(n.bh, size_t(L) * C, 0.1f, 0);
  fill(n.wo, size_t(C) * 4, 0.01f, 0);
  fill(n.bo, 4, 0.0f, 0);
  return n;
}

void report(const char* dev, const char* what, const Dims& d, int64_t samples, double sec, double flops) {
  std::printf("%-4s %2dx%-2d L=%-2d C=%-3d B=%-5lld %-22s %10.3f ms %12.0f samples/s %8.1f GFLOP/s\n", dev, d.lx,
              d.ly, d.blocks, d.channels, (long long)samples, what, sec * 1e3, samples / sec, flops / sec / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const int lx = argc > 1 ? std::atoi(argv[1]) : 6, ly = argc > 2 ? std::atoi(argv[2]) : 6;
  const int blocks = argc > 3 ? std::atoi(argv[3]) : 10, C = argc > 4 ? std::atoi(argv[4]) : 32;
  const int64_t batch = argc > 5 ? std::atoll(argv[5]) : 256;
  const std::string dev = argc > 6 ? argv[6] : "cpu";
  const int N = lx * ly;
  Dims d{lx, ly, N, blocks, C, (C + 3) / 4 * 4, -1};
  std::mt19937 rng(1234);
  HostNet net = random_net(d, rng);
  std::vector<double> uniforms(size_t(batch) * N);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  for (auto& v : uniforms) v = u01(rng);
  // Ising connections: (b, m = k, k), sorted by k
  std::vector<int64_t> jobs, flips(size_t(batch) * N * 2, -1);
  for (int k = 0; k < N; ++k)
    for (int64_t b = 0; b < batch; ++b) jobs.insert(jobs.end(), {b, int64_t(k), int64_t(k)});
  for (int64_t b = 0; b < batch; ++b)
    for (int k = 0; k < N; ++k) flips[(b * N + k) * 2] = k;
  double conn_flops = forward_flops(d);  // own forward + the flips' light cones
  for (int k = 0; k < N; ++k) conn_flops += cone_flops(d, k);
  const size_t act = size_t(batch) * blocks * N * C;

  if (dev == "cpu") {
    Weights<float> w{net.wv0.data(), net.wv.data(), net.bv.data(), net.wh0.data(),
                     net.wh.data(),  net.bh.data(), net.wo.data(), net.bo.data()};
    std::vector<int8_t> spins(size_t(batch) * N);
    std::vector<double> lp(size_t(batch) * 2), prefix(size_t(batch) * (N + 1) * 2), out(size_t(batch) * N * 2);
    std::vector<float> sh(act), sv(act);
    WalkArgs<float> a{};
    a.mode = kSample;
    a.n_jobs = batch;
    a.uniforms = uniforms.data();
    a.spins_out = spins.data();
    a.log_psi = lp.data();
    report("cpu", "sample", d, batch, time_host([&] { cpu::walk<float>(d, w, a); }, 3), forward_flops(d) * batch);
    WalkArgs<float> f{};
    f.mode = kForward;
    f.n_jobs = batch;
    f.spins = spins.data();
    f.store_h = sh.data();
    f.store_v = sv.data();
    f.prefix = prefix.data();
    report("cpu", "forward+store", d, batch, time_host([&] { cpu::walk<float>(d, w, f); }, 3),
           forward_flops(d) * batch);
    WalkArgs<float> c = f;
    c.mode = kConnected;
    c.n_jobs = int64_t(jobs.size() / 3);
    c.jobs = jobs.data();
    c.flips = flips.data();
    c.n_conn = N;
    c.out = out.data();
    report("cpu", "connected (Ising)", d, batch, time_host([&] { cpu::walk<float>(d, w, c); }, 1),
           conn_flops * batch);
    return 0;
  }
#ifdef NAQS_WITH_CUDA
  auto up = [](const auto& v) { return to_device(v); };
  Weights<float> w{up(net.wv0), up(net.wv), up(net.bv), up(net.wh0), up(net.wh), up(net.bh), up(net.wo), up(net.bo)};
  double* d_u = up(uniforms);
  int64_t* d_jobs = up(jobs);
  int64_t* d_flips = up(flips);
  int8_t* d_spins;
  double *d_lp, *d_prefix, *d_out;
  float *d_sh, *d_sv;
  check(cudaMalloc(&d_spins, size_t(batch) * N), "malloc");
  check(cudaMalloc(&d_lp, size_t(batch) * 16), "malloc");
  check(cudaMalloc(&d_prefix, size_t(batch) * (N + 1) * 16), "malloc");
  check(cudaMalloc(&d_out, size_t(batch) * N * 16), "malloc");
  check(cudaMalloc(&d_sh, act * 4), "malloc");
  check(cudaMalloc(&d_sv, act * 4), "malloc");
  auto time_dev = [&](WalkArgs<float> a, int reps) {
    cuda::Plan p;
    check(cuda::plan<float>(d, a.n_jobs, &p, a.mode), "plan");
    void* scratch;
    check(cudaMalloc(&scratch, p.scratch_bytes), "scratch");
    const double sec = time_device([&] { return cuda::walk<float>(d, w, a, p, scratch, 0); }, reps);
    cudaFree(scratch);
    std::printf("     plan: tile %d, k-split %d, grid %d, smem %zu B\n", p.tile, p.k_split, p.grid, p.smem);
    return sec;
  };
  WalkArgs<float> a{};
  a.mode = kSample;
  a.n_jobs = batch;
  a.uniforms = d_u;
  a.spins_out = d_spins;
  a.log_psi = d_lp;
  report("cuda", "sample", d, batch, time_dev(a, 5), forward_flops(d) * batch);
  WalkArgs<float> f{};
  f.mode = kForward;
  f.n_jobs = batch;
  f.spins = d_spins;
  f.store_h = d_sh;
  f.store_v = d_sv;
  f.prefix = d_prefix;
  report("cuda", "forward+store", d, batch, time_dev(f, 5), forward_flops(d) * batch);
  WalkArgs<float> c = f;
  c.mode = kConnected;
  c.n_jobs = int64_t(jobs.size() / 3);
  c.jobs = d_jobs;
  c.flips = d_flips;
  c.n_conn = N;
  c.out = d_out;
  report("cuda", "connected (Ising)", d, batch, time_dev(c, 1), conn_flops * batch);
  return 0;
#else
  std::fprintf(stderr, "built without CUDA\n");
  return 1;
#endif
}
