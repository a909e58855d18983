// lake::detail::cuda_info: the CUDA runtime's view of the machine, for lake::doctor. Plain
// runtime-API queries (no kernel, no context beyond the one cudaGetDeviceProperties needs).

#include <cuda_runtime_api.h>

#include "detail/cuda_info.h"

namespace lake::detail {

CudaInfo cuda_info() {
  CudaInfo info;
  info.runtime_compiled = CUDART_VERSION;
  if (cudaRuntimeGetVersion(&info.runtime) != cudaSuccess) info.runtime = 0;
  if (cudaDriverGetVersion(&info.driver) != cudaSuccess) info.driver = 0;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    info.error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    (void)cudaGetLastError();  // clear it: torch's own lazy initialisation asks again
    return info;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      (void)cudaGetLastError();
      info.devices.push_back({"(cudaGetDeviceProperties failed)", 0, 0, 0, 0});
      continue;
    }
    info.devices.push_back({p.name, static_cast<int64_t>(p.totalGlobalMem), p.major, p.minor, p.multiProcessorCount});
  }
  return info;
}

}  // namespace lake::detail
