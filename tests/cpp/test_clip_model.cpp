// load_clip on every archive kind, and the forward against OpenCLIP's on the same weights.
#include <lake/clip_model.h>

#include <thread>

#include "fixtures.h"

using lake::test::fixture;
using lake::test::load_tensors;
using lake::test::max_abs_diff;

namespace {

void check_tiny_config(const lake::ClipConfig& c) {
  CHECK(c.image_size == 32);
  CHECK(c.patch_size == 8);
  CHECK(c.grid_size() == 4);
  CHECK(c.vision_width == 128);
  CHECK(c.vision_layers == 3);
  CHECK(c.vision_heads == 2);
  CHECK(c.embed_dim == 64);
  CHECK(c.context_length == 77);
  CHECK(c.vocab_size == 49408);
  CHECK(c.text_width == 128);
  CHECK(c.text_layers == 2);
  CHECK(c.text_heads == 2);
}

}  // namespace

TEST_CASE("every archive kind loads with the inferred config and matches OpenCLIP", "[clip][fidelity]") {
  auto ref = load_tensors("tiny_reference.pt");
  struct Case {
    const char* file;
    lake::ArchiveKind kind;
  };
  for (Case k : {Case{"tiny_openai_jit_fp32.pt", lake::ArchiveKind::OpenAIJit},
                 Case{"tiny_state_dict.pt", lake::ArchiveKind::StateDict},
                 Case{"tiny_checkpoint.pt", lake::ArchiveKind::StateDict},
                 Case{"tiny_export.pt", lake::ArchiveKind::LakeExport}}) {
    INFO(k.file);
    lake::ClipModel m = lake::load_clip(fixture(k.file));
    check_tiny_config(m.config());
    CHECK(m.config().archive_kind == k.kind);
    CHECK(m.config().activation == lake::Activation::QuickGELU);
    // Only a bare state dict leaves the activation to an assumption (OpenAI's archive says it in
    // its code, the export in its config).
    CHECK(m.config().activation_assumed == (k.kind == lake::ArchiveKind::StateDict));
    CHECK(max_abs_diff(m.encode_image(ref["images"]), ref["image_features"]) <= 1e-4);
    CHECK(max_abs_diff(m.encode_text(ref["tokens"]), ref["text_features"]) <= 1e-4);
    // 64 px input on a model trained at 32 px: the positional embedding is resized.
    CHECK(max_abs_diff(m.encode_image(ref["images64"]), ref["image_features64"]) <= 1e-4);
  }
}

TEST_CASE("OpenAI-style fp16 archive with CUDA device constants loads on the CPU", "[clip][fidelity]") {
  lake::ClipModel m = lake::load_clip(fixture("tiny_openai_jit_fp16.pt"));
  check_tiny_config(m.config());
  CHECK(m.config().activation == lake::Activation::QuickGELU);  // read from the graph's code
  CHECK(m.dtype() == at::kFloat);
  auto ref = load_tensors("tiny_fp16_reference.pt");
  auto inputs = load_tensors("tiny_reference.pt");
  CHECK(max_abs_diff(m.encode_image(inputs["images"]), ref["image_features"]) <= 1e-4);
  CHECK(max_abs_diff(m.encode_text(inputs["tokens"]), ref["text_features"]) <= 1e-4);
}

TEST_CASE("GELU is detected for an OpenCLIP ViT-B-16-plus-240 state dict and can be overridden", "[clip]") {
  lake::ClipModel m = lake::load_clip(fixture("plus240_state_dict.pt"));
  CHECK(m.config().image_size == 240);
  CHECK(m.config().patch_size == 16);
  CHECK(m.config().vision_width == 896);
  CHECK(m.config().vision_heads == 14);
  CHECK(m.config().activation == lake::Activation::GELU);
  CHECK_FALSE(m.config().activation_assumed);  // known from the shapes
  lake::LoadOptions o;
  o.activation = lake::Activation::QuickGELU;
  CHECK(lake::load_clip(fixture("plus240_state_dict.pt"), o).config().activation == lake::Activation::QuickGELU);
  CHECK_FALSE(lake::load_clip(fixture("tiny_state_dict.pt"), o).config().activation_assumed);  // given
}

TEST_CASE("the forward is batch-size invariant and thread-safe", "[clip]") {
  lake::ClipModel m = lake::load_clip(fixture("tiny_state_dict.pt"));
  at::manual_seed(1);
  at::Tensor images = at::randn({5, 3, 32, 48});  // non-square input: a 4 x 6 grid
  at::Tensor all = m.encode_image(images);
  for (int64_t i = 0; i < 5; ++i) CHECK(max_abs_diff(m.encode_image(images.slice(0, i, i + 1)), all.slice(0, i, i + 1)) <= 1e-6);

  at::Tensor a, b;
  std::thread t1([&] { a = m.encode_image(images); });
  std::thread t2([&] { b = m.encode_image(images); });
  t1.join();
  t2.join();
  CHECK(at::equal(a, all));
  CHECK(at::equal(b, all));
}

TEST_CASE("positional embedding interpolation", "[clip]") {
  lake::ClipModel m = lake::load_clip(fixture("tiny_state_dict.pt"));
  at::Tensor native = m.positional_embedding(4, 4);
  CHECK(at::equal(native, m.parameter("visual.positional_embedding")));
  at::Tensor big = m.positional_embedding(8, 6);
  CHECK(big.sizes() == at::IntArrayRef({1 + 48, 128}));
  CHECK(at::equal(big.slice(0, 0, 1), native.slice(0, 0, 1)));  // the CLS row is kept
  // Independent reference: ATen's bicubic interpolation through at::upsample_bicubic2d.
  at::Tensor grid = native.slice(0, 1).reshape({1, 4, 4, 128}).permute({0, 3, 1, 2});
  at::Tensor expect = at::upsample_bicubic2d(grid, {8, 6}, false).permute({0, 2, 3, 1}).reshape({48, 128});
  CHECK(max_abs_diff(big.slice(0, 1), expect) <= 1e-6);
  CHECK(m.positional_embedding(8, 6).data_ptr() == big.data_ptr());  // cached
}

TEST_CASE("parameters and fingerprint", "[clip]") {
  lake::ClipModel a = lake::load_clip(fixture("tiny_state_dict.pt"));
  lake::ClipModel b = lake::load_clip(fixture("tiny_export.pt"));
  lake::ClipModel c = lake::load_clip(fixture("plus240_state_dict.pt"));
  CHECK(a.parameter("visual.conv1.weight").sizes() == at::IntArrayRef({128, 3, 8, 8}));
  CHECK(a.fingerprint().size() == 16);
  CHECK(a.fingerprint() == b.fingerprint());  // the same weights, two archive kinds
  CHECK(a.fingerprint() != c.fingerprint());
  REQUIRE_THROWS_WITH(a.parameter("visual.nope"), Catch::Contains("no parameter 'visual.nope'"));
  REQUIRE(b.tokenizer() != nullptr);  // the export embeds the vocabulary
  CHECK(a.tokenizer() == nullptr);
}
