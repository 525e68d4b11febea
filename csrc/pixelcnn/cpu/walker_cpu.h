// CPU row-cached walker (see ../walker.h): parallel over jobs with at::parallel_for.
#pragma once

#include "../walker.h"

namespace naqs {
namespace pixelcnn {
namespace cpu {

// Runs every job of `args` (mode kSample / kForward / kConnected). Buffers as in
// WalkArgs; all host pointers.
template <typename T>
void walk(const Dims& dims, const Weights<T>& weights, const WalkArgs<T>& args);

}  // namespace cpu
}  // namespace pixelcnn
}  // namespace naqs
