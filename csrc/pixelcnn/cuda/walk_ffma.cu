// The walker's float FFMA instances of 32-channel networks (walk_instances.h).
#include "walk_kernel.cuh"

namespace naqs {
namespace pixelcnn {
namespace cuda {

template WalkKernel<float> walk_kernel_of<float, 512, 32, kFFMA>();
template WalkKernel<float> walk_kernel_of<float, 256, 32, kFFMA>();
template WalkKernel<float> walk_kernel_of<float, 512, 32, kFFMA, true>();

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
