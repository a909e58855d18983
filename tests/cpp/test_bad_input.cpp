// Bad archives and bad inputs: each gets an error naming the input and what was expected.
#include <lake/clip_model.h>

#include "fixtures.h"

using lake::test::fixture;
using Catch::Contains;

TEST_CASE("bad archives are rejected with a message naming the file", "[bad-input]") {
  REQUIRE_THROWS_WITH(lake::load_clip(fixture("does_not_exist.pt")), Contains("does not exist"));
  REQUIRE_THROWS_WITH(lake::load_clip(fixture("not_an_archive.pt")), Contains("not_an_archive.pt' is not a TorchScript"));
  REQUIRE_THROWS_WITH(lake::load_clip(fixture("truncated.pt")), Contains("truncated.pt"));
  REQUIRE_THROWS_WITH(lake::load_clip(fixture("resnet_state_dict.pt")), Contains("is a ResNet CLIP"));
  REQUIRE_THROWS_WITH(lake::load_clip(fixture("missing_param_state_dict.pt")),
                      Contains("is missing parameter 'visual.transformer.resblocks.1.mlp.c_fc.bias'"));
  REQUIRE_THROWS_WITH(lake::load_clip(fixture("misshapen_state_dict.pt")),
                      Contains("parameter 'visual.ln_post.weight' has shape [127], expected [128]"));
  REQUIRE_THROWS_WITH(lake::load_clip(fixture("not_clip_state_dict.pt")), Contains("is not a CLIP ViT"));
  REQUIRE_THROWS_WITH(lake::parse_activation("relu"), Contains("unknown activation 'relu'"));
}

TEST_CASE("bad images and tokens are rejected", "[bad-input]") {
  lake::ClipModel m = lake::load_clip(fixture("tiny_state_dict.pt"));
  REQUIRE_THROWS_WITH(m.encode_image(at::randn({3, 32, 32})), Contains("expected (B, 3, H, W) images"));
  REQUIRE_THROWS_WITH(m.encode_image(at::randn({0, 3, 32, 32})), Contains("non-empty batch"));
  REQUIRE_THROWS_WITH(m.encode_image(at::randn({1, 1, 32, 32})), Contains("3 (RGB) channels"));
  REQUIRE_THROWS_WITH(m.encode_image(at::randn({1, 3, 30, 32})), Contains("multiples of the patch size 8"));
  REQUIRE_THROWS_WITH(m.encode_image(at::zeros({1, 3, 32, 32}, at::kByte)), Contains("floating-point"));
  REQUIRE_THROWS_WITH(m.encode_image(at::Tensor()), Contains("undefined"));
  REQUIRE_THROWS_WITH(m.encode_text(at::full({1, 77}, 49408, at::kLong)), Contains("must lie in [0, 49408)"));
  REQUIRE_THROWS_WITH(m.encode_text(at::zeros({1, 78}, at::kLong)), Contains("at most 77 tokens"));
  REQUIRE_THROWS_WITH(m.encode_text(at::zeros({1, 77}, at::kFloat)), Contains("int64 token ids"));
  lake::LoadOptions no_text;
  no_text.load_text = false;
  REQUIRE_THROWS_WITH(lake::load_clip(fixture("tiny_state_dict.pt"), no_text).encode_text(at::zeros({1, 77}, at::kLong)),
                      Contains("has no text tower"));
}
