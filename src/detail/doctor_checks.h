#pragma once
// The checks behind lake::doctor (internal): each runs a kernel (or the NormalityModel) on a
// device and compares the output with a naive reference computed on the CPU in float64.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <functional>
#include <string>
#include <vector>

namespace lake::detail {

/// What one check found: the largest deviation from its reference, and what went wrong.
class DoctorComparison {
 public:
  DoctorComparison(double tolerance, c10::Device device) : tolerance(tolerance), device_(device) {}

  /// Floating outputs: max |got - ref| in float64, divided by max(1, max |ref|); NaN must sit
  /// exactly where the reference has NaN. `got` must have ref's shape and, when it is a kernel
  /// output (not a quantity derived from one on the CPU), be on the checked device.
  void close(const std::string& what, const at::Tensor& got, const at::Tensor& ref, bool kernel_output = true);
  /// Integer outputs (indices): equal values, same shape (and device, as for close).
  void exact(const std::string& what, const at::Tensor& got, const at::Tensor& ref, bool kernel_output = true);
  /// A property that must hold; otherwise `problem` is reported.
  void expect(bool ok, const std::string& problem);

  bool passed() const { return problems.empty() && max_error <= tolerance; }

  double tolerance;
  double max_error = 0;               ///< +inf once a problem was found
  std::vector<std::string> problems;  ///< empty when every comparison held
  std::string note;                   ///< what the run found out about its inputs, for the report

 private:
  bool placed(const std::string& what, const at::Tensor& got, const at::Tensor& ref, bool kernel_output);
  c10::Device device_;
};

/// Applied to every kernel output before it is compared: the identity, or for the check
/// named by DoctorOptions::fault, doctor_perturb.
using DoctorTap = std::function<at::Tensor(const at::Tensor&)>;

/// The fault: floating values + 0.5, integers + 1, an empty tensor gets one more row.
at::Tensor doctor_perturb(const at::Tensor& t);

struct DoctorCase {
  std::string name;       ///< "op[case]"
  std::string inputs;     ///< what it runs on, for the PASS line
  double tolerance;       ///< the default; a check may set another (DoctorComparison::tolerance)
  std::function<void(DoctorComparison&, c10::Device, const DoctorTap&)> run;
};

/// Every lake::ops kernel on small and edge-case inputs (src/doctor/doctor_checks.cpp).
std::vector<DoctorCase> doctor_kernel_cases();
/// Fit and score a tiny random-weight NormalityModel; the CPU rows against a reference
/// pipeline, the CUDA rows against the CPU model. The cases share one lazily built context:
/// call once per doctor run (src/doctor/doctor_model.cpp).
std::vector<DoctorCase> doctor_model_cases();

/// Naive references (CPU, float64), shared by the kernel and model checks.
namespace doctor_ref {
/// (k) int64 ascending: the k best by (higher score, NaN last, lower index), by a full sort.
at::Tensor top_k(const at::Tensor& scores, int64_t k);
/// (T, C), (K) -> (T, K) float64: index_select, then each row over max(norm, eps).
at::Tensor gather_normalize(const at::Tensor& tokens, const at::Tensor& indices, double eps = 1e-12);
/// (L, Q, K), (L, M, K) -> the full (L, Q, M) float64 similarity matrix, rows [lo, hi) at -inf.
at::Tensor similarities(const at::Tensor& queries, const at::Tensor& gallery, int64_t lo = 0, int64_t hi = 0);
/// Best of `similarities`: distance (1 - max) / 2 in [0, 1] (1 when no row is left), and the
/// first arg-max (-1 when none).
std::pair<at::Tensor, at::Tensor> nearest(const at::Tensor& sims);
/// (B, h, w) -> (B, H, W) float64: torch's bilinear (align_corners false), then a
/// reflect-padded Gaussian conv2d along rows and columns, radius int(4 sigma + 0.5) <= min(H, W) - 1.
at::Tensor upsample_blur(const at::Tensor& maps, int64_t H, int64_t W, double sigma);
}  // namespace doctor_ref

}  // namespace lake::detail
