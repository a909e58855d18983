// .lake files from C++: the version-2 round trip bit for bit (fitted and zero-shot), the
// committed fixtures of every version, the backbone's identity (the image tower as stored in
// its archive: fp16 and image-only loads of it match, other archives and settings do not), and
// version-2 files that lie consistently (checksum recomputed, so only the checks of the
// contents can catch them): each a c10::ValueError naming the file and the field.
#include <lake/normality_model.h>

#include <filesystem>
#include <functional>

#include "detail/normality_file.h"
#include "detail/safetensors.h"
#include "fixtures.h"

using Catch::Contains;
using lake::test::fixture;
using lake::test::max_abs_diff;
using nlohmann::json;

namespace normality_io_test {  // named: the tests are one unity translation unit

std::string scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / "lake_test_normality_io";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

// tests/data/<name> (committed fixtures).
std::string data_file(const std::string& name) {
  return (std::filesystem::path(__FILE__).parent_path().parent_path() / "data" / name).string();
}

lake::NormalityModel fitted(const lake::ClipModel& clip, int64_t shots = 2) {
  lake::NormalityOptions o;
  o.k = 8;
  o.class_name = "grid";
  lake::NormalityModel m(clip, o);
  at::manual_seed(3);
  m.fit(at::randn({shots, 3, 32, 32}));
  if (shots > 0) m.calibrate(at::randn({2, 3, 32, 32}), 0.9);
  return m;
}

using Tensors = std::map<std::string, at::Tensor>;

// A copy of the version-2 file `src`, its header and tensors edited, its checksum recomputed.
std::string forge(const std::string& src, const std::string& name, const std::function<void(json&)>& edit_header,
                  const std::function<void(Tensors&)>& edit_tensors = [](Tensors&) {}) {
  auto file = lake::detail::read_safetensors(src);
  json h = json::parse(file.metadata.at(lake::detail::kNormalityMetadataKey));
  Tensors t;
  for (const auto& [k, v] : file.tensors) t[k] = v.clone();
  edit_header(h);
  edit_tensors(t);
  h["checksum"] = lake::detail::normality_v2_checksum(h, t);
  const std::string out = scratch(name);
  lake::detail::write_safetensors(out, t, {{lake::detail::kNormalityMetadataKey, h.dump()}});
  return out;
}

void refused(const std::string& path, const lake::ClipModel& clip, const std::string& needle) {
  try {
    lake::NormalityModel::load(path, clip);
    FAIL("loaded " << path);
  } catch (const c10::ValueError& e) {
    const std::string what = e.what_without_backtrace();
    CHECK_THAT(what, Contains(path));
    CHECK_THAT(what, Contains(needle));
  }
}

// The same, for the fixture's tiny CLIP.
void refused(const std::string& path, const std::string& needle) {
  static const lake::ClipModel clip = lake::load_clip(fixture("tiny_export.pt"));
  refused(path, clip, needle);
}


TEST_CASE("version 2 round trips bit for bit, fitted and zero-shot", "[normality][io]") {
  const lake::ClipModel clip = lake::load_clip(fixture("tiny_export.pt"));
  for (int64_t shots : {2, 0}) {
    lake::NormalityModel m = fitted(clip, shots);
    const std::string path = scratch("rt.lake");
    m.save(path);
    lake::NormalityModel back = lake::NormalityModel::load(path, clip);
    at::manual_seed(4);
    const at::Tensor x = at::randn({2, 3, 40, 48});
    const lake::Prediction a = m.score(x, true), b = back.score(x, true);
    CHECK(at::equal(a.anomaly_map, b.anomaly_map));
    CHECK(at::equal(a.pred_score, b.pred_score));
    CHECK(at::equal(a.semantic_map, b.semantic_map));
    CHECK(back.shots() == shots);
    CHECK(back.image_threshold() == m.image_threshold());
    CHECK(back.pixel_threshold() == m.pixel_threshold());
    CHECK(back.layers() == m.layers());
    CHECK(back.normal_prompts() == m.normal_prompts());
    CHECK(at::equal(back.text_embeddings(), m.text_embeddings()));
    if (shots > 0) {
      CHECK(at::equal(a.visual_map, b.visual_map));
      for (size_t l = 0; l < m.galleries().size(); ++l) {
        CHECK(at::equal(back.galleries()[l], m.galleries()[l]));
        CHECK(at::equal(back.neurons().layers[l].mean, m.neurons().layers[l].mean));
      }
    }
    const auto file = lake::detail::read_safetensors(path);
    const json h = json::parse(file.metadata.at(lake::detail::kNormalityMetadataKey));
    CHECK(h["format_version"] == lake::kNormalityFormatVersion);
    CHECK(h["backbone"]["weights_fingerprint"] == clip.weights_fingerprint());
    CHECK(file.tensors.size() == (shots > 0 ? 3 * 5 + 1 : 1));
  }
}

TEST_CASE("the committed fixtures of every version load and agree", "[normality][io]") {
  const lake::ClipModel clip = lake::load_clip(fixture("tiny_export.pt"));
  const lake::NormalityModel v1 = lake::NormalityModel::load(data_file("normality_v1.lake"), clip);
  const lake::NormalityModel v2 = lake::NormalityModel::load(data_file("normality_v2.lake"), clip);
  at::manual_seed(5);
  const at::Tensor x = at::randn({2, 3, 32, 32});
  CHECK(max_abs_diff(v1.score(x).anomaly_map, v2.score(x).anomaly_map) <= 1e-6);
  CHECK(v1.shots() == 1);
  CHECK(v2.shots() == 1);
}

TEST_CASE("the backbone is the archive's stored image tower", "[normality][io]") {
  const lake::ClipModel clip = lake::load_clip(fixture("tiny_export.pt"));
  const std::string path = scratch("fp32.lake");
  const lake::NormalityModel m = fitted(clip);
  m.save(path);
  lake::LoadOptions half, image_only;
  half.dtype = at::kHalf;
  image_only.load_text = false;
  const lake::ClipModel h = lake::load_clip(fixture("tiny_export.pt"), half);
  const lake::ClipModel i = lake::load_clip(fixture("tiny_export.pt"), image_only);
  CHECK(h.weights_fingerprint() == clip.weights_fingerprint());
  CHECK(i.weights_fingerprint() == clip.weights_fingerprint());
  CHECK(h.fingerprint() != clip.fingerprint());  // as loaded: fp16 rounding
  at::manual_seed(6);
  const at::Tensor x = at::randn({2, 3, 32, 32});
  CHECK(at::equal(lake::NormalityModel::load(path, i).score(x).anomaly_map, m.score(x).anomaly_map));
  CHECK(max_abs_diff(lake::NormalityModel::load(path, h).score(x).anomaly_map, m.score(x).anomaly_map) < 2e-2);
  refused(path, lake::load_clip(fixture("plus240_state_dict.pt")), "was fitted with a different backbone");
  refused(path, lake::load_clip(fixture("tiny_openai_jit_fp16.pt")), "was fitted with a different backbone");
  lake::LoadOptions gelu;
  gelu.activation = lake::Activation::GELU;
  refused(path, lake::load_clip(fixture("tiny_export.pt"), gelu), "activation = quick_gelu; the given model");
}

TEST_CASE("version-2 files that lie consistently are refused", "[normality][io][bad-input]") {
  const lake::ClipModel clip = lake::load_clip(fixture("tiny_export.pt"));
  const std::string path = scratch("good.lake");
  fitted(clip).save(path);
  auto drop_rows = [](Tensors& t) {
    for (int l = 0; l < 3; ++l) t["galleries." + std::to_string(l)] = t["galleries." + std::to_string(l)].slice(0, 0, 30);
  };
  refused(forge(path, "rows.lake", [](json& h) { h["gallery_rows"] = 30; }, drop_rows),
          "gallery 0 has 30 rows, expected shots x patches = 2 x 16");
  refused(forge(path, "size.lake", [](json& h) { h["options"]["image_size"] = 40; }),
          "gallery 0 has 32 rows, expected shots x patches = 2 x 25");
  refused(forge(path, "embed.lake", [](json& h) { h["backbone"]["embed_dim"] = 32; },
                [](Tensors& t) { t["text_embeddings"] = t["text_embeddings"].slice(1, 0, 32).contiguous(); }),
          "'text_embeddings' is [2, 32] Float, expected (2, 64) for this backbone's embedding size");
  refused(forge(path, "layers.lake", [](json& h) { h["options"]["layers"] = {1, 2, 5}, h["neurons"][2]["layer"] = 5; }),
          "its options do not fit the given model: layer 5 is out of range");
  refused(forge(path, "block.lake", [](json& h) { h["neurons"][0]["layer"] = 2; }),
          "neuron layer 0 (block 2) is for block 2, expected block 1");
  refused(forge(path, "shots.lake", [](json& h) { h["shots"] = 0; }),
          "holds 3 neuron layers and 3 galleries, expected 0 (a zero-shot model)");
  refused(forge(path, "channels.lake", [](json& h) { h["channels"] = 512; }),
          "its neurons are for 512 channels, but the model taps residual activations of 128 channels");
  refused(forge(path, "index.lake", [](json&) {},
                [](Tensors& t) { t["neurons.1.indices"] = t["neurons.1.indices"].clone().fill_(-3); }),
          "has neuron indices in [-3, -3], expected [0, 128)");
  refused(forge(path, "fingerprint.lake", [](json& h) { h["backbone"]["weights_fingerprint"] = "0123456789abcdef"; }),
          "was fitted with a different backbone (weights fingerprint 0123456789abcdef");
  refused(forge(path, "heads.lake", [](json& h) { h["backbone"]["vision_heads"] = 4; }),
          "vision_heads = 4; the given model");
  refused(forge(path, "sigma.lake", [](json& h) { h["options"]["blur_sigma"] = -1.0; }),
          "'options.blur_sigma' is -1, expected a finite number >= 0");

  const std::string zero = scratch("zero.lake");
  fitted(clip, 0).save(zero);
  refused(forge(zero, "no_text.lake", [](json& h) { h["text_embeddings"] = false; },
                [](Tensors& t) { t.erase("text_embeddings"); }),
          "is a zero-shot model without text embeddings");

  // Lies the checksum alone catches, and a file cut short.
  auto file = lake::detail::read_safetensors(path);
  json h = json::parse(file.metadata.at(lake::detail::kNormalityMetadataKey));
  h["options"]["text_weight"] = 0.5;
  const std::string edited = scratch("edited.lake");
  lake::detail::write_safetensors(edited, file.tensors, {{lake::detail::kNormalityMetadataKey, h.dump()}});
  refused(edited, clip, "is corrupted: its checksum does not match its contents");
  const std::string cut = scratch("cut.lake");
  {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() - 7);
  }
  refused(cut, clip, "is truncated or corrupted");
}

}  // namespace normality_io_test
