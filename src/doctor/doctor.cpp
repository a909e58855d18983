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
#include <fstream>
#include <iterator>
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
  return fmt::format("{}.{}", v / 1000, (v % 1000) / 10);
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

std::string gib(double bytes) { return fmt::format("{:.1f} GiB", bytes / (1024.0 * 1024.0 * 1024.0)); }

std::string cpu_description() {
  std::string model = "unknown CPU";
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  std::string out = fmt::format("{}, {} hardware threads, ATen CPU capability {}", model,
                                std::thread::hardware_concurrency(), at::get_cpu_capability());
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
  out += fmt::format(", {}", gib(static_cast<double>(sysconf(_SC_PHYS_PAGES)) *
                                 static_cast<double>(sysconf(_SC_PAGE_SIZE))));
#endif
  return out;
}

// What LibTorch says about CUDA, without a CUDA header.
std::string libtorch_cuda() {
  const auto& hooks = at::detail::getCUDAHooks();
  if (!hooks.hasCUDART()) return "without CUDA";
  try {
    return fmt::format("with CUDA {}", detail::cuda_version_string(static_cast<int>(hooks.versionCUDART())));
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
    env.emplace_back("cuda kernels", fmt::format("not built (LAKE_WITH_CUDA={})", LAKE_BUILD_WITH_CUDA));
    s.missing = fmt::format("this build of LAKE has no CUDA kernels (LAKE_WITH_CUDA={}{}; reconfigure with "
                            "-DLAKE_WITH_CUDA=ON)",
                            LAKE_BUILD_WITH_CUDA,
                            std::string(LAKE_BUILD_WITH_CUDA) == "OFF" ? ""
                                                                       : ": nvcc or a CUDA LibTorch was not found");
    return s;
  }
  env.emplace_back("cuda kernels",
                   fmt::format("built with nvcc {} for architectures {}", LAKE_BUILD_NVCC_VERSION, arch));
#ifdef LAKE_HAS_CUDA
  const detail::CudaInfo info = detail::cuda_info();
  env.emplace_back("cuda runtime",
                   fmt::format("{} (LAKE compiled against {}), {}", detail::cuda_version_string(info.runtime),
                               detail::cuda_version_string(info.runtime_compiled),
                               info.driver > 0
                                   ? fmt::format("driver for CUDA {}", detail::cuda_version_string(info.driver))
                                   : std::string("no CUDA driver")));
  for (size_t i = 0; i < info.devices.size(); ++i) {
    const detail::CudaDeviceInfo& d = info.devices[i];
    const std::string cover = detail::architectures_cover(arch, d.major, d.minor);
    env.emplace_back(fmt::format("cuda:{}", i),
                     fmt::format("{}, sm_{}{}, {} SMs, {}{}", d.name, d.major, d.minor, d.multiprocessors,
                                 gib(static_cast<double>(d.total_memory)),
                                 cover == "no" ? fmt::format("; NOT covered by the build's architectures {}: rebuild "
                                                             "with -DCMAKE_CUDA_ARCHITECTURES={}{}",
                                                             arch, d.major, d.minor)
                                               : ""));
  }
  if (info.devices.empty())
    env.emplace_back("cuda devices", fmt::format("none ({})", info.error.empty() ? "0 devices" : info.error));
  s.count = at::hasCUDA() ? static_cast<int>(at::detail::getCUDAHooks().getNumGPUs()) : 0;
  if (s.count == 0)
    s.missing = info.error.empty() ? std::string("no CUDA device visible to LibTorch")
                                   : fmt::format("no CUDA device ({})", info.error);
#endif
  return s;
}

Env environment(const DoctorOptions& o, CudaState& cuda) {
  Env env;
  env.emplace_back("lake", LAKE_VERSION_STRING);
  env.emplace_back("build",
                   fmt::format("{}, {}, unity build {}", LAKE_BUILD_TYPE, LAKE_BUILD_CXX_COMPILER, LAKE_BUILD_UNITY));
  env.emplace_back("libtorch", fmt::format("{}, {}", TORCH_VERSION, libtorch_cuda()));
  env.emplace_back("threads",
                   fmt::format("intra-op {}, inter-op {}", at::get_num_threads(), at::get_num_interop_threads()));
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
      for (int i = 0; i < cuda.count; ++i) add({fmt::format("cuda:{}", i), c10::Device(c10::kCUDA, i), ""});
    } else {
      add({d.str(), d,
           d.index() < cuda.count
               ? ""
               : fmt::format("no such device ({} CUDA device{} visible)", cuda.count, cuda.count == 1 ? "" : "s")});
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
    c.expect(false, fmt::format("error: {}", first_line(e.what_without_backtrace())));
  } catch (const std::exception& e) {
    c.expect(false, fmt::format("error: {}", first_line(e.what())));
  }
  row.tolerance = c.tolerance;
  row.max_error = c.max_error;
  row.status = c.passed() ? "PASS" : "FAIL";
  std::string detail = c.note.empty() ? k.inputs : c.note;
  if (!c.problems.empty()) {
    detail = fmt::format("{}", fmt::join(c.problems, "; "));
  } else if (!c.passed()) {
    detail = fmt::format("max error above the tolerance; {}", detail);
  }
  if (faulty) detail += " [fault injected]";
  row.detail = detail;
  return row;
}

