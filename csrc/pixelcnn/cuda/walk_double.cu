// The walker's double instances (FFMA) (walk_instances.h).
#include "walk_kernel.cuh"

namespace naqs {
namespace pixelcnn {
namespace cuda {

template WalkKernel<double> walk_kernel_of<double, 512, 32, kFFMA>();
template WalkKernel<double> walk_kernel_of<double, 256, 32, kFFMA>();
template WalkKernel<double> walk_kernel_of<double, 512, 0, kFFMA>();
template WalkKernel<double> walk_kernel_of<double, 256, 0, kFFMA>();

}  // namespace cuda
}  // namespace pixelcnn
}  // namespace naqs
