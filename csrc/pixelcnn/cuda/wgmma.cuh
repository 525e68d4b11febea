// Hopper warpgroup MMA (wgmma, sm_90a) for TF32 products with both operands in shared
// memory, no swizzle. Used by the walker's TF32 row passes (walk_kernel.cuh, pass_seg_wg) and
// by bench/cpp/bench_mma_tf32.cu, which checks the layouts below against a reference.
//
// Layouts (K-major, "interleaved" core matrices of 8 rows x 16 bytes, 128 contiguous
// bytes each): A (M x K) as [K / 4][M][4 floats] planes, B (N x K) as [K / 4][N][4].
// A descriptor then takes the leading byte offset (next 4 k) = the plane's size and the
// stride byte offset (next 8 rows) = 128. Rows of A need not start at a multiple of 8:
// a start address moved by r x 16 bytes reads rows r .. r + 63 (the walker's shifted
// window views; checked in run 108).
#pragma once

#include <cstdint>

namespace naqs {
namespace pixelcnn {
namespace cuda {

// 1 where this compilation pass can emit wgmma (the sm_90a target).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define NAQS_WGMMA_DEVICE 1
#endif

// Shared-memory matrix descriptor, no swizzle: start address, leading (K) and stride
// (M or N) byte offsets, each in 16-byte units.
__device__ __forceinline__ unsigned long long wgmma_desc(unsigned addr, unsigned lbo, unsigned sbo) {
  return (unsigned long long)((addr & 0x3ffff) >> 4) | ((unsigned long long)((lbo & 0x3ffff) >> 4) << 16) |
         ((unsigned long long)((sbo & 0x3ffff) >> 4) << 32);
}

// D (64 x 32, f32) = A B + (scale_d ? D : 0), TF32 operands (the low 13 mantissa bits of
// each operand are ignored: round them beforehand). Accumulator register 4 j + q of
// thread t of the warpgroup: row 16 (t / 32) + (t % 32) / 4 + 8 (q / 2), column
// 8 j + 2 (t % 4) + q % 2.
__device__ __forceinline__ void wgmma_m64n32k8_tf32(float (&d)[16], unsigned long long da, unsigned long long db,
                                                    int scale_d) {
#ifdef NAQS_WGMMA_DEVICE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(da), "l"(db), "r"(scale_d));
#else
  __trap();
#endif
}

// The same with the descriptors da + kA and db + kB (compile-time offsets in 16-byte
// units, added inside the instruction block: computed by the compiler ahead of time,
// a chunk's 72 descriptors took 144 registers and spilled the accumulators).
template <unsigned kA, unsigned kB>
__device__ __forceinline__ void wgmma_m64n32k8_tf32_at(float (&d)[16], unsigned long long da, unsigned long long db,
                                                       int scale_d) {
#ifdef NAQS_WGMMA_DEVICE
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 a, b;\nsetp.ne.b32 p, %18, 0;\n"
      "add.s64 a, %16, %19;\nadd.s64 b, %17, %20;\n"
      "wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, a, b, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(da), "l"(db), "r"(scale_d), "n"(kA), "n"(kB));
#else
  __trap();
#endif
}

__device__ __forceinline__ void wgmma_fence() {
#ifdef NAQS_WGMMA_DEVICE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef NAQS_WGMMA_DEVICE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kN>
__device__ __forceinline__ void wgmma_wait() {
#ifdef NAQS_WGMMA_DEVICE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kN) : "memory");
#endif
}
// Keeps the accumulators in their registers across the asynchronous MMAs.
__device__ __forceinline__ void wgmma_fence_regs(float (&d)[16]) {
#pragma unroll
  for (int i = 0; i < 16; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// Ordinary (generic-proxy) shared-memory writes of this thread, cp.async's included,
// before the MMAs (async proxy) read them; a barrier must follow for other threads'.
__device__ __forceinline__ void fence_proxy_async_shared() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
