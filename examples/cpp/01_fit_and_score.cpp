// Fit a LAKE normality model on a few normal images, calibrate it, score a test split.
//
//   01_fit_and_score MODEL.pt DATA_DIR [CATEGORY=grid] [SHOTS=7] [IMAGE_SIZE=0] [OUT.lake]
//
// DATA_DIR is an MVTec-style folder (<category>/train/good, <category>/test/<defect>,
// <category>/ground_truth/<defect>/<stem>_mask.png). Fits, calibrates, saves the model to
// OUT.lake (default: <category>.lake in the working folder), loads it back, scores the test
// split with the loaded model and computes the metrics with lake::metrics. Prints the same
// lines as examples/python/01_fit_and_score.py (its Python twin, which also writes heatmap
// PNGs): `fit: ...`, `calibrate: ...`, one `defect/name score label` line per test image
// (here also the map's size and the sequential double sum of its values), then the image
// AUROC (and here the pixel metrics). IMAGE_SIZE 0 = the library's default. Files go through
// NormalityModel's *_files methods: the rule every entry point (Python, `lake`) shares.
#include <lake/image_io.h>
#include <lake/lake.h>

#include <ATen/ATen.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
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

std::vector<std::string> strings(const std::vector<fs::path>& files) {
  std::vector<std::string> out;
  for (const auto& f : files) out.push_back(f.string());
  return out;
}

// The ground-truth mask of a test image at height x width (zeros for "good"), or undefined.
at::Tensor mask_for(const fs::path& cat, const std::string& defect, const fs::path& image, int64_t height,
                    int64_t width) {
  if (defect == "good") return at::zeros({height, width}, at::kBool);
  const std::string stem = image.stem().string();
  for (const std::string& name : {fmt::format("{}_mask.png", stem), fmt::format("{}.png", stem)}) {
    const fs::path p = cat / "ground_truth" / defect / name;
    if (fs::exists(p)) {
      at::Tensor m = lake::read_mask(p.string());
      return m.size(0) == height && m.size(1) == width ? m : lake::resize_mask(m, height, width);
    }
  }
  return {};
}

// A fingerprint of a map's values: their sum in double, in memory order (numpy's
// np.cumsum(map.astype(float64))[-1] is the same sequential sum).
double sequential_sum(const at::Tensor& map) {
  const at::Tensor m = map.contiguous();
  const float* p = m.data_ptr<float>();
  double sum = 0;
  for (int64_t i = 0; i < m.numel(); ++i) sum += p[i];
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: {} MODEL.pt DATA_DIR [CATEGORY=grid] [SHOTS=7] [IMAGE_SIZE=0]\n", argv[0]);
    return 2;
  }
  try {
    lake::set_num_threads(0);
    const std::string category = argc > 3 ? argv[3] : "grid";
    const int64_t shots = argc > 4 ? std::stoll(argv[4]) : 7;
    const int64_t image_size = argc > 5 ? std::stoll(argv[5]) : 0;
    const std::string out = argc > 6 ? std::string(argv[6]) : fmt::format("{}.lake", category);
    const fs::path cat = fs::path(argv[2]) / category;

    lake::ClipModel clip = lake::load_clip(argv[1]);
    fmt::print("model: {} {}\n", argv[1], clip.config().describe());

    // 1. Fit: sensitive neurons + per-layer galleries of normal patches + text embeddings.
    lake::NormalityOptions o;
    o.class_name = category;
    o.image_size = image_size;
    lake::NormalityModel model(clip, o);
    std::vector<fs::path> normal = image_files(cat / "train" / "good");
    normal.resize(std::min<size_t>(normal.size(), static_cast<size_t>(std::max<int64_t>(shots, 1))));
    auto t0 = std::chrono::steady_clock::now();
    model.fit_files(strings(normal));  // every file: backbone at S x S, maps at the file's resolution
    const double fit_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("fit: {} normal images, {} px, {} neurons, {:.1f} s\n", normal.size(), model.image_size(),
               model.neurons().total(), fit_s);

    // 2. Calibrate on the fit images, leave-one-out.
    if (normal.size() >= 2) {
      model.calibrate_files(strings(normal), 0.99, /*leave_one_out=*/true);
      fmt::print("calibrate: image threshold {:.9g}, pixel threshold {:.9g}\n", *model.image_threshold(),
                 *model.pixel_threshold());
    } else {
      fmt::print("calibrate: skipped (leave-one-out needs at least 2 normal images)\n");
    }

    // 3. Save, and load back: what a deployment would do.
    model.save(out);
    lake::NormalityModel loaded = lake::NormalityModel::load(out, clip);

    // 4. Score the test split with the loaded model, one file at a time (files may differ
    // in size); image and pixel metrics at each file's resolution.
    std::vector<std::pair<std::string, fs::path>> tests;
    std::vector<fs::path> dirs;
    for (const auto& d : fs::directory_iterator(cat / "test"))
      if (d.is_directory()) dirs.push_back(d.path());
    std::sort(dirs.begin(), dirs.end());
    for (const auto& d : dirs)
      for (const auto& f : image_files(d)) tests.emplace_back(d.filename().string(), f);
    std::vector<double> scores;
    std::vector<int> truth;
    lake::metrics::PixelMetrics pixel;
    for (const auto& [defect, file] : tests) {
      lake::Prediction p = loaded.score_files({file.string()});
      scores.push_back(p.pred_score[0].item<double>());
      truth.push_back(defect != "good");
      const char* word = !p.pred_label.defined() ? "-" : p.pred_label[0].item<bool>() ? "anomalous" : "normal";
      // score as float32 round-trips (9 digits); the map's size and sequential sum (17 digits)
      fmt::print("{}/{} {:.9g} {} map {}x{} sum {:.17g}\n", defect, file.filename().string(), scores.back(), word,
                 p.anomaly_map.size(2), p.anomaly_map.size(1), sequential_sum(p.anomaly_map[0]));
      at::Tensor mask = mask_for(cat, defect, file, p.anomaly_map.size(1), p.anomaly_map.size(2));
      if (mask.defined()) pixel.update(p.anomaly_map, mask.unsqueeze(0));
    }
    const double image_auroc = lake::metrics::auroc(at::tensor(scores, at::kDouble), at::tensor(truth, at::kInt));
    fmt::print("image AUROC: {:.4f}\n", image_auroc);
    const lake::metrics::PixelResult px = pixel.compute();
    fmt::print("pixel AUROC: {:.4f}, AUPRO: {:.4f} (model saved to {})\n", px.auroc, px.aupro, out);
  } catch (const c10::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
