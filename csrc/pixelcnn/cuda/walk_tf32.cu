// The walker's float TF32 instances (NAQS_PIXELCNN_MATH=tf32) other than the pipelined row passes (walk_instances.h).
#include "walk_kernel.cuh"

namespace naqs {
namespace pixelcnn {
namespace cuda {

template WalkKernel<float> walk_kernel_of<float, 512, 32, kTF32>();
template WalkKernel<float> walk_kernel_of<float, 512, 0, kTF32>();
template WalkKernel<float> walk_kernel_of<float, 256, 32, kTF32>();

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
