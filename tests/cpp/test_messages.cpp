// The message machinery: detail/format.h's formatters print torch types as c10's operator<<
// does (the reference: c10 itself), and every entry point that takes a (B, 3, H, W) batch
// reports a bad one with the one message of detail/image_batch.h (the expected texts are
// written out here in full).
#include <lake/clip_model.h>
#include <lake/neuron_probe.h>
#include <lake/normality_model.h>

#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "detail/format.h"
#include "detail/image_batch.h"
#include "fixtures.h"

using lake::test::fixture;

namespace {

template <typename T>
std::string streamed(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// The message of what `f` throws (c10::Error, without the backtrace); "" if nothing.
template <typename F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

}  // namespace

TEST_CASE("format.h prints torch types as c10's operator<< does", "[messages]") {
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{}, {7}, {2, 3}, {1, 3, 224, 224}, {-1, 0}}) {
    const at::IntArrayRef ref(shape);
    CHECK(fmt::format("{}", ref) == streamed(ref));
  }
  CHECK(fmt::format("{}", at::zeros({2, 3}).sizes()) == "[2, 3]");
  for (auto t : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kByte, at::kLong, at::kInt, at::kBool}) {
    CHECK(fmt::format("{}", t) == streamed(t));
    const caffe2::TypeMeta meta = c10::scalarTypeToTypeMeta(t);
    CHECK(fmt::format("{}", meta) == streamed(meta));
  }
  CHECK(fmt::format("{}", at::kFloat) == "Float");
  for (const c10::Device& d : {c10::Device("cpu"), c10::Device("cuda"), c10::Device("cuda:1"), c10::Device("meta")})
    CHECK(fmt::format("{}", d) == streamed(d));
  for (auto t : {c10::DeviceType::CPU, c10::DeviceType::CUDA, c10::DeviceType::Meta})
    CHECK(fmt::format("{}", t) == streamed(t));
  CHECK(fmt::format("{:>6}|", at::kLong) == "  Long|");  // string specs apply
}

TEST_CASE("image_batch_message: the one text", "[messages]") {
  using lake::detail::image_batch_message;
  CHECK(image_batch_message({"NormalityModel.fit", "normal_images", 'k'}, "a non-empty batch of ", " with 3 (RGB) channels",
                            "x") == "NormalityModel.fit(normal_images): expected a non-empty batch of (k, 3, H, W) "
                                    "images with 3 (RGB) channels, got x");
}

TEST_CASE("every entry point taking a (B, 3, H, W) batch reports a bad one the same way", "[messages][bad-input]") {
  lake::ClipModel clip = lake::load_clip(fixture("tiny_export.pt"));
  lake::NeuronProbe probe(clip, {{1}, lake::ProbeKind::Residual, -1});
  lake::NormalityOptions o;
  o.k = 16;
  lake::NormalityModel unfitted(clip, o), model(clip, o);
  at::manual_seed(3);
  model.fit(at::randn({1, 3, 32, 32}));

  struct Entry {
    std::string name, arg;
    char batch;
    std::function<void(const at::Tensor&)> call;
  };
  const std::vector<Entry> entries = {
      {"encode_image", "images", 'B', [&](const at::Tensor& x) { clip.encode_image(x); }},
      {"ClipModel.forward_vision", "images", 'B', [&](const at::Tensor& x) { clip.forward_vision(x, {}); }},
      {"NeuronProbe", "images", 'B', [&](const at::Tensor& x) { probe(x); }},
      {"NormalityModel.fit", "normal_images", 'k', [&](const at::Tensor& x) { unfitted.fit(x); }},
      {"NormalityModel.score", "images", 'B', [&](const at::Tensor& x) { model.score(x); }},
      {"NormalityModel.calibrate", "normal_images", 'B', [&](const at::Tensor& x) { model.calibrate(x, 0.99, false); }},
  };
  for (const Entry& e : entries) {
    CAPTURE(e.name);
    const std::string who = fmt::format("{}({}): expected ", e.name, e.arg);
    const std::string shape = fmt::format("({}, 3, H, W) images", e.batch);
    CHECK(message_of([&] { e.call(at::Tensor()); }) == who + shape + ", got an undefined tensor");
    CHECK(message_of([&] { e.call(at::randn({2, 3, 32})); }) == who + shape + ", got a tensor of shape [2, 3, 32]");
    CHECK(message_of([&] { e.call(at::randn({1, 1, 32, 32})); }) ==
          who + shape + " with 3 (RGB) channels, got shape [1, 1, 32, 32]");
    CHECK(message_of([&] { e.call(at::zeros({1, 3, 32, 32}, at::kByte)); }) ==
          who + "floating-point (CLIP-normalised) " + shape + ", got dtype Byte");
    CHECK(message_of([&] { e.call(at::zeros({1, 3, 0, 32})); }) ==
          who + shape + " with H, W >= 1, got shape [1, 3, 0, 32]");
    if (e.batch == 'B')  // fit takes k = 0 (zero-shot)
      CHECK(message_of([&] { e.call(at::randn({0, 3, 32, 32})); }) ==
            who + "a non-empty batch of " + shape + ", got shape [0, 3, 32, 32]");
  }
  // explain takes one image, (3, H, W) or (1, 3, H, W): the batch rule past its own count check.
  CHECK(message_of([&] { model.explain(at::zeros({3, 32, 32}, at::kByte)); }) ==
        "NormalityModel.explain(image): expected floating-point (CLIP-normalised) (B, 3, H, W) images, got dtype Byte");
  CHECK(message_of([&] { model.explain(at::randn({1, 2, 32, 32})); }) ==
        "NormalityModel.explain(image): expected (B, 3, H, W) images with 3 (RGB) channels, got shape [1, 2, 32, 32]");
}
