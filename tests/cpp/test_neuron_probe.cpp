// NeuronProbe taps against the reference model's intermediate outputs (Python hooks).
#include <lake/neuron_probe.h>

#include "fixtures.h"

using lake::test::fixture;
using lake::test::load_tensors;
using lake::test::max_abs_diff;

TEST_CASE("residual taps, CLS and projection match the hooked reference", "[probe][fidelity]") {
  auto ref = load_tensors("tiny_reference.pt");
  lake::ClipModel m = lake::load_clip(fixture("tiny_state_dict.pt"));
  lake::NeuronProbe probe(m, {{3, 1}, lake::ProbeKind::Residual, /*project_layer=*/-1});
  CHECK((probe.layers() == std::vector<int64_t>{3, 1}));
  CHECK(probe.channels() == 128);
  lake::ProbeResult r = probe(ref["images"]);
  CHECK(r.grid_h == 4);
  CHECK(r.grid_w == 4);
  REQUIRE(r.activations.size() == 2);
  CHECK(r.activations[0].sizes() == at::IntArrayRef({2, 16, 128}));
  CHECK(max_abs_diff(r.at_layer(3), ref["resid_3"]) <= 1e-4);
  CHECK(max_abs_diff(r.at_layer(1), ref["resid_1"]) <= 1e-4);
  CHECK(max_abs_diff(r.cls[0], ref["cls_3"]) <= 1e-4);
  CHECK(max_abs_diff(r.projected, ref["projected"]) <= 1e-4);
  REQUIRE_THROWS_WITH(r.at_layer(2), Catch::Contains("layer 2 was not probed"));
}

TEST_CASE("MLP taps hold 4 D hidden units after the activation", "[probe][fidelity]") {
  auto ref = load_tensors("tiny_reference.pt");
  lake::ClipModel m = lake::load_clip(fixture("tiny_state_dict.pt"));
  lake::NeuronProbe probe(m, {{-2}, lake::ProbeKind::Mlp});
  CHECK((probe.layers() == std::vector<int64_t>{2}));
  CHECK(probe.channels() == 512);
  lake::ProbeResult r = probe(ref["images"]);
  CHECK(r.activations[0].sizes() == at::IntArrayRef({2, 16, 512}));
  CHECK(max_abs_diff(r.activations[0], ref["mlp_2"]) <= 1e-4);
  CHECK(!r.projected.defined());
}

TEST_CASE("the tower stops after the deepest requested block", "[probe]") {
  lake::ClipModel m = lake::load_clip(fixture("tiny_state_dict.pt"));
  lake::VisionTaps taps;
  taps.residual_layers = {1};
  auto f = m.forward_vision(at::randn({1, 3, 32, 32}), taps);
  CHECK(f.blocks_run == 1);
  taps.embedding = true;
  CHECK(m.forward_vision(at::randn({1, 3, 32, 32}), taps).blocks_run == 3);
}

TEST_CASE("probe layer indices are validated", "[probe][bad-input]") {
  lake::ClipModel m = lake::load_clip(fixture("tiny_state_dict.pt"));
  for (int64_t bad : {0, 4, -4}) {
    INFO(bad);
    REQUIRE_THROWS_WITH(lake::NeuronProbe(m, {{bad}}),
                        Catch::Contains("layer " + std::to_string(bad) + " is out of range for a model with 3 blocks"));
  }
  REQUIRE_THROWS_WITH(lake::NeuronProbe(m, {{1, -3}}), Catch::Contains("requested twice"));
  REQUIRE_THROWS_WITH(lake::NeuronProbe(m, {{}}), Catch::Contains("at least one layer"));
  REQUIRE_THROWS_WITH(lake::parse_probe_kind("attention"), Catch::Contains("'residual' or 'mlp'"));
}
