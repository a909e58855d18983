// NormalityModel: lifecycle, determinism, save/load and its failure modes. The numeric
// agreement with an independent reference is in tests/python/test_normality_reference.py.
#include <lake/image_io.h>
#include <lake/normality_model.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "fixtures.h"

using Catch::Contains;
using lake::test::fixture;
using lake::test::max_abs_diff;

namespace {

lake::NormalityModel fitted(int64_t shots, lake::NormalityOptions o = {}) {
  o.k = 16;
  o.class_name = "grid";
  lake::NormalityModel m(lake::load_clip(fixture("tiny_export.pt")), o);  // the export embeds the vocabulary
  at::manual_seed(7);
  m.fit(at::randn({shots, 3, 32, 32}));
  return m;
}

std::string temp_path(const std::string& name) { return std::string(LAKE_FIXTURES_DIR) + "/tmp_" + name; }

}  // namespace

TEST_CASE("fit resolves the options and builds per-layer galleries", "[normality]") {
  lake::NormalityModel m = fitted(2);
  CHECK((m.layers() == std::vector<int64_t>{1, 2, 3}));  // quarter points of a 3-block model
  CHECK(m.image_size() == 32);
  CHECK(m.semantic_layer() == 3);
  CHECK(m.shots() == 2);
  REQUIRE(m.galleries().size() == 3);
  CHECK(m.galleries()[0].sizes() == at::IntArrayRef({2 * 16, 16}));
  CHECK(max_abs_diff(m.galleries()[1].norm(2, 1), at::ones({32})) <= 1e-5);
  CHECK(m.text_embeddings().sizes() == at::IntArrayRef({2, 64}));
  CHECK(m.normal_prompts().size() == 42);
  CHECK(m.anomaly_prompts().size() == 35);
  CHECK(m.neurons().total() == 48);
}

TEST_CASE("scores are deterministic, batch-size and thread independent", "[normality]") {
  lake::NormalityModel m = fitted(2);
  at::manual_seed(8);
  at::Tensor x = at::randn({3, 3, 40, 56});
  lake::Prediction all = m.score(x, /*with_branches=*/true);
  CHECK(all.anomaly_map.sizes() == at::IntArrayRef({3, 40, 56}));
  CHECK(all.visual_map.sizes() == at::IntArrayRef({3, 40, 56}));
  CHECK(!all.pred_label.defined());
  for (int64_t i = 0; i < 3; ++i) CHECK(at::equal(m.score(x.slice(0, i, i + 1)).anomaly_map[0], all.anomaly_map[i]));
  lake::Prediction a, b;
  std::thread t1([&] { a = m.score(x); });
  std::thread t2([&] { b = m.score(x); });
  t1.join();
  t2.join();
  CHECK(at::equal(a.anomaly_map, all.anomaly_map));
  CHECK(at::equal(b.pred_score, all.pred_score));
}

TEST_CASE("calibrate sets thresholds from normal images; labels and masks follow", "[normality]") {
  lake::NormalityModel m = fitted(3);
  at::manual_seed(7);
  at::Tensor normal = at::randn({3, 3, 32, 32});  // the fit images, same seed
  m.calibrate(normal, 0.5, /*leave_one_out=*/true);
  REQUIRE(m.image_threshold().has_value());
  lake::Prediction p = m.score(normal);
  CHECK(p.pred_label.equal(p.pred_score > *m.image_threshold()));
  CHECK(p.pred_mask.equal(p.anomaly_map > *m.pixel_threshold()));
  REQUIRE_THROWS_WITH(m.calibrate(normal.slice(0, 0, 2), 0.9, true), Contains("expected the 3 fit images"));
  REQUIRE_THROWS_WITH(m.calibrate(normal, 1.5), Contains("quantile must lie in (0, 1]"));
}

TEST_CASE("explain ranks selected neurons by deviation", "[normality]") {
  lake::NormalityModel m = fitted(2);
  auto ex = m.explain(at::randn({3, 48, 48}) * 3, 5);
  REQUIRE(ex.size() == 5);
  for (size_t i = 1; i < ex.size(); ++i) CHECK(ex[i - 1].deviation >= ex[i].deviation);
  CHECK(ex[0].map.sizes() == at::IntArrayRef({48, 48}));
  // Bilinear upsampling interpolates between patch centres: it never exceeds the peak.
  CHECK(ex[0].map.max().item<double>() <= ex[0].deviation * (1 + 1e-6));
  CHECK(ex[0].map.max().item<double>() > 0.5 * ex[0].deviation);
}

