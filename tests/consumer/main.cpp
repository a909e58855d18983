// Loads a CLIP archive through the installed LAKE package and prints an embedding's shape.
#include <lake/lake.h>

#include <ATen/ATen.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: lake_consumer CLIP_ARCHIVE\n";
    return 2;
  }
  try {
    lake::ClipModel model = lake::load_clip(argv[1]);
    const auto& c = model.config();
    at::Tensor images = at::randn({2, 3, c.image_size, c.image_size});
    at::Tensor e = model.encode_image(images);
    std::cout << c.describe() << "\nembedding (" << e.size(0) << ", " << e.size(1) << ")\n";
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
