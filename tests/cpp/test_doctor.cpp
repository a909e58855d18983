// lake::doctor: passes on this machine's devices, skips CUDA with a reason when it cannot
// run, fails exactly the check whose output is perturbed (DoctorOptions::fault), and its
// JSON holds every check.
#include <lake/doctor.h>
#include <lake/ops/ops.h>

#include <ATen/Context.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <set>

#include "fixtures.h"

using Catch::Contains;

namespace {

lake::DoctorReport cpu_doctor(const std::string& fault = "", bool end_to_end = true) {
  lake::DoctorOptions o;
  o.devices = {"cpu"};
  o.fault = fault;
  o.end_to_end = end_to_end;
  return lake::doctor(o);
}

}  // namespace

TEST_CASE("doctor passes every check on the CPU and says why CUDA is skipped", "[doctor]") {
  const auto t0 = std::chrono::steady_clock::now();
  const lake::DoctorReport r = lake::doctor();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "lake::doctor() took " << s << " s\n";
  INFO(r.to_text());
  CHECK(r.ok());
  const std::vector<std::string> names = lake::doctor_check_names();
  CHECK(names.size() >= 30);
  CHECK(std::set<std::string>(names.begin(), names.end()).size() == names.size());
  int64_t cpu = 0;
  for (const auto& c : r.checks) {
    if (c.device != "cpu") continue;
    ++cpu;
    CHECK(c.status == "PASS");
    CHECK(c.max_error <= c.tolerance);
  }
  CHECK(cpu == static_cast<int64_t>(names.size()));
  const bool cuda_runs = lake::ops::cuda_kernels_available() && at::hasCUDA();
  if (!cuda_runs) {
    CHECK(r.count("SKIP") == static_cast<int64_t>(names.size()));
    for (const auto& c : r.checks) {
      if (c.device == "cpu") continue;
      CHECK(c.status == "SKIP");
      CHECK(std::isnan(c.max_error));
      CHECK_THAT(c.detail, lake::ops::cuda_kernels_available() ? Contains("no CUDA device") : Contains("no CUDA kernels"));
    }
    CHECK_THAT(r.to_text(), Contains("cuda: " + std::to_string(names.size()) + " checks SKIP: "));
  }
  bool has_kernels_line = false;
  for (const auto& kv : r.environment) has_kernels_line = has_kernels_line || kv.first == "cuda kernels";
  CHECK(has_kernels_line);
  CHECK_THAT(r.to_text(), Contains(" passed, 0 failed, "));
}

TEST_CASE("doctor's fault makes exactly that check FAIL", "[doctor]") {
  for (const std::string fault : {"top_k[ties, NaN, inf]", "gather_normalize[empty]", "channel_moments[NaN]",
                                  "nearest_neighbors[ties]", "upsample_blur[sigma 0]", "normality_model[score]"}) {
    const lake::DoctorReport r = cpu_doctor(fault);
    INFO(fault << "\n" << r.to_text());
    CHECK_FALSE(r.ok());
    CHECK(r.count("FAIL") == 1);
    for (const auto& c : r.checks) {
      if (c.name != fault) continue;
      CHECK(c.status == "FAIL");
      CHECK(c.max_error > c.tolerance);
      CHECK_THAT(c.detail, Contains("[fault injected]"));
    }
    CHECK_THAT(r.to_text(), Contains(" failed, ") && Contains("FAILED"));
  }
  REQUIRE_THROWS_WITH(cpu_doctor("top_k[nonsense]"), Contains("unknown check 'top_k[nonsense]'"));
}

TEST_CASE("doctor JSON holds every check and devices are checked", "[doctor]") {
  const lake::DoctorReport r = cpu_doctor("", /*end_to_end=*/false);
  CHECK(r.ok());
  CHECK(r.checks.size() == lake::doctor_check_names(false).size());
  for (const auto& c : r.checks) CHECK(c.name.rfind("normality_model", 0) != 0);
  const std::string j = r.to_json();
  CHECK_THAT(j, Contains("\"ok\": true") && Contains("\"checks\": [") && Contains("\"environment\": {"));
  size_t rows = 0;
  for (size_t at = j.find("\"name\": "); at != std::string::npos; at = j.find("\"name\": ", at + 1)) ++rows;
  CHECK(rows == r.checks.size());
  for (const char* bare : {": nan", ": NaN", ": inf", ": -inf", "Infinity"}) CHECK(j.find(bare) == std::string::npos);

  lake::DoctorOptions o;
  o.devices = {"mps"};
  REQUIRE_THROWS_WITH(lake::doctor(o), Contains("unsupported device 'mps'"));
  o.devices = {"gpu"};
  REQUIRE_THROWS_WITH(lake::doctor(o), Contains("unknown device 'gpu'"));
  o.devices = {"cuda:7"};
  o.end_to_end = false;
  const lake::DoctorReport s = lake::doctor(o);
  CHECK(s.ok());
  for (const auto& c : s.checks) CHECK(c.status == "SKIP");
}
