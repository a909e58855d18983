// The head's kernels as dispatcher ops (src/ops/registration.cpp): each is found by name in
// c10::Dispatcher, called through it equals the C++ entry point lake::ops::* bit for bit,
// keeps its error types, and is recorded under its name by RecordFunction (what
// torch.profiler sees).
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/record_function.h>
#include <lake/ops/ops.h>

#include <ATen/ATen.h>

#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include "fixtures.h"

using Catch::Contains;

namespace lake_test_dispatcher {

template <class Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

at::Tensor unit_rows(std::vector<int64_t> shape) {
  auto x = at::randn(shape);
  return x / x.norm(2, -1, true);
}

}  // namespace lake_test_dispatcher

TEST_CASE("every head op is a dispatcher op with a CPU and a CUDA kernel", "[ops][dispatcher]") {
  for (const char* name : {"lake::channel_moments", "lake::top_k", "lake::gather_normalize", "lake::nearest_neighbors",
                           "lake::upsample_blur"}) {
    INFO(name);
    auto handle = c10::Dispatcher::singleton().findSchema({name, ""});
    REQUIRE(handle.has_value());
    CHECK(handle->hasKernelForDispatchKey(c10::DispatchKey::CPU));
    CHECK(handle->hasKernelForDispatchKey(c10::DispatchKey::CUDA));
  }
  CHECK(c10::toString(c10::Dispatcher::singleton().findSchemaOrThrow("lake::top_k", "").schema()) ==
        "lake::top_k(Tensor scores, int k) -> Tensor");
}

TEST_CASE("ops called through c10::Dispatcher by name equal lake::ops bit for bit", "[ops][dispatcher]") {
  using lake_test_dispatcher::op;
  at::manual_seed(21);
  at::Tensor x = at::randn({300, 48});
  at::Tensor mask = at::rand({300}) > 0.5;
  at::Tensor idx = at::randperm(48).slice(0, 0, 12);

  auto [count, mean, m2] =
      op<std::tuple<c10::SymInt, at::Tensor, at::Tensor>(const at::Tensor&, const std::optional<at::Tensor>&)>(
          "lake::channel_moments")
          .call(x, mask);
  lake::ops::Moments m = lake::ops::channel_moments(x, mask);
  CHECK(count.expect_int() == m.count);
  CHECK(mean.equal(m.mean));
  CHECK(m2.equal(m.m2));

  at::Tensor scores = at::randint(0, 5, {48}).to(at::kDouble);
  CHECK(op<at::Tensor(const at::Tensor&, int64_t)>("lake::top_k").call(scores, 10).equal(lake::ops::top_k(scores, 10)));

  CHECK(op<at::Tensor(const at::Tensor&, const at::Tensor&, double)>("lake::gather_normalize")
            .call(x, idx, 1e-12)
            .equal(lake::ops::gather_normalize(x, idx)));

  at::Tensor q = lake_test_dispatcher::unit_rows({2, 40, 12}), g = lake_test_dispatcher::unit_rows({2, 300, 12});
  auto [d, i] = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t, int64_t, int64_t)>(
                    "lake::nearest_neighbors")
                    .call(q, g, 64, 10, 20);
  lake::ops::NearestOptions o;
  o.tile = 64;
  o.exclude_lo = 10;
  o.exclude_hi = 20;
  lake::ops::NearestNeighbors nn = lake::ops::nearest_neighbors(q, g, o);
  CHECK(d.equal(nn.distance));
  CHECK(i.equal(nn.index));

  at::Tensor maps = at::rand({2, 7, 9});
  CHECK(op<at::Tensor(const at::Tensor&, int64_t, int64_t, double)>("lake::upsample_blur")
            .call(maps, 30, 40, 1.5)
            .equal(lake::ops::upsample_blur(maps, 30, 40, 1.5)));
}

TEST_CASE("the dispatcher keeps the ops' checks and error types", "[ops][dispatcher]") {
  using lake_test_dispatcher::op;
  auto top_k = op<at::Tensor(const at::Tensor&, int64_t)>("lake::top_k");
  REQUIRE_THROWS_AS(top_k.call(at::randn({8}), 9), c10::ValueError);
  REQUIRE_THROWS_WITH(top_k.call(at::randn({8}), 9), Contains("k = 9 neurons requested, but the layer has 8 channels"));
  // An undefined tensor reaches the op's own check (the CompositeExplicitAutograd fallback).
  REQUIRE_THROWS_AS(lake::ops::top_k(at::Tensor(), 1), c10::ValueError);
  REQUIRE_THROWS_WITH(lake::ops::upsample_blur(at::Tensor(), 4, 4, 1.0), Contains("upsample_blur: expected (B, h, w)"));
  REQUIRE_THROWS_AS(lake::ops::gather_normalize(at::randn({3, 4}), at::tensor({4}, at::kLong)), c10::IndexError);
}

TEST_CASE("RecordFunction sees the ops by name, also when lake::ops calls them", "[ops][dispatcher]") {
  static std::mutex mu;
  static std::set<std::string> seen;
  {
    std::lock_guard<std::mutex> lock(mu);
    seen.clear();
  }
  auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(
      [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
        const std::string name = fn.name();
        if (name.rfind("lake::", 0) == 0) {
          std::lock_guard<std::mutex> lock(mu);
          seen.insert(name);
        }
        return nullptr;
      }));
  at::Tensor x = at::randn({20, 8});
  at::Tensor idx = at::tensor({1, 5}, at::kLong);
  (void)lake::ops::channel_moments(x);
  (void)lake::ops::top_k(at::randn({8}), 2);
  (void)lake::ops::gather_normalize(x, idx);
  (void)lake::ops::gather_normalize_unchecked(x, idx);  // not an op, recorded under the op's name
  (void)lake::ops::nearest_neighbors(lake_test_dispatcher::unit_rows({4, 8}), lake_test_dispatcher::unit_rows({6, 8}));
  (void)lake::ops::upsample_blur(at::rand({1, 3, 3}), 6, 6, 1.0);
  at::removeCallback(handle);
  std::lock_guard<std::mutex> lock(mu);
  CHECK(seen == std::set<std::string>{"lake::channel_moments", "lake::top_k", "lake::gather_normalize",
                                      "lake::nearest_neighbors", "lake::upsample_blur"});
}
