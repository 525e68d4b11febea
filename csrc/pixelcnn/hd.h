// NAQS_HD: a small function compiled for the host and, under nvcc, for the device too
// (shared by the CPU and CUDA walkers).
#pragma once

#ifdef __CUDACC__
#define NAQS_HD __host__ __device__ __forceinline__
#else
#define NAQS_HD inline
#endif
