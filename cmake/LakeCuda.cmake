# CUDA kernels of lake::ops (src/ops/cuda/*.cu). Included after add_library(lake ...).
#
# LAKE_WITH_CUDA = AUTO (default): compile them when nvcc and a CUDA LibTorch are found;
# ON: require both; OFF: never (the ops then only accept CPU tensors).
#
# GPU architectures: CMAKE_CUDA_ARCHITECTURES when you set it (-D... or the CUDAARCHS
# environment variable), otherwise "80-real;90": machine code for A100 (sm_80) and H100
# (sm_90), plus sm_90 PTX that the driver compiles for newer GPUs. TORCH_CUDA_ARCH_LIST is not used for these files: torch's CMake config
# turns it (or its guess when no GPU is visible) into -gencode flags in CMAKE_CUDA_FLAGS,
# which are removed here in favour of the target's CUDA_ARCHITECTURES.
#
# Linking: lake links torch PUBLIC, and torch's imported target already brings
# torch_cuda, c10_cuda and the shared CUDA runtime (torch::cudart -> CUDA::cudart) to
# every consumer of lake, including the installed package (lakeConfig.cmake finds Torch,
# whose config finds the CUDA toolkit). The CUDA runtime of our objects is the shared one,
# like torch's, so that a process has a single CUDA runtime.
set(LAKE_CUDA_ENABLED OFF)
if(LAKE_WITH_CUDA STREQUAL "AUTO" OR LAKE_WITH_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER AND TARGET torch_cuda OR CMAKE_CUDA_COMPILER AND TORCH_CUDA_LIBRARIES)
    set(LAKE_CUDA_ENABLED ON)
  elseif(LAKE_WITH_CUDA AND NOT LAKE_WITH_CUDA STREQUAL "AUTO")
    message(FATAL_ERROR "LAKE_WITH_CUDA=ON but nvcc or a CUDA-enabled LibTorch was not found")
  endif()
endif()

if(LAKE_CUDA_ENABLED)
  # Torch's config has usually enabled CUDA already; this is a no-op then.
  enable_language(CUDA)

  # Architectures. CMake fills the CMAKE_CUDA_ARCHITECTURES cache entry with the compiler's
  # default (help string "CUDA architectures") when the user gave none; torch then sets the
  # normal variable to OFF. A value from the command line carries another help string.
  get_property(_lake_arch_help CACHE CMAKE_CUDA_ARCHITECTURES PROPERTY HELPSTRING)
  if(DEFINED CACHE{CMAKE_CUDA_ARCHITECTURES} AND
     (NOT "$ENV{CUDAARCHS}" STREQUAL "" OR NOT _lake_arch_help STREQUAL "CUDA architectures"))
    set(LAKE_CUDA_ARCHITECTURES "$CACHE{CMAKE_CUDA_ARCHITECTURES}")
  else()
    set(LAKE_CUDA_ARCHITECTURES "80-real;90")
  endif()
  # Drop torch's -gencode flags (they would add ~10 architectures, some unsupported by nvcc 13).
  string(REGEX REPLACE "-gencode[ =]+arch=[^ ]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")
  string(REGEX REPLACE "  +" " " CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")

  set(LAKE_CUDA_SOURCES
    src/ops/cuda/channel_moments_kernel.cu
    src/ops/cuda/top_k_kernel.cu
    src/ops/cuda/gather_normalize_kernel.cu
    src/ops/cuda/nearest_neighbor_kernel.cu
    src/ops/cuda/upsample_blur_kernel.cu
    src/ops/cuda/device_info.cu
  )
  list(TRANSFORM LAKE_CUDA_SOURCES PREPEND "${PROJECT_SOURCE_DIR}/")
  target_sources(lake PRIVATE ${LAKE_CUDA_SOURCES})
  # The CUDA runtime: torch's targets link the shared libcudart (torch::cudart) into everything
  # that links lake, so CMake must not add its default, the static cudart_static, to the
  # executables and modules of this project that link lake (a second runtime in the process).
  # The installed package does the same for its consumers (cmake/lakeConfig.cmake.in).
  set(CMAKE_CUDA_RUNTIME_LIBRARY None)
  # One translation unit per .cu file, whatever CMake's unity support for CUDA (3.31+).
  set_source_files_properties(${LAKE_CUDA_SOURCES} PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
  target_compile_definitions(lake PRIVATE LAKE_HAS_CUDA=1)
  set_target_properties(lake PROPERTIES
    CUDA_ARCHITECTURES "${LAKE_CUDA_ARCHITECTURES}"
    CUDA_STANDARD 17
    CUDA_STANDARD_REQUIRED ON
    CUDA_EXTENSIONS OFF
    CUDA_RUNTIME_LIBRARY None)
  target_compile_options(lake PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr>
    $<$<COMPILE_LANG_AND_ID:CUDA,NVIDIA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter>)
  message(STATUS "LAKE: CUDA kernels ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${LAKE_CUDA_ARCHITECTURES})")
else()
  message(STATUS "LAKE: CUDA kernels OFF")
endif()
