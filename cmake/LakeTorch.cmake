# Locate LibTorch from the PyTorch wheel installed for Python3_EXECUTABLE, unless
# Torch_DIR / CMAKE_PREFIX_PATH already point at one.
if(NOT Torch_DIR)
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c "import torch, os; print(torch.utils.cmake_prefix_path); print(os.path.dirname(torch.__file__)); print(torch.__version__)"
    OUTPUT_VARIABLE _lake_torch_out OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _lake_torch_rc)
  if(NOT _lake_torch_rc EQUAL 0)
    message(FATAL_ERROR "LAKE needs PyTorch (the pip wheel provides LibTorch), but "
      "'${Python3_EXECUTABLE} -c \"import torch\"' failed. Run 'make venv' or pass -DTorch_DIR=...")
  endif()
  string(REPLACE "\n" ";" _lake_torch_out "${_lake_torch_out}")
  list(GET _lake_torch_out 0 _lake_torch_prefix)
  list(GET _lake_torch_out 2 LAKE_TORCH_VERSION)
  list(APPEND CMAKE_PREFIX_PATH "${_lake_torch_prefix}")
endif()

# Torch's own CMake config probes for CUDA when the wheel is a CUDA build; we only
# need its libraries and headers here, LakeCuda.cmake handles our CUDA code.
find_package(Torch REQUIRED)
if(LAKE_TORCH_VERSION)
  message(STATUS "LAKE: LibTorch ${LAKE_TORCH_VERSION} from ${_lake_torch_prefix}")
  if(LAKE_TORCH_VERSION VERSION_LESS 2.11 OR NOT LAKE_TORCH_VERSION VERSION_LESS 2.12)
    message(WARNING "LAKE is tested with torch 2.11.x; found ${LAKE_TORCH_VERSION}")
  endif()
endif()
get_filename_component(_lake_torch_libdir "${TORCH_LIBRARY}" DIRECTORY)
find_library(LAKE_TORCH_PYTHON_LIBRARY torch_python PATHS "${_lake_torch_libdir}" NO_DEFAULT_PATH)
