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

#include <fstream>
#include <iostream>
#include <iterator>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt [IMAGE_TENSOR.pt]\n";
    return 2;
  }
  try {
    lake::set_num_threads(0);
    lake::ClipModel model = lake::load_clip(argv[1]);
    const lake::ClipConfig& c = model.config();
    std::cout << "loaded " << c.describe() << "\n";

    at::Tensor images;
    if (argc > 2) {
      std::ifstream in(argv[2], std::ios::binary);
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      images = torch::jit::pickle_load(bytes).toTensor();
    } else {
      images = at::randn({2, 3, c.image_size, c.image_size});
    }
    std::cout << "image embedding " << model.encode_image(images).sizes() << "\n";

    const int64_t L = c.vision_layers;
    lake::NeuronProbe probe(model, {{L / 2, -1}, lake::ProbeKind::Residual, /*project_layer=*/-1});
    lake::ProbeResult r = probe(images);
    for (size_t i = 0; i < r.layers.size(); ++i) {
      // The channels that vary most over this batch's patches: LAKE's "sensitive neurons".
      at::Tensor var = r.activations[i].flatten(0, 1).var(0);
      at::Tensor top = std::get<0>(std::get<1>(var.topk(10)).sort());
      std::cout << "block " << r.layers[i] << ": patch tokens " << r.activations[i].sizes()
                << ", top-10 variance channels over these images [";
      for (int64_t j = 0; j < top.numel(); ++j) std::cout << (j ? ", " : "") << top[j].item<int64_t>();
      std::cout << "]\n";
    }
    std::cout << "projected patch tokens " << r.projected.sizes() << " on a " << r.grid_h << "x" << r.grid_w
              << " grid\n";
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
