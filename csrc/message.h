// Pieces of hesskit's error messages, formatted without std::ostream number output.
//
// Why: built against torch 2.11 + CUDA 13 (gcc 13.3) on the GPU machine, every
// TORCH_CHECK of ours whose message streamed an integer or an IntArrayRef crashed
// the process with SIGSEGV when it fired, while messages made only of strings and
// dtype names raised normally (tests/native, 2026-11-23). Streaming a number goes
// through the std::num_put facet of the stream's locale, and the crash is consistent
// with the extension and libtorch disagreeing about that facet. std::to_string and
// strings built by c10 itself (Device::str, toString) avoid the facet altogether, so
// every number, shape, device and dtype in our messages goes through these helpers.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace hesskit {
namespace msg {

inline std::string num(int64_t value) { return std::to_string(value); }

// "[4, 2, 1]", as at::IntArrayRef prints.
inline std::string shape(at::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(sizes[i]);
  }
  return out + "]";
}

inline std::string device(const c10::Device& device) { return device.str(); }

inline std::string device(c10::DeviceType type) { return c10::DeviceTypeName(type, /*lower_case=*/true); }

inline const char* dtype(at::ScalarType type) { return c10::toString(type); }

}  // namespace msg
}  // namespace hesskit
