#pragma once
// Shared helpers for the C++ tests: where the generated archives are, and reading the
// reference tensors that tests/fixtures/clip_factory.py computed with OpenCLIP.

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>
#include <map>
#include <string>

namespace lake::test {

inline std::string fixture(const std::string& name) { return std::string(LAKE_FIXTURES_DIR) + "/" + name; }

/// A plain {str: Tensor} dict saved with torch.save (read with LibTorch's own unpickler,
/// independently of LAKE's reader).
inline std::map<std::string, at::Tensor> load_tensors(const std::string& name) {
  std::ifstream in(fixture(name), std::ios::binary);
  REQUIRE(in.good());
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::map<std::string, at::Tensor> out;
  for (const auto& kv : torch::jit::pickle_load(bytes).toGenericDict())
    out[kv.key().toStringRef()] = kv.value().toTensor();
  return out;
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace lake::test
