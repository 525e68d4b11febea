// The naqs._C module: build information plus every op registered through
// NAQS_REGISTER_OPS in the per-op front ends.
#include "registry.h"

#ifndef NAQS_TORCH_VERSION
#define NAQS_TORCH_VERSION "unknown"
#endif
#ifndef NAQS_CUDA_ARCH_STR
#define NAQS_CUDA_ARCH_STR ""
#endif

namespace naqs {

std::vector<std::pair<const char*, Registrar>>& registrars() {
  static std::vector<std::pair<const char*, Registrar>> list;
  return list;
}

}  // namespace naqs

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "naqs compiled kernels (CPU always, CUDA where built)";
  m.def("build_info", []() {
    pybind11::dict info;
#ifdef NAQS_WITH_CUDA
    info["cuda"] = true;
    info["cuda_arch"] = std::string(NAQS_CUDA_ARCH_STR);
#ifdef NAQS_WGMMA
    info["cuda_wgmma"] = true;  // built for sm_90a: the TF32 row walks' wgmma passes
#else
    info["cuda_wgmma"] = false;
#endif
#else
    info["cuda_wgmma"] = false;
    info["cuda"] = false;
    info["cuda_arch"] = std::string("");
#endif
    info["torch"] = std::string(NAQS_TORCH_VERSION);
    pybind11::list ops;
    for (auto& entry : naqs::registrars()) ops.append(std::string(entry.first));
    info["op_groups"] = ops;
    return info;
  }, "What this build of naqs._C contains: CUDA or not, CUDA arch, wgmma (sm_90a), torch version, op groups.");
  for (auto& entry : naqs::registrars()) entry.second(m);
}
