// Op registration for naqs._C.
//
// Each op's front end (one .cpp per op) registers its Python bindings with
// NAQS_REGISTER_OPS(name, fn); module.cpp calls every registrar when the module is
// imported. New ops therefore add files and never edit a central list.
#pragma once

#include <torch/extension.h>

#include <utility>
#include <vector>

namespace naqs {

using Registrar = void (*)(pybind11::module_&);

std::vector<std::pair<const char*, Registrar>>& registrars();

struct RegisterOps {
  RegisterOps(const char* name, Registrar fn) { registrars().emplace_back(name, fn); }
};

}  // namespace naqs

#define NAQS_REGISTER_OPS(name, fn) static ::naqs::RegisterOps naqs_register_ops_##name(#name, fn)
