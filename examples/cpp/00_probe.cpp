// Load a CLIP archive, encode a batch of images and a sentence, and probe neurons.
//
//   00_probe MODEL.pt [IMAGE_TENSOR.pt]
//
// IMAGE_TENSOR.pt (optional) is a torch.save'd (B, 3, H, W) CLIP-normalised tensor, such
// as the one examples/python/00_probe.py writes; without it random images are used.
// Python twin: examples/python/00_probe.py.
#include <lake/lake.h>

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: {} MODEL.pt [IMAGE_TENSOR.pt]\n", argv[0]);
    return 2;
  }
  try {
    lake::set_num_threads(0);
    lake::ClipModel model = lake::load_clip(argv[1]);
    const lake::ClipConfig& c = model.config();
    fmt::print("loaded {}\n", c.describe());

    at::Tensor images;
    if (argc > 2) {
      std::ifstream in(argv[2], std::ios::binary);
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      images = torch::jit::pickle_load(bytes).toTensor();
    } else {
      images = at::randn({2, 3, c.image_size, c.image_size});
    }
    // Shapes print as [2, 64]: fmt::join over at::IntArrayRef.
    fmt::print("image embedding [{}]\n", fmt::join(model.encode_image(images).sizes(), ", "));

    const int64_t L = c.vision_layers;
    lake::NeuronProbe probe(model, {{L / 2, -1}, lake::ProbeKind::Residual, /*project_layer=*/-1});
    lake::ProbeResult r = probe(images);
    for (size_t i = 0; i < r.layers.size(); ++i) {
      // The channels that vary most over this batch's patches: LAKE's "sensitive neurons".
      at::Tensor var = r.activations[i].flatten(0, 1).var(0);
      at::Tensor top = std::get<0>(std::get<1>(var.topk(10)).sort());
      std::vector<int64_t> channels;
      for (int64_t j = 0; j < top.numel(); ++j) channels.push_back(top[j].item<int64_t>());
      fmt::print("block {}: patch tokens [{}], top-10 variance channels over these images [{}]\n", r.layers[i],
                 fmt::join(r.activations[i].sizes(), ", "), fmt::join(channels, ", "));
    }
    fmt::print("projected patch tokens [{}] on a {}x{} grid\n", fmt::join(r.projected.sizes(), ", "), r.grid_h,
               r.grid_w);
  } catch (const c10::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
