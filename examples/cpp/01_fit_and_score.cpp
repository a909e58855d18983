// Fit a LAKE normality model on a few normal images, calibrate it, score a test split.
//
//   01_fit_and_score MODEL.pt DATA_DIR [CATEGORY=grid] [SHOTS=7] [IMAGE_SIZE=0] [OUT.lake]
//
// DATA_DIR is an MVTec-style folder (<category>/train/good, <category>/test/<defect>,
// <category>/ground_truth/<defect>/<stem>_mask.png). Fits, calibrates, saves the model to
// OUT.lake (default: <category>.lake in the working folder), loads it back, scores the test
// split with the loaded model and computes the metrics with lake::metrics. Prints the same
// lines as examples/python/01_fit_and_score.py (its Python twin, which also writes heatmap
// PNGs): `fit: ...`, `calibrate: ...`, one `defect/name score label` line per test image,
// then the image AUROC (and here the pixel metrics). IMAGE_SIZE 0 = the library's default.
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

// The ground-truth mask of a test image at size x size (zeros for "good"), or undefined.
at::Tensor mask_for(const fs::path& cat, const std::string& defect, const fs::path& image, int64_t size) {
  if (defect == "good") return at::zeros({size, size}, at::kBool);
  for (const std::string& name : {image.stem().string() + "_mask.png", image.stem().string() + ".png"}) {
    const fs::path p = cat / "ground_truth" / defect / name;
    if (fs::exists(p)) return lake::resize_mask(lake::read_mask(p.string()), size, size);
  }
  return {};
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
    const std::string out = argc > 6 ? argv[6] : category + ".lake";
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

    // 3. Save, and load back: what a deployment would do.
    model.save(out);
    lake::NormalityModel loaded = lake::NormalityModel::load(out, clip);

    // 4. Score the test split with the loaded model; image and pixel metrics.
    std::vector<std::pair<std::string, fs::path>> tests;
    std::vector<fs::path> dirs;
    for (const auto& d : fs::directory_iterator(cat / "test"))
      if (d.is_directory()) dirs.push_back(d.path());
    std::sort(dirs.begin(), dirs.end());
    for (const auto& d : dirs)
      for (const auto& f : image_files(d)) tests.emplace_back(d.filename().string(), f);
    std::vector<fs::path> files;
    for (const auto& t : tests) files.push_back(t.second);
    lake::Prediction p = loaded.score(load(files, clip.config(), loaded.image_size()));
    std::vector<double> scores;
    std::vector<int> truth;
    lake::metrics::PixelMetrics pixel;
    for (size_t i = 0; i < tests.size(); ++i) {
      scores.push_back(p.pred_score[static_cast<int64_t>(i)].item<double>());
      truth.push_back(tests[i].first != "good");
      const char* word = !p.pred_label.defined() ? "-" : p.pred_label[static_cast<int64_t>(i)].item<bool>() ? "anomalous" : "normal";
      std::printf("%s/%s %.6f %s\n", tests[i].first.c_str(), tests[i].second.filename().c_str(), scores.back(), word);
      at::Tensor mask = mask_for(cat, tests[i].first, tests[i].second, loaded.image_size());
      if (mask.defined()) pixel.update(p.anomaly_map.slice(0, i, i + 1), mask.unsqueeze(0));
    }
    const double image_auroc = lake::metrics::auroc(at::tensor(scores, at::kDouble), at::tensor(truth, at::kInt));
    std::printf("image AUROC: %.4f\n", image_auroc);
    const lake::metrics::PixelResult px = pixel.compute();
    std::printf("pixel AUROC: %.4f, AUPRO: %.4f (model saved to %s)\n", px.auroc, px.aupro, out.c_str());
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
