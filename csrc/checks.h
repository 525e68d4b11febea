// Argument checks shared by the op front ends. Every failure raises a Python
// exception (TORCH_CHECK -> RuntimeError/ValueError) whose message names the argument
// and shows what was received, never a crash.
#pragma once

#include <torch/extension.h>

#include <sstream>
#include <string>

namespace naqs {

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must have ", dim, " dimensions, got shape ", shape_str(t));
}

inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
}

inline void check_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous (call .contiguous()), got strides ",
                    t.strides());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* name_a, const char* name_b) {
  TORCH_CHECK_VALUE(a.device() == b.device(), name_a, " is on ", a.device(), " but ", name_b, " is on ",
                    b.device());
}

inline void check_size(const at::Tensor& t, int64_t dim, int64_t size, const char* name) {
  TORCH_CHECK_VALUE(t.size(dim) == size, name, " must have size ", size, " in dimension ", dim,
                    ", got shape ", shape_str(t));
}

}  // namespace naqs
