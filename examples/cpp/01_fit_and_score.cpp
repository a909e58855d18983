// Fit a LAKE normality model on a few normal images, calibrate it, score a test split.
//
//   01_fit_and_score MODEL.pt DATA_DIR [CATEGORY=grid] [SHOTS=7] [IMAGE_SIZE=0]
//
// DATA_DIR is an MVTec-style folder (<category>/train/good, <category>/test/<defect>).
// Prints the same lines as examples/python/01_fit_and_score.py (its Python twin, which
// also writes heatmap PNGs): `fit: ...`, `calibrate: ...`, one `defect/name score label`
// line per test image, then the image AUROC. IMAGE_SIZE 0 = the library's default.
#include <lake/image_io.h>
#include <lake/lake.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> image_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// (B, 3, S, S) CLIP-normalised batch of image files.
at::Tensor load(const std::vector<fs::path>& files, const lake::ClipConfig& c, int64_t size) {
  std::vector<at::Tensor> xs;
  for (const auto& f : files) xs.push_back(lake::clip_preprocess(lake::read_image(f.string()), size, c.image_mean, c.image_std));
  return at::stack(xs);
}

// Mann-Whitney U: the probability that a defective image outscores a good one (ties: 1/2).
double auroc(const std::vector<double>& s, const std::vector<int>& y) {
  double wins = 0;
  int64_t pos = 0, neg = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!y[i]) continue;
    ++pos;
    for (size_t j = 0; j < s.size(); ++j)
      if (!y[j]) wins += s[i] > s[j] ? 1.0 : s[i] == s[j] ? 0.5 : 0.0;
  }
  for (int v : y) neg += !v;
  return pos && neg ? wins / static_cast<double>(pos * neg) : NAN;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt DATA_DIR [CATEGORY=grid] [SHOTS=7] [IMAGE_SIZE=0]\n";
    return 2;
  }
  try {
    lake::set_num_threads(0);
    const std::string category = argc > 3 ? argv[3] : "grid";
    const int64_t shots = argc > 4 ? std::stoll(argv[4]) : 7;
    const int64_t image_size = argc > 5 ? std::stoll(argv[5]) : 0;
    const fs::path cat = fs::path(argv[2]) / category;

    lake::ClipModel clip = lake::load_clip(argv[1]);
    std::cout << "model: " << argv[1] << " " << clip.config().describe() << "\n";

    // 1. Fit: sensitive neurons + per-layer galleries of normal patches + text embeddings.
    lake::NormalityOptions o;
    o.class_name = category;
    o.image_size = image_size;
    lake::NormalityModel model(clip, o);
    std::vector<fs::path> normal = image_files(cat / "train" / "good");
    normal.resize(std::min<size_t>(normal.size(), static_cast<size_t>(std::max<int64_t>(shots, 1))));
    at::Tensor normal_x = load(normal, clip.config(), model.image_size());
    auto t0 = std::chrono::steady_clock::now();
    model.fit(normal_x);
    const double fit_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("fit: %zu normal images, %lld px, %lld neurons, %.1f s\n", normal.size(),
                static_cast<long long>(model.image_size()), static_cast<long long>(model.neurons().total()), fit_s);

    // 2. Calibrate on the fit images, leave-one-out.
    if (normal.size() >= 2) {
      model.calibrate(normal_x, 0.99, /*leave_one_out=*/true);
      std::printf("calibrate: image threshold %.6f, pixel threshold %.6f\n", *model.image_threshold(),
                  *model.pixel_threshold());
    }

    // 3. Score the test split.
    std::vector<std::pair<std::string, fs::path>> tests;
    std::vector<fs::path> dirs;
    for (const auto& d : fs::directory_iterator(cat / "test"))
      if (d.is_directory()) dirs.push_back(d.path());
    std::sort(dirs.begin(), dirs.end());
    for (const auto& d : dirs)
      for (const auto& f : image_files(d)) tests.emplace_back(d.filename().string(), f);
    std::vector<fs::path> files;
    for (const auto& t : tests) files.push_back(t.second);
    lake::Prediction p = model.score(load(files, clip.config(), model.image_size()));
    std::vector<double> scores;
    std::vector<int> truth;
    for (size_t i = 0; i < tests.size(); ++i) {
      scores.push_back(p.pred_score[static_cast<int64_t>(i)].item<double>());
      truth.push_back(tests[i].first != "good");
      const char* word = !p.pred_label.defined() ? "-" : p.pred_label[static_cast<int64_t>(i)].item<bool>() ? "anomalous" : "normal";
      std::printf("%s/%s %.6f %s\n", tests[i].first.c_str(), tests[i].second.filename().c_str(), scores.back(), word);
    }
    std::printf("image AUROC: %.4f\n", auroc(scores, truth));
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
