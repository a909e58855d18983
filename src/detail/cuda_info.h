#pragma once
// What the CUDA runtime says about this machine (internal; for lake::doctor). Only builds
// with the CUDA kernels define cuda_info() (src/ops/cuda/device_info.cu).

#include <cstdint>
#include <string>
#include <vector>

namespace lake::detail {

struct CudaDeviceInfo {
  std::string name;
  int64_t total_memory = 0;  ///< bytes
  int major = 0, minor = 0;  ///< compute capability
  int multiprocessors = 0;
};

struct CudaInfo {
  int runtime_compiled = 0;  ///< CUDART_VERSION LAKE's kernels were compiled against (e.g. 13000)
  int runtime = 0;           ///< cudaRuntimeGetVersion
  int driver = 0;            ///< cudaDriverGetVersion: the newest CUDA the driver supports; 0: no driver
  std::string error;         ///< why cudaGetDeviceCount found no device (empty when it succeeded)
  std::vector<CudaDeviceInfo> devices;
};

#ifdef LAKE_HAS_CUDA
CudaInfo cuda_info();
#endif

/// "12.4" from CUDA's integer versions (12040); "none" for 0.
std::string cuda_version_string(int version);

/// Whether code built for `architectures` (CMake's CUDA_ARCHITECTURES syntax: "80-real;90",
/// "native", "all", "75-virtual", "90a") runs on a device of compute capability major.minor:
/// machine code for sm_XY runs on X.Y' with Y' >= Y; PTX for compute_XY on every device >= X.Y.
/// Returns "yes", "no" or "unknown" (native / all / all-major).
std::string architectures_cover(const std::string& architectures, int major, int minor);

}  // namespace lake::detail
