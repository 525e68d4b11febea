// Argument checks shared by the op front ends. Every failure raises a Python
// exception (TORCH_CHECK -> RuntimeError/ValueError) whose message names the argument
// and shows what was received, never a crash.
#pragma once

#include <torch/extension.h>

#define NAQS_CHECK(cond, ...) TORCH_CHECK(cond, ::naqs::msg(__VA_ARGS__))
#define NAQS_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, ::naqs::msg(__VA_ARGS__))
#define NAQS_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, ::naqs::msg(__VA_ARGS__))

#include <string>
#include <type_traits>

namespace naqs {

// Error messages are assembled here with std::to_string instead of being streamed by
// TORCH_CHECK: on the GPU machine (extension built by a newer g++ than torch), streaming
// an integer into c10::str's ostringstream crashed the process; strings stream safely.
namespace detail {
inline void append(std::string& out, const std::string& v) { out += v; }
inline void append(std::string& out, const char* v) { out += v; }
inline void append(std::string& out, char v) { out += v; }
inline void append(std::string& out, bool v) { out += v ? "true" : "false"; }
inline void append(std::string& out, c10::ScalarType v) { out += c10::toString(v); }
inline void append(std::string& out, const c10::Device& v) { out += v.str(); }
inline void append(std::string& out, c10::IntArrayRef v) {
  out += '[';
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(v[i]);
  }
  out += ']';
}
template <typename T>
inline void append(std::string& out, const T& v) {
  static_assert(std::is_arithmetic_v<T>, "naqs::msg takes strings, numbers, dtypes, devices and shapes");
  out += std::to_string(v);
}
}  // namespace detail

// Concatenate the parts of an error message into one string.
template <typename... Args>
std::string msg(const Args&... args) {
  std::string out;
  (detail::append(out, args), ...);
  return out;
}

inline std::string shape_str(const at::Tensor& t) { return msg(t.sizes()); }

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name) {
  NAQS_CHECK_VALUE(t.dim() == dim, name, " must have ", dim, " dimensions, got shape ", shape_str(t));
}

inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  NAQS_CHECK_TYPE(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
}

inline void check_contiguous(const at::Tensor& t, const char* name) {
  NAQS_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous (call .contiguous()), got strides ",
                    t.strides());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* name_a, const char* name_b) {
  NAQS_CHECK_VALUE(a.device() == b.device(), name_a, " is on ", a.device(), " but ", name_b, " is on ",
                    b.device());
}

inline void check_size(const at::Tensor& t, int64_t dim, int64_t size, const char* name) {
  NAQS_CHECK_VALUE(t.size(dim) == size, name, " must have size ", size, " in dimension ", dim,
                    ", got shape ", shape_str(t));
}

}  // namespace naqs