std::string number(double v) {
  if (std::isnan(v)) return "-";
  if (std::isinf(v)) return "inf";
  if (v == 0) return "0";
  return fmt::format("{:.1e}", v);
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
          out += fmt::format("\\u{:04x}", ch);
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  return fmt::format("{:.9g}", v);
}

}  // namespace

bool DoctorReport::ok() const { return count("FAIL") == 0; }

int64_t DoctorReport::count(const std::string& status) const {
  int64_t n = 0;
  for (const auto& c : checks) n += c.status == status;
  return n;
}

std::string DoctorReport::to_text() const {
  std::string out = "LAKE doctor\n";
  auto put = std::back_inserter(out);
  size_t key_width = 0, name_width = 5, device_width = 6;
  for (const auto& kv : environment) key_width = std::max(key_width, kv.first.size());
  for (const auto& c : checks) name_width = std::max(name_width, c.name.size());
  for (const auto& c : checks) device_width = std::max(device_width, c.device.size());
  for (const auto& kv : environment) fmt::format_to(put, "  {:<{}}{}\n", kv.first, key_width + 2, kv.second);
  fmt::format_to(put, "\n  {:<{}}  {:<{}}  {:>9}  {:>9}  {}\n", "check", name_width, "device", device_width,
                 "max error", "tolerance", "status");
  for (size_t i = 0; i < checks.size(); ++i) {
    const DoctorCheck& c = checks[i];
    if (c.status == "SKIP") {  // one line for a run of skips of one device, for one reason
      size_t j = i;
      while (j + 1 < checks.size() && checks[j + 1].status == "SKIP" && checks[j + 1].device == c.device &&
             checks[j + 1].detail == c.detail)
        ++j;
      if (j > i) {
        fmt::format_to(put, "  {}: {} checks SKIP: {}\n", c.device, j - i + 1, c.detail);
        i = j;
        continue;
      }
    }
    fmt::format_to(put, "  {:<{}}  {:<{}}  {:>9}  {:>9}  {:<4}  {}\n", c.name, name_width, c.device, device_width,
                   number(c.max_error), number(c.tolerance), c.status, c.detail);
  }
  fmt::format_to(put, "\n{} passed, {} failed, {} skipped in {:.2f} s: {}\n", count("PASS"), count("FAIL"),
                 count("SKIP"), seconds, ok() ? "OK" : "FAILED");
  return out;
}

std::string DoctorReport::to_json() const {
  std::string out;
  auto put = std::back_inserter(out);
  fmt::format_to(put,
                 "{{\"ok\": {}, \"seconds\": {}, \"summary\": {{\"passed\": {}, \"failed\": {}, \"skipped\": {}}},\n",
                 ok(), json_number(seconds), count("PASS"), count("FAIL"), count("SKIP"));
  out += " \"environment\": {";
  for (size_t i = 0; i < environment.size(); ++i)
    fmt::format_to(put, "{}{}: {}", i ? ", " : "", json_string(environment[i].first),
                   json_string(environment[i].second));
  out += "},\n \"checks\": [";
  for (size_t i = 0; i < checks.size(); ++i) {
    const DoctorCheck& c = checks[i];
    fmt::format_to(put,
                   "{}{{\"name\": {}, \"device\": {}, \"status\": {}, \"max_error\": {}, \"tolerance\": {}, "
                   "\"detail\": {}}}",
                   i ? ",\n  " : "\n  ", json_string(c.name), json_string(c.device), json_string(c.status),
                   json_number(c.max_error), json_number(c.tolerance), json_string(c.detail));
  }
  out += "]}\n";
  return out;
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
      names += fmt::format("{}'{}'", names.empty() ? "" : ", ", c.name);
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
