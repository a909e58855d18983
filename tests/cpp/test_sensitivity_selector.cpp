// SensitivitySelector: streamed float64 statistics and Top-K selection against naive references.
#include <lake/sensitivity_selector.h>

#include "fixtures.h"

using Catch::Contains;
using lake::test::max_abs_diff;

TEST_CASE("streamed statistics equal the two-pass float64 reference", "[selector]") {
  at::manual_seed(3);
  // Large offsets make naive sum-of-squares lose digits; Chan's merge must not.
  at::Tensor x = at::randn({10, 37, 24}, at::kFloat) * 3 + 1000;
  lake::ChannelStats streamed;
  for (int64_t i = 0; i < 10; i += 3) streamed.update(x.slice(0, i, std::min<int64_t>(10, i + 3)));
  at::Tensor flat = x.reshape({-1, 24}).to(at::kDouble);
  at::Tensor mean = flat.mean(0);
  at::Tensor var = (flat - mean).square().mean(0);
  CHECK(streamed.count == 370);
  CHECK(max_abs_diff(streamed.mean, mean) <= 1e-9);
  CHECK(max_abs_diff(streamed.variance(), var) <= 1e-9);
  lake::ChannelStats a, b;
  a.update(x.slice(0, 0, 4));
  b.update(x.slice(0, 4, 10));
  a.merge(b);
  CHECK(max_abs_diff(a.variance(), var) <= 1e-9);
}

TEST_CASE("top-K breaks ties by the lower index and returns ascending indices", "[selector]") {
  at::Tensor s = at::tensor({1.0, 5.0, 3.0, 5.0, 3.0, 0.5}, at::kDouble);
  CHECK(lake::top_k_channels(s, 2).equal(at::tensor({1, 3}, at::kLong)));
  CHECK(lake::top_k_channels(s, 3).equal(at::tensor({1, 2, 3}, at::kLong)));  // 2 beats 4 on the tie
  CHECK(lake::top_k_channels(s, 6).equal(at::arange(6, at::kLong)));
  REQUIRE_THROWS_WITH(lake::top_k_channels(s, 7), Contains("k = 7 neurons requested, but the layer has 6 channels"));
}

TEST_CASE("variance, normalized variance and CV scores select what a naive reference selects", "[selector]") {
  at::manual_seed(4);
  at::Tensor acts = at::randn({3, 16, 32}) * at::linspace(0.1, 3.0, 32) + at::linspace(-2, 2, 32);
  at::Tensor flat = acts.reshape({-1, 32}).to(at::kDouble);
  at::Tensor var = flat.var(0, /*unbiased=*/false);
  at::Tensor normed = flat / flat.norm(2, -1, true);
  struct Case {
    lake::SensitivityScore score;
    at::Tensor expect;
  };
  for (const Case& c : {Case{lake::SensitivityScore::Variance, var},
                        Case{lake::SensitivityScore::NormalizedVariance, normed.var(0, false)},
                        Case{lake::SensitivityScore::CoefficientOfVariation, var.sqrt() / flat.mean(0).abs()}}) {
    INFO(lake::to_string(c.score));
    lake::SensitivitySelector sel({5, c.score});
    sel.update(2, acts.slice(0, 0, 1));
    sel.update(2, acts.slice(0, 1, 3));
    lake::NeuronSet set = sel.select();
    REQUIRE(set.layers.size() == 1);
    at::Tensor want = std::get<0>(std::get<1>(c.expect.topk(5)).sort());
    CHECK(set.layers[0].indices.equal(want));
    CHECK(max_abs_diff(set.layers[0].scores, c.expect.index_select(0, want)) <= 1e-9);
    CHECK(max_abs_diff(set.layers[0].std, var.index_select(0, want).sqrt()) <= 1e-9);
    CHECK(set.channels == 32);
  }
}

TEST_CASE("the random score depends on the seed only", "[selector]") {
  auto pick = [](uint64_t seed, int64_t offset) {
    lake::SensitivitySelector sel({8, lake::SensitivityScore::Random, seed});
    sel.update(1, at::randn({2, 4, 64}) + static_cast<double>(offset));
    return sel.select().layers[0].indices;
  };
  at::Tensor a = pick(1, 0), b = pick(1, 5), c = pick(2, 0);
  CHECK(a.equal(b));
  CHECK(!a.equal(c));
  CHECK(a.numel() == 8);
  CHECK(a.equal(std::get<0>(a.sort())));
  CHECK(std::get<0>(at::_unique(a)).numel() == 8);
}

TEST_CASE("selector errors", "[selector][bad-input]") {
  lake::SensitivitySelector sel({200});
  REQUIRE_THROWS_WITH(sel.select(), Contains("no activations were streamed in"));
  sel.update(3, at::randn({1, 4, 128}));
  REQUIRE_THROWS_WITH(sel.select(), Contains("k = 200 neurons requested, but layer 3 has 128 channels"));
  REQUIRE_THROWS_WITH(sel.update(3, at::randn({4})), Contains("expected (B, N, C) or (T, C) activations"));
  REQUIRE_THROWS_WITH(lake::parse_sensitivity_score("entropy"), Contains("unknown sensitivity score 'entropy'"));
  REQUIRE_THROWS_WITH(lake::SensitivitySelector({0}), Contains("k must be >= 1"));
}