TEST_CASE("save and load round-trip; bad files are refused", "[normality][io]") {
  lake::NormalityModel m = fitted(2);
  m.calibrate(at::randn({2, 3, 32, 32}), 0.9);
  const std::string path = temp_path("model.lake");
  m.save(path);
  lake::ClipModel clip = lake::load_clip(fixture("tiny_export.pt"));
  lake::NormalityModel back = lake::NormalityModel::load(path, clip);
  at::Tensor x = at::randn({2, 3, 32, 32});
  CHECK(at::equal(back.score(x).anomaly_map, m.score(x).anomaly_map));
  CHECK(back.image_threshold() == m.image_threshold());
  CHECK(back.neurons().layers[2].indices.equal(m.neurons().layers[2].indices));

  REQUIRE_THROWS_WITH(lake::NormalityModel::load(path, lake::load_clip(fixture("plus240_state_dict.pt"))),
                      Contains("was fitted with a different backbone"));
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string cut = temp_path("truncated.lake");
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  REQUIRE_THROWS_WITH(lake::NormalityModel::load(cut, clip), Contains("truncated or corrupted"));
  REQUIRE_THROWS_WITH(lake::NormalityModel::load(fixture("tiny_state_dict.pt"), clip),
                      Contains("not a LAKE normality model file"));
  REQUIRE_THROWS_WITH(lake::NormalityModel::load(temp_path("nope.lake"), clip), Contains("does not exist"));
  // Saving into a missing folder fails cleanly and leaves nothing behind.
  REQUIRE_THROWS_WITH(m.save(temp_path("no_such_dir/model.lake")), Contains("cannot create"));
  std::remove(cut.c_str());
  std::remove(path.c_str());
}

TEST_CASE("lifecycle and option errors", "[normality][bad-input]") {
  lake::ClipModel clip = lake::load_clip(fixture("tiny_export.pt"));
  lake::NormalityModel m(clip);
  REQUIRE_THROWS_WITH(m.score(at::randn({1, 3, 32, 32})), Contains("not fitted"));
  REQUIRE_THROWS_WITH(m.explain(at::randn({3, 32, 32})), Contains("not fitted"));
  REQUIRE_THROWS_WITH(m.save(temp_path("x.lake")), Contains("not fitted"));
  lake::NormalityOptions big;
  big.k = 129;
  REQUIRE_THROWS_WITH(lake::NormalityModel(clip, big), Contains("k = 129 neurons requested"));
  lake::NormalityOptions bad_layer;
  bad_layer.layers = {7};
  REQUIRE_THROWS_WITH(lake::NormalityModel(clip, bad_layer), Contains("layer 7 is out of range"));
  lake::NormalityOptions bad_size;
  bad_size.image_size = 30;
  REQUIRE_THROWS_WITH(lake::NormalityModel(clip, bad_size), Contains("multiple of the patch size 8"));
  REQUIRE_THROWS_WITH(m.fit(at::randn({3, 32, 32})), Contains("expected (k, 3, H, W)"));
  lake::NormalityModel ok = fitted(1);
  REQUIRE_THROWS_WITH(ok.score(at::randn({0, 3, 32, 32})), Contains("non-empty batch"));
  REQUIRE_THROWS_WITH(ok.score(at::randn({1, 1, 32, 32})), Contains("expected (B, 3, H, W)"));
  // No vocabulary: a plain state dict has none embedded.
  lake::NormalityModel no_vocab(lake::load_clip(fixture("tiny_state_dict.pt")));
  REQUIRE_THROWS_WITH(no_vocab.fit(at::randn({1, 3, 32, 32})), Contains("needs a BPE vocabulary"));
}

TEST_CASE("zero-shot: fit on no images uses the semantic branch alone", "[normality]") {
  lake::NormalityModel m(lake::load_clip(fixture("tiny_export.pt")));
  m.fit(at::empty({0, 3, 32, 32}));
  CHECK(m.is_fitted());
  CHECK(m.shots() == 0);
  lake::Prediction p = m.score(at::randn({1, 3, 32, 32}), true);
  CHECK(!p.visual_map.defined());
  CHECK(at::equal(p.anomaly_map, p.semantic_map));
  REQUIRE_THROWS_WITH(m.explain(at::randn({3, 32, 32})), Contains("zero-shot"));
}

