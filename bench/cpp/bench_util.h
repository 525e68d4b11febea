// Timing and device helpers shared by the C++ microbenchmarks (bench_walker.cpp,
// bench_ed.cpp): medians of repeated runs on the host clock or on CUDA events.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include <vector>

#ifdef NAQS_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace naqs_bench {

// Median seconds of reps calls of f() after one warm-up call.
template <typename F>
double time_host(F&& f, int reps) {
  f();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

#ifdef NAQS_WITH_CUDA
// Exits with the CUDA error's text (a microbenchmark has nothing to recover).
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// A device copy of a host vector (at least one element allocated).
template <typename V>
auto to_device(const V& v) {
  using E = typename std::decay_t<V>::value_type;
  E* p = nullptr;
  check(cudaMalloc(&p, std::max<size_t>(1, v.size()) * sizeof(E)), "cudaMalloc");
  check(cudaMemcpy(p, v.data(), v.size() * sizeof(E), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

// Median seconds of reps launches by f() (each returning a cudaError_t) on the default
// stream, timed by events, after one warm-up launch.
template <typename F>
double time_device(F&& f, int reps) {
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "event");
  check(cudaEventCreate(&e1), "event");
  check(f(), "warm-up");
  check(cudaDeviceSynchronize(), "sync");
  std::vector<float> t;
  for (int r = 0; r < reps; ++r) {
    cudaEventRecord(e0);
    check(f(), "launch");
    cudaEventRecord(e1);
    check(cudaEventSynchronize(e1), "sync");
    float ms = 0.f;
    cudaEventElapsedTime(&ms, e0, e1);
    t.push_back(ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2] / 1e3;
}
#endif

}  // namespace naqs_bench
