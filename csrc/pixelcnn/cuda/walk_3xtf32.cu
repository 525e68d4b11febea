// The walker's float 3xTF32 instances (NAQS_PIXELCNN_MATH=3xtf32) (walk_instances.h).
#include "walk_kernel.cuh"

namespace naqs {
namespace pixelcnn {
namespace cuda {

template WalkKernel<float> walk_kernel_of<float, 512, 32, k3xTF32>();
template WalkKernel<float> walk_kernel_of<float, 512, 0, k3xTF32>();

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
