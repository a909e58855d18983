// lake::doctor: the environment (versions, build options, threads, devices), then every check
// of detail::doctor_kernel_cases / doctor_model_cases on every device, and the report's text
// and JSON forms.

#include "lake/doctor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "detail/cuda_info.h"
#include "detail/doctor_checks.h"
#include "detail/format.h"
#include "lake/ops/ops.h"
#include "lake/version.h"
#include "lake_build_info.h"

namespace lake {

namespace detail {

std::string cuda_version_string(int v) {
  if (v <= 0) return "none";
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

std::string architectures_cover(const std::string& architectures, int major, int minor) {
  const int cc = 10 * major + minor;
  std::istringstream is(architectures);
  std::string a;
  bool any_known = false;
  while (std::getline(is, a, ';')) {
    if (a == "native" || a == "all" || a == "all-major") return "unknown";
    const size_t digits = a.find_first_not_of("0123456789");
    if (digits == 0) continue;
    const int arch = std::stoi(a.substr(0, digits));
    const std::string suffix = digits == std::string::npos ? "" : a.substr(digits);
    any_known = true;
    const bool sass = suffix != "-virtual", ptx = suffix.empty() || suffix == "-virtual";
    // Arch-specific code (90a, 100f...) runs on that capability only; plain machine code on the
    // same major with a newer minor; PTX on every newer capability (JIT-compiled by the driver).
    if (suffix == "a" || suffix == "a-real") {
      if (cc == arch) return "yes";
    } else if ((sass && arch / 10 == major && arch <= cc) || (ptx && arch <= cc)) {
      return "yes";
    }
  }
  return any_known ? "no" : "unknown";
}

}  // namespace detail

namespace {

using Env = std::vector<std::pair<std::string, std::string>>;

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

std::string cpu_description() {
  std::string model = "unknown CPU";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  std::string out = model + ", " + std::to_string(std::thread::hardware_concurrency()) + " hardware threads, " +
                    "ATen CPU capability " + at::get_cpu_capability();
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
  out += ", " + gib(static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE)));
#endif
  return out;
}

// What LibTorch says about CUDA, without a CUDA header.
std::string libtorch_cuda() {
  const auto& hooks = at::detail::getCUDAHooks();
  if (!hooks.hasCUDART()) return "without CUDA";
  try {
    return "with CUDA " + detail::cuda_version_string(static_cast<int>(hooks.versionCUDART()));
  } catch (const c10::Error&) {
    return "with CUDA";
  }
}

// A device to run the checks on, or the reason it cannot run them.
struct Target {
  std::string name;
  c10::Device device = c10::kCPU;
  std::string skip;
};

struct CudaState {
  int count = 0;        // devices LibTorch can use
  std::string missing;  // why there is none (empty when count > 0)
};

CudaState cuda_state(Env& env) {
  CudaState s;
  const std::string arch = LAKE_BUILD_CUDA_ARCHITECTURES;
  if (!ops::cuda_kernels_available()) {
    env.emplace_back("cuda kernels", std::string("not built (LAKE_WITH_CUDA=") + LAKE_BUILD_WITH_CUDA + ")");
    s.missing = std::string("this build of LAKE has no CUDA kernels (LAKE_WITH_CUDA=") + LAKE_BUILD_WITH_CUDA +
                (std::string(LAKE_BUILD_WITH_CUDA) == "OFF" ? "" : ": nvcc or a CUDA LibTorch was not found") +
                "; reconfigure with -DLAKE_WITH_CUDA=ON)";
    return s;
  }
  env.emplace_back("cuda kernels", std::string("built with nvcc ") + LAKE_BUILD_NVCC_VERSION + " for architectures " + arch);
#ifdef LAKE_HAS_CUDA
  const detail::CudaInfo info = detail::cuda_info();
  env.emplace_back("cuda runtime", detail::cuda_version_string(info.runtime) + " (LAKE compiled against " +
                                       detail::cuda_version_string(info.runtime_compiled) + "), " +
                                       (info.driver > 0 ? "driver for CUDA " + detail::cuda_version_string(info.driver)
                                                        : std::string("no CUDA driver")));
  for (size_t i = 0; i < info.devices.size(); ++i) {
    const detail::CudaDeviceInfo& d = info.devices[i];
    const std::string cover = detail::architectures_cover(arch, d.major, d.minor);
    env.emplace_back("cuda:" + std::to_string(i),
                     d.name + ", sm_" + std::to_string(d.major) + std::to_string(d.minor) + ", " +
                         std::to_string(d.multiprocessors) + " SMs, " + gib(static_cast<double>(d.total_memory)) +
                         (cover == "no" ? "; NOT covered by the build's architectures " + arch +
                                              ": rebuild with -DCMAKE_CUDA_ARCHITECTURES=" + std::to_string(d.major) +
                                              std::to_string(d.minor)
                                        : ""));
  }
  if (info.devices.empty()) env.emplace_back("cuda devices", "none (" + (info.error.empty() ? "0 devices" : info.error) + ")");
  s.count = at::hasCUDA() ? static_cast<int>(at::detail::getCUDAHooks().getNumGPUs()) : 0;
  if (s.count == 0)
    s.missing = "no CUDA device" + (info.error.empty() ? std::string(" visible to LibTorch") : " (" + info.error + ")");
#endif
  return s;
}

Env environment(const DoctorOptions& o, CudaState& cuda) {
  Env env;
  env.emplace_back("lake", LAKE_VERSION_STRING);
  env.emplace_back("build", std::string(LAKE_BUILD_TYPE) + ", " + LAKE_BUILD_CXX_COMPILER + ", unity build " +
                                LAKE_BUILD_UNITY);
  env.emplace_back("libtorch", std::string(TORCH_VERSION) + ", " + libtorch_cuda());
  env.emplace_back("threads", "intra-op " + std::to_string(at::get_num_threads()) + ", inter-op " +
                                  std::to_string(at::get_num_interop_threads()));
  env.emplace_back("cpu", cpu_description());
  cuda = cuda_state(env);
  for (const auto& kv : o.environment) env.push_back(kv);
  return env;
}

std::vector<Target> targets(const DoctorOptions& o, const CudaState& cuda) {
  std::vector<std::string> wanted = o.devices;
  if (wanted.empty()) wanted = {"cpu", "cuda"};
  std::vector<Target> out;
  std::set<std::string> seen;
  auto add = [&](Target t) {
    if (seen.insert(t.name).second) out.push_back(std::move(t));
  };
  for (const std::string& w : wanted) {
    c10::Device d = c10::kCPU;
    try {
      d = c10::Device(w);
    } catch (const c10::Error&) {
      TORCH_CHECK_VALUE(false, fmt::format("doctor: unknown device '{}': expected cpu, cuda or cuda:N", w));
    }
    TORCH_CHECK_VALUE(d.is_cpu() || d.is_cuda(),
                      fmt::format("doctor: unsupported device '{}': expected cpu, cuda or cuda:N", w));
    if (d.is_cpu()) {
      add({"cpu", c10::kCPU, ""});
    } else if (cuda.count == 0) {
      add({"cuda", d, cuda.missing});
    } else if (!d.has_index()) {
      for (int i = 0; i < cuda.count; ++i) add({"cuda:" + std::to_string(i), c10::Device(c10::kCUDA, i), ""});
    } else {
      add({d.str(), d, d.index() < cuda.count ? "" : "no such device (" + std::to_string(cuda.count) +
                                                         " CUDA device" + (cuda.count == 1 ? "" : "s") + " visible)"});
    }
  }
  return out;
}

std::vector<detail::DoctorCase> cases(bool end_to_end) {
  std::vector<detail::DoctorCase> all = detail::doctor_kernel_cases();
  if (end_to_end)
    for (auto& c : detail::doctor_model_cases()) all.push_back(std::move(c));
  return all;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

DoctorCheck run_case(const detail::DoctorCase& k, const Target& t, bool faulty) {
  DoctorCheck row{k.name, t.name, "SKIP", t.skip, std::numeric_limits<double>::quiet_NaN(), k.tolerance};
  if (!t.skip.empty()) return row;
  detail::DoctorComparison c(k.tolerance, t.device);
  const detail::DoctorTap tap = faulty ? detail::DoctorTap(detail::doctor_perturb)
                                       : detail::DoctorTap([](const at::Tensor& x) { return x; });
  try {
    k.run(c, t.device, tap);
  } catch (const c10::Error& e) {
    c.expect(false, "error: " + first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    c.expect(false, std::string("error: ") + first_line(e.what()));
  }
  row.tolerance = c.tolerance;
  row.max_error = c.max_error;
  row.status = c.passed() ? "PASS" : "FAIL";
  std::string detail = c.note.empty() ? k.inputs : c.note;
  if (!c.problems.empty()) {
    detail.clear();
    for (const auto& p : c.problems) detail += (detail.empty() ? "" : "; ") + p;
  } else if (!c.passed()) {
    detail = "max error above the tolerance; " + detail;
  }
  if (faulty) detail += " [fault injected]";
  row.detail = detail;
  return row;
}

std::string number(double v) {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return "inf";
  if (v == 0) return "0";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1e", v);
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (ch < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", ch);
          out += buf;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

bool DoctorReport::ok() const { return count("FAIL") == 0; }

int64_t DoctorReport::count(const std::string& status) const {
  int64_t n = 0;
  for (const auto& c : checks) n += c.status == status;
  return n;
}

std::string DoctorReport::to_text() const {
  std::ostringstream os;
  os << "LAKE doctor\n";
  size_t key_width = 0, name_width = 5, device_width = 6;
  for (const auto& kv : environment) key_width = std::max(key_width, kv.first.size());
  for (const auto& c : checks) name_width = std::max(name_width, c.name.size());
  for (const auto& c : checks) device_width = std::max(device_width, c.device.size());
  for (const auto& kv : environment)
    os << "  " << kv.first << std::string(key_width - kv.first.size() + 2, ' ') << kv.second << "\n";
  char buf[512];
  std::snprintf(buf, sizeof buf, "\n  %-*s  %-*s  %9s  %9s  %s\n", static_cast<int>(name_width), "check",
                static_cast<int>(device_width), "device", "max error", "tolerance", "status");
  os << buf;
  for (size_t i = 0; i < checks.size(); ++i) {
    const DoctorCheck& c = checks[i];
    if (c.status == "SKIP") {  // one line for a run of skips of one device, for one reason
      size_t j = i;
      while (j + 1 < checks.size() && checks[j + 1].status == "SKIP" && checks[j + 1].device == c.device &&
             checks[j + 1].detail == c.detail)
        ++j;
      if (j > i) {
        os << "  " << c.device << ": " << (j - i + 1) << " checks SKIP: " << c.detail << "\n";
        i = j;
        continue;
      }
    }
    std::snprintf(buf, sizeof buf, "  %-*s  %-*s  %9s  %9s  %-4s  ", static_cast<int>(name_width), c.name.c_str(),
                  static_cast<int>(device_width), c.device.c_str(), number(c.max_error).c_str(),
                  number(c.tolerance).c_str(), c.status.c_str());
    os << buf << c.detail << "\n";
  }
  std::snprintf(buf, sizeof buf, "\n%lld passed, %lld failed, %lld skipped in %.2f s: %s\n",
                static_cast<long long>(count("PASS")), static_cast<long long>(count("FAIL")),
                static_cast<long long>(count("SKIP")), seconds, ok() ? "OK" : "FAILED");
  os << buf;
  return os.str();
}

std::string DoctorReport::to_json() const {
  std::ostringstream os;
  os << "{\"ok\": " << (ok() ? "true" : "false") << ", \"seconds\": " << json_number(seconds)
     << ", \"summary\": {\"passed\": " << count("PASS") << ", \"failed\": " << count("FAIL")
     << ", \"skipped\": " << count("SKIP") << "},\n \"environment\": {";
  for (size_t i = 0; i < environment.size(); ++i)
    os << (i ? ", " : "") << json_string(environment[i].first) << ": " << json_string(environment[i].second);
  os << "},\n \"checks\": [";
  for (size_t i = 0; i < checks.size(); ++i) {
    const DoctorCheck& c = checks[i];
    os << (i ? ",\n  " : "\n  ") << "{\"name\": " << json_string(c.name) << ", \"device\": " << json_string(c.device)
       << ", \"status\": " << json_string(c.status) << ", \"max_error\": " << json_number(c.max_error)
       << ", \"tolerance\": " << json_number(c.tolerance) << ", \"detail\": " << json_string(c.detail) << "}";
  }
  os << "]}\n";
  return os.str();
}

std::vector<std::string> doctor_check_names(bool end_to_end) {
  std::vector<std::string> names;
  for (const auto& c : cases(end_to_end)) names.push_back(c.name);
  return names;
}

DoctorReport doctor(const DoctorOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<detail::DoctorCase> all = cases(options.end_to_end);
  if (!options.fault.empty()) {
    bool known = false;
    std::string names;
    for (const auto& c : all) {
      known = known || c.name == options.fault;
      names += (names.empty() ? "'" : ", '") + c.name + "'";
    }
    TORCH_CHECK_VALUE(known,
                      fmt::format("doctor: unknown check '{}' for the fault; the checks are {}", options.fault, names));
  }
  DoctorReport r;
  CudaState cuda;
  r.environment = environment(options, cuda);
  for (const Target& t : targets(options, cuda))
    for (const auto& k : all) r.checks.push_back(run_case(k, t, k.name == options.fault));
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace lake