TEST_CASE("image files: one rule (prepare_image), maps at the file's resolution", "[normality][files]") {
  at::manual_seed(11);
  std::vector<std::string> normal, test;
  for (int i = 0; i < 2; ++i) {
    normal.push_back(temp_path("files_normal_" + std::to_string(i) + ".png"));
    lake::write_png(normal.back(), at::randint(0, 256, {3, 40, 56}, at::kByte));
  }
  for (int i = 0; i < 2; ++i) {
    test.push_back(temp_path("files_test_" + std::to_string(i) + ".png"));
    lake::write_png(test.back(), at::randint(0, 256, {3, 40, 56}, at::kByte));
  }
  const std::string other = temp_path("files_other.png");
  lake::write_png(other, at::randint(0, 256, {3, 24, 24}, at::kByte));

  lake::NormalityOptions o;
  o.k = 16;
  o.class_name = "grid";
  lake::ClipModel clip = lake::load_clip(fixture("tiny_export.pt"));
  lake::NormalityModel by_files(clip, o), by_tensor(clip, o);
  by_files.fit_files(normal);
  // The tensor route with the same backbone input: the prepared pixels at S x S.
  std::vector<at::Tensor> xs;
  for (const auto& p : normal) xs.push_back(by_files.prepare(p).pixels);
  by_tensor.fit(at::stack(xs));
  for (size_t l = 0; l < by_files.galleries().size(); ++l)
    CHECK(at::equal(by_files.galleries()[l], by_tensor.galleries()[l]));

  lake::Prediction both = by_files.score_files(test, /*with_branches=*/true);
  CHECK(both.anomaly_map.sizes() == at::IntArrayRef({2, 40, 56}));
  CHECK(both.visual_map.sizes() == at::IntArrayRef({2, 40, 56}));
  for (int64_t i = 0; i < 2; ++i) {  // one file at a time: bit for bit the same
    lake::Prediction one = by_files.score_files({test[static_cast<size_t>(i)]});
    CHECK(at::equal(one.anomaly_map[0], both.anomaly_map[i]));
    CHECK(at::equal(one.pred_score[0], both.pred_score[i]));
  }
  // A file of S x S pixels and its prepared pixels as a tensor: the same maps, bit for bit.
  const std::string at_s = temp_path("files_at_s.png");
  lake::write_png(at_s, at::randint(0, 256, {3, 32, 32}, at::kByte));
  lake::Prediction file_s = by_files.score_files({at_s});
  lake::Prediction tensor_s = by_files.score(by_files.prepare(at_s).pixels.unsqueeze(0));
  CHECK(at::equal(file_s.anomaly_map, tensor_s.anomaly_map));

  REQUIRE_THROWS_WITH(by_files.score_files({test[0], other}), Contains("score files of different sizes in separate calls"));
  REQUIRE_THROWS_WITH(by_files.score_files({}), Contains("expected at least one image file"));
  REQUIRE_THROWS_WITH(by_files.score_files({temp_path("files_missing.png")}), Contains("does not exist"));

  // calibrate_files: the quantiles of the files' scores and map values (each at its size).
  by_files.calibrate_files({test[0], other}, 0.5);
  lake::Prediction a = by_files.score_files({test[0]}), b = by_files.score_files({other});
  const double s0 = a.pred_score[0].item<double>(), s1 = b.pred_score[0].item<double>();
  CHECK(*by_files.image_threshold() == Approx(0.5 * (s0 + s1)).epsilon(1e-12));
  at::Tensor values = std::get<0>(at::cat({a.anomaly_map.reshape(-1), b.anomaly_map.reshape(-1)}).to(at::kDouble).sort());
  const int64_t n = values.numel();
  const double pos = 0.5 * static_cast<double>(n - 1);
  const auto lo = static_cast<int64_t>(pos);
  const double want = values[lo].item<double>() + (values[lo + 1].item<double>() - values[lo].item<double>()) * (pos - lo);
  CHECK(*by_files.pixel_threshold() == Approx(want).epsilon(1e-12));
  by_files.calibrate_files(normal, 0.99, /*leave_one_out=*/true);
  CHECK(by_files.image_threshold().has_value());
  REQUIRE_THROWS_WITH(by_files.calibrate_files({normal[0]}, 0.99, true), Contains("expected the 2 fit images"));

  std::vector<lake::NeuronDeviation> why = by_files.explain_file(test[0], 3);
  REQUIRE(why.size() == 3);
  CHECK(why[0].map.sizes() == at::IntArrayRef({40, 56}));
  by_files.fit_files({});
  CHECK(by_files.shots() == 0);
  for (const auto& p : normal) std::remove(p.c_str());
  for (const auto& p : test) std::remove(p.c_str());
  for (const auto& p : {other, at_s}) std::remove(p.c_str());
}
