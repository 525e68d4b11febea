// The walker's float FFMA instances for any channel count (walk_instances.h).
#include "walk_kernel.cuh"

namespace naqs {
namespace pixelcnn {
namespace cuda {

template WalkKernel<float> walk_kernel_of<float, 512, 0, kFFMA>();
template WalkKernel<float> walk_kernel_of<float, 256, 0, kFFMA>();

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
