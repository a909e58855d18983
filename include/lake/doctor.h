#pragma once
// lake::doctor: is this build of LAKE sound on this machine? Reports the versions and build
// options, then runs every lake::ops kernel on every available device (the CPU, each CUDA
// device) on small and edge-case inputs against naive ATen references computed on the CPU,
// and fits and scores a tiny random-weight NormalityModel on each device. A few seconds on
// a CPU. `lake doctor` and `pylake.doctor()` call it; see docs/kernels.md.
//
//   lake::DoctorReport r = lake::doctor();
//   fmt::print("{}", r.to_text());
//   return r.ok() ? 0 : 1;

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace lake {

struct DoctorOptions {
  /// Devices to check: "cpu", "cuda" (every CUDA device) or "cuda:N". Empty: the CPU and
  /// every CUDA device. CUDA devices that cannot run (no GPU, a build without the CUDA
  /// kernels, ...) give SKIP rows that say why.
  std::vector<std::string> devices;
  /// Also fit and score a tiny random-weight NormalityModel on each device (the rows
  /// "normality_model[fit]" and "normality_model[score]").
  bool end_to_end = true;
  /// For testing the doctor itself: the name of one check (see doctor_check_names()) whose
  /// kernel outputs are perturbed before they are compared, so that exactly that check
  /// FAILs. Empty (default): none. An unknown name is an error.
  std::string fault;
  /// Extra (key, value) entries appended to the report's environment (pylake adds Python's
  /// and PyTorch's versions).
  std::vector<std::pair<std::string, std::string>> environment;
};

/// One check on one device.
struct DoctorCheck {
  std::string name;    ///< op[case], e.g. "top_k[ties, NaN, inf]"
  std::string device;  ///< "cpu", "cuda:0", or "cuda" for a skipped CUDA row
  std::string status;  ///< "PASS", "FAIL" or "SKIP"
  std::string detail;  ///< PASS: the inputs; FAIL: what differed, or the error; SKIP: why
  /// The largest |kernel - reference| (divided by the reference's largest magnitude when
  /// that exceeds 1); +inf when an exact comparison (indices, counts, shapes, NaN positions)
  /// failed or the kernel threw; NaN when the check did not run (SKIP).
  double max_error = std::numeric_limits<double>::quiet_NaN();
  double tolerance = 0;  ///< PASS needs max_error <= tolerance
};

struct DoctorReport {
  /// Ordered (key, value) pairs: versions, build options, threads, devices.
  std::vector<std::pair<std::string, std::string>> environment;
  std::vector<DoctorCheck> checks;
  double seconds = 0;  ///< wall time of doctor()

  /// No check FAILed (SKIPs are fine).
  bool ok() const;
  /// How many checks have this status ("PASS", "FAIL", "SKIP").
  int64_t count(const std::string& status) const;
  /// For people: the environment, one line per check (consecutive SKIPs of one device for
  /// one reason on one line), and a summary line.
  std::string to_text() const;
  /// For machines: strict JSON {"ok", "seconds", "summary", "environment", "checks": [every
  /// check]}; non-finite numbers are null.
  std::string to_json() const;
};

/// The names of the checks doctor() runs on each device, in order.
std::vector<std::string> doctor_check_names(bool end_to_end = true);

/// Runs the checks. Kernel errors become FAIL rows, never exceptions; errors: an unknown
/// device or fault name (ValueError). Prints nothing; does not change the global RNG or
/// any torch setting.
DoctorReport doctor(const DoctorOptions& options = {});

}  // namespace lake
