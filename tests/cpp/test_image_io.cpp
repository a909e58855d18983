// Image decoding (PNG, JPEG), masks, CLIP preprocessing. PNGs are written here byte by
// byte (zlib + CRCs), so each colour type and bit depth is checked against known pixels;
// JPEGs come from ../shared/data when it is there. PIL agreement is tested in Python.
#include <lake/image_io.h>

#include <ATen/ATen.h>
#include <zlib.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <unistd.h>

namespace image_io_test {
namespace {

using Catch::Contains;
namespace fs = std::filesystem;

using Bytes = std::vector<unsigned char>;

// A scratch folder for this process, removed at exit. The removal uses POSIX calls:
// libtorch.so exports its own std::filesystem::remove_all, which crashes at exit.
struct ScratchDir {
  fs::path path = fs::temp_directory_path() / ("lake_test_image_io_" + std::to_string(::getpid()));
  ScratchDir() { fs::create_directories(path); }
  ~ScratchDir() {
    const std::string dir = path.string();
    if (DIR* d = ::opendir(dir.c_str())) {
      while (const dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          ::unlink((dir + "/" + e->d_name).c_str());
      }
      ::closedir(d);
    }
    ::rmdir(dir.c_str());
  }
};

fs::path scratch_dir() {
  static const ScratchDir dir;
  return dir.path;
}

std::string write_bytes(const std::string& name, const Bytes& bytes) {
  const std::string path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
  return path;
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put_u32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
}

void put_chunk(Bytes& png, const char* type, const Bytes& data) {
  put_u32(png, static_cast<uint32_t>(data.size()));
  const size_t start = png.size();
  png.insert(png.end(), type, type + 4);
  png.insert(png.end(), data.begin(), data.end());
  put_u32(png, static_cast<uint32_t>(crc32(0L, png.data() + start, static_cast<uInt>(png.size() - start))));
}

struct PngSpec {
  uint32_t width = 0, height = 0;
  int bit_depth = 8, color_type = 0;
  Bytes rows;     // packed samples, big-endian, without filter bytes
  Bytes palette;  // PLTE: 3 bytes an entry
  Bytes trns;     // tRNS
};

// A non-interlaced PNG: signature, IHDR, [PLTE], [tRNS], IDAT (filter 0 on each row), IEND.
Bytes encode_png(const PngSpec& s) {
  Bytes png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Bytes ihdr;
  put_u32(ihdr, s.width);
  put_u32(ihdr, s.height);
  ihdr.insert(ihdr.end(), {static_cast<unsigned char>(s.bit_depth), static_cast<unsigned char>(s.color_type), 0, 0, 0});
  put_chunk(png, "IHDR", ihdr);
  if (!s.palette.empty()) put_chunk(png, "PLTE", s.palette);
  if (!s.trns.empty()) put_chunk(png, "tRNS", s.trns);
  if (s.height > 0) {
    const size_t stride = s.rows.size() / s.height;
    Bytes raw;
    for (uint32_t y = 0; y < s.height; ++y) {
      raw.push_back(0);
      raw.insert(raw.end(), s.rows.begin() + y * stride, s.rows.begin() + (y + 1) * stride);
    }
    uLongf n = compressBound(static_cast<uLong>(raw.size()));
    Bytes z(n);
    REQUIRE(compress(z.data(), &n, raw.data(), static_cast<uLong>(raw.size())) == Z_OK);
    z.resize(n);
    put_chunk(png, "IDAT", z);
  }
  put_chunk(png, "IEND", {});
  return png;
}

at::Tensor u8(const std::vector<int>& v, at::IntArrayRef shape) {
  return at::tensor(std::vector<int64_t>(v.begin(), v.end()), at::kLong).to(at::kByte).reshape(shape);
}

// at::tensor has no bool overload.
at::Tensor bools(const std::vector<int>& v, at::IntArrayRef shape) { return u8(v, shape).to(at::kBool); }

std::string shared_data() { return std::string(LAKE_SHARED_DIR) + "/data"; }

// The first .jpg under ../shared/data, or "" when the shared material is absent.
std::string shared_jpeg() {
  if (!fs::is_directory(shared_data())) return "";
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(shared_data()))
    if (e.path().extension() == ".jpg") found.push_back(e.path().string());
  std::sort(found.begin(), found.end());
  return found.empty() ? "" : found.front();
}

const float kMean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float kStd[3] = {0.26862954f, 0.26130258f, 0.27577711f};

TEST_CASE("PNG grey, grey+alpha, RGB, RGBA decode to (3, H, W) uint8", "[image]") {
  PngSpec grey{3, 2, 8, 0, {0, 100, 255, 128, 127, 7}};
  at::Tensor g = lake::read_image(write_bytes("grey.png", encode_png(grey)));
  REQUIRE(g.sizes() == at::IntArrayRef({3, 2, 3}));
  REQUIRE(g.scalar_type() == at::kByte);
  REQUIRE(g.is_contiguous());
  for (int c = 0; c < 3; ++c) REQUIRE(at::equal(g[c], u8({0, 100, 255, 128, 127, 7}, {2, 3})));

  PngSpec ga{2, 1, 8, 4, {10, 255, 200, 0}};
  at::Tensor a = lake::read_image(write_bytes("ga.png", encode_png(ga)));
  REQUIRE(at::equal(a, u8({10, 200, 10, 200, 10, 200}, {3, 1, 2})));

  PngSpec rgb{2, 1, 8, 2, {1, 2, 3, 4, 5, 6}};
  REQUIRE(at::equal(lake::read_image(write_bytes("rgb.png", encode_png(rgb))), u8({1, 4, 2, 5, 3, 6}, {3, 1, 2})));

  PngSpec rgba{2, 1, 8, 6, {1, 2, 3, 0, 4, 5, 6, 255}};  // alpha dropped, not composited
  REQUIRE(at::equal(lake::read_image(write_bytes("rgba.png", encode_png(rgba))), u8({1, 4, 2, 5, 3, 6}, {3, 1, 2})));
}

TEST_CASE("PNG low bit depths, palettes and 16-bit samples", "[image]") {
  // 1, 2, 4-bit grey: bit replication (0/255, x85, x17), as PIL's unpackers.
  PngSpec g1{8, 1, 1, 0, {0xA5}};
  REQUIRE(at::equal(lake::read_image(write_bytes("g1.png", encode_png(g1)))[0],
                    u8({255, 0, 255, 0, 0, 255, 0, 255}, {1, 8})));
  PngSpec g2{4, 1, 2, 0, {0x1B}};  // 00 01 10 11
  REQUIRE(at::equal(lake::read_image(write_bytes("g2.png", encode_png(g2)))[1], u8({0, 85, 170, 255}, {1, 4})));
  PngSpec g4{2, 1, 4, 0, {0x3C}};
  REQUIRE(at::equal(lake::read_image(write_bytes("g4.png", encode_png(g4)))[2], u8({51, 204}, {1, 2})));

  // Palette (4-bit indices) with transparency: looked up, transparency ignored.
  PngSpec p{3, 1, 4, 3, {0x01, 0x20}, {10, 20, 30, 40, 50, 60, 70, 80, 90}, {0, 128}};
  REQUIRE(at::equal(lake::read_image(write_bytes("pal.png", encode_png(p))),
                    u8({10, 40, 70, 20, 50, 80, 30, 60, 90}, {3, 1, 3})));

  // 16 bit: (v * 255 + 32767) / 65535.
  const std::vector<int> v16 = {0, 128, 129, 385, 386, 32767, 32768, 65406, 65407, 65535};
  PngSpec g16{static_cast<uint32_t>(v16.size()), 1, 16, 0, {}};
  std::vector<int> expect;
  for (int v : v16) {
    g16.rows.push_back(static_cast<unsigned char>(v >> 8));
    g16.rows.push_back(static_cast<unsigned char>(v & 255));
    expect.push_back(static_cast<int>((int64_t(v) * 255 + 32767) / 65535));
  }
  REQUIRE(expect == std::vector<int>({0, 0, 1, 1, 2, 127, 128, 254, 255, 255}));
  at::Tensor r16 = lake::read_image(write_bytes("g16.png", encode_png(g16)));
  for (int c = 0; c < 3; ++c) REQUIRE(at::equal(r16[c], u8(expect, {1, int64_t(v16.size())})));

  PngSpec rgb16{1, 1, 16, 2, {0x01, 0x81, 0x80, 0x00, 0xFF, 0xFF}};  // 385, 32768, 65535
  REQUIRE(at::equal(lake::read_image(write_bytes("rgb16.png", encode_png(rgb16))), u8({1, 128, 255}, {3, 1, 1})));
}

TEST_CASE("masks: first channel or PIL's luminance, above 127", "[image]") {
  PngSpec grey{4, 1, 8, 0, {0, 127, 128, 255}};
  at::Tensor m = lake::read_mask(write_bytes("mask.png", encode_png(grey)));
  REQUIRE(m.scalar_type() == at::kBool);
  REQUIRE(at::equal(m, bools({0, 0, 1, 1}, {1, 4})));

  // L = (19595 R + 38470 G + 7471 B + 32768) >> 16: (255, 0, 0) -> 76, (0, 255, 0) -> 150,
  // (128, 128, 128) -> 128, (127, 127, 128) -> 127.
  PngSpec rgb{4, 1, 8, 2, {255, 0, 0, 0, 255, 0, 128, 128, 128, 127, 127, 128}};
  REQUIRE(at::equal(lake::read_mask(write_bytes("mask_rgb.png", encode_png(rgb))),
                    bools({0, 1, 1, 0}, {1, 4})));

  PngSpec ga{2, 1, 8, 4, {200, 0, 20, 255}};  // the alpha channel does not matter
  REQUIRE(at::equal(lake::read_mask(write_bytes("mask_ga.png", encode_png(ga))), bools({1, 0}, {1, 2})));
}

TEST_CASE("bad image files: an error naming the file, no crash", "[image]") {
  REQUIRE_THROWS_WITH(lake::read_image((scratch_dir() / "nope.png").string()), Contains("nope.png' does not exist"));
  REQUIRE_THROWS_WITH(lake::read_image(scratch_dir().string()), Contains("is a directory"));
  REQUIRE_THROWS_WITH(lake::read_image(write_bytes("empty.png", {})), Contains("empty.png' is empty"));
  const std::string text = "hello, this is not an image\n";
  REQUIRE_THROWS_WITH(lake::read_image(write_bytes("text.png", Bytes(text.begin(), text.end()))),
                      Contains("text.png' is not a PNG or JPEG file"));
  REQUIRE_THROWS_WITH(lake::read_image(write_bytes("gif.png", {'G', 'I', 'F', '8', '9', 'a', 0, 0})),
                      Contains("gif.png' is a GIF file"));

  PngSpec grey{64, 64, 8, 0, Bytes(64 * 64)};
  for (size_t i = 0; i < grey.rows.size(); ++i) grey.rows[i] = static_cast<unsigned char>(i * 7919 % 251);
  const Bytes good = encode_png(grey);
  for (size_t cut : {size_t(4), size_t(8), size_t(20), good.size() / 2, good.size() - 30}) {
    const std::string name = "cut" + std::to_string(cut) + ".png";
    INFO(name);
    REQUIRE_THROWS_WITH(lake::read_image(write_bytes(name, Bytes(good.begin(), good.begin() + cut))),
                        Contains(name + "'"));
  }
  Bytes bad_crc = good;
  bad_crc[45] ^= 0x55;  // inside IDAT
  REQUIRE_THROWS_WITH(lake::read_image(write_bytes("bad_crc.png", bad_crc)), Contains("bad_crc.png' is a corrupt"));

  // A header claiming 100000 x 100000 pixels, refused before anything is allocated.
  PngSpec bomb{100000, 100000, 8, 2, {}};
  REQUIRE_THROWS_WITH(lake::read_image(write_bytes("bomb.png", encode_png(bomb))),
                      Contains("bomb.png' is a PNG of 100000x100000 = 10000000000 pixels, more than max_pixels"));
  lake::ImageReadOptions small;
  small.max_pixels = 64 * 64 - 1;
  REQUIRE_THROWS_WITH(lake::read_mask(write_bytes("small.png", good), small), Contains("small.png' is a PNG of 64x64"));
  small.max_pixels = 64 * 64;
  REQUIRE(lake::read_mask(write_bytes("small.png", good), small).sizes() == at::IntArrayRef({64, 64}));
}

TEST_CASE("JPEG from the shared data: decodes; truncated and bomb headers fail", "[image]") {
  const std::string jpg = shared_jpeg();
  if (jpg.empty()) {
    WARN("skipped: no JPEG under " << shared_data() << " (the shared test data is absent)");
    return;
  }
  at::Tensor img = lake::read_image(jpg);
  REQUIRE(img.dim() == 3);
  REQUIRE(img.size(0) == 3);
  REQUIRE(img.scalar_type() == at::kByte);
  REQUIRE(img.to(at::kFloat).std().item<float>() > 1.0f);
  REQUIRE(lake::read_mask(jpg).sizes() == img.sizes().slice(1));

  const Bytes bytes = read_bytes(jpg);
  REQUIRE_THROWS_WITH(lake::read_image(write_bytes("half.jpg", Bytes(bytes.begin(), bytes.begin() + bytes.size() / 2))),
                      Contains("half.jpg' is a corrupt or truncated JPEG"));
  REQUIRE_THROWS_WITH(lake::read_image(write_bytes("head.jpg", Bytes(bytes.begin(), bytes.begin() + 3))),
                      Contains("head.jpg' is a corrupt or truncated JPEG"));
  // The same JPEG with its frame header (SOF0/1/2) claiming 60000 x 60000 pixels.
  Bytes bomb = bytes;
  bool patched = false;
  for (size_t i = 2; i + 9 < bomb.size() && bomb[i] == 0xFF && !patched;) {
    const int marker = bomb[i + 1];
    if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) {
      bomb[i + 5] = 0xEA, bomb[i + 6] = 0x60, bomb[i + 7] = 0xEA, bomb[i + 8] = 0x60;
      patched = true;
    }
    i += 2 + (size_t(bomb[i + 2]) << 8 | bomb[i + 3]);  // marker, then its segment
  }
  REQUIRE(patched);
  REQUIRE_THROWS_WITH(lake::read_image(write_bytes("bomb.jpg", bomb)),
                      Contains("bomb.jpg' is a JPEG of 60000x60000 = 3600000000 pixels"));
}

TEST_CASE("decoding from several threads at once", "[image]") {
  PngSpec rgb{300, 200, 8, 2, Bytes(300 * 200 * 3)};
  for (size_t i = 0; i < rgb.rows.size(); ++i) rgb.rows[i] = static_cast<unsigned char>(i * 31 % 256);
  const std::string png = write_bytes("threads.png", encode_png(rgb));
  const std::string jpg = shared_jpeg();
  const at::Tensor ref_png = lake::read_image(png);
  const at::Tensor ref_jpg = jpg.empty() ? at::Tensor() : lake::read_image(jpg);
  const std::string bad = write_bytes("threads_bad.png", {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0});
  std::vector<int> ok(8, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {  // no Catch assertions in threads: Catch2 is not thread-safe
      bool good = true;
      for (int k = 0; k < 5; ++k) {
        good = good && at::equal(lake::read_image(png), ref_png);
        if (!jpg.empty()) good = good && at::equal(lake::read_image(jpg), ref_jpg);
        try {
          lake::read_image(bad);
          good = false;
        } catch (const c10::Error&) {
        }
      }
      ok[t] = good;
    });
  }
  for (auto& th : threads) th.join();
  REQUIRE(ok == std::vector<int>(8, 1));
}

TEST_CASE("clip_preprocess: shapes, constant images, centre crop, bad input", "[image]") {
  // A constant image stays constant through any resize: ((v / 255) - mean) / std.
  at::Tensor flat = at::full({3, 50, 80}, 200, at::kByte);
  for (bool crop : {false, true}) {
    at::Tensor x = lake::clip_preprocess(flat, 32, kMean, kStd, crop);
    REQUIRE(x.sizes() == at::IntArrayRef({3, 32, 32}));
    REQUIRE(x.scalar_type() == at::kFloat);
    for (int c = 0; c < 3; ++c) {
      const float expect = (200.0f / 255.0f - kMean[c]) / kStd[c];
      REQUIRE((x[c] - expect).abs().max().item<float>() < 1e-6f);
    }
  }
  // Same size, no crop: no resampling at all.
  at::Tensor noise = at::randint(0, 256, {3, 16, 16}, at::kByte);
  at::Tensor same = lake::clip_preprocess(noise, 16, kMean, kStd);
  at::Tensor back = (same * at::tensor(std::vector<float>(kStd, kStd + 3)).view({3, 1, 1}) +
                     at::tensor(std::vector<float>(kMean, kMean + 3)).view({3, 1, 1})) * 255;
  REQUIRE((back - noise.to(at::kFloat)).abs().max().item<float>() < 1e-3f);

  // Centre crop of a 16 x 48 image at its own height keeps columns 16..31 exactly.
  at::Tensor wide = at::zeros({3, 16, 48}, at::kByte);
  wide.narrow(2, 16, 16).fill_(255);
  at::Tensor crop = lake::clip_preprocess(wide, 16, kMean, kStd, /*center_crop=*/true);
  REQUIRE(crop.sizes() == at::IntArrayRef({3, 16, 16}));
  for (int c = 0; c < 3; ++c)
    REQUIRE((crop[c] - (1.0f - kMean[c]) / kStd[c]).abs().max().item<float>() < 1e-5f);
  // torchvision's offset round((49 - 16) / 2) = round(16.5) = 16 (ties to even): same columns.
  at::Tensor odd = at::zeros({3, 16, 49}, at::kByte);
  odd.narrow(2, 16, 16).fill_(255);
  REQUIRE(at::allclose(lake::clip_preprocess(odd, 16, kMean, kStd, true), crop));

  REQUIRE_THROWS_WITH(lake::clip_preprocess(at::zeros({16, 16, 3}, at::kByte), 8, kMean, kStd),
                      Contains("expected a (3, H, W) RGB image, got [16, 16, 3]"));
  REQUIRE_THROWS_WITH(lake::clip_preprocess(at::zeros({3, 16, 16}), 8, kMean, kStd), Contains("expected a uint8 image"));
  REQUIRE_THROWS_WITH(lake::clip_preprocess(at::zeros({3, 0, 16}, at::kByte), 8, kMean, kStd), Contains("non-empty"));
  REQUIRE_THROWS_WITH(lake::clip_preprocess(flat, 0, kMean, kStd), Contains("size must be positive, got 0"));
  const float zero[3] = {0.2f, 0.0f, 0.2f};
  REQUIRE_THROWS_WITH(lake::clip_preprocess(flat, 8, kMean, zero), Contains("std[1] = 0"));
}

TEST_CASE("resize_mask: nearest neighbour at pixel centres", "[image]") {
  at::Tensor m = bools({1, 0, 0, 1, 1, 0}, {2, 3});
  REQUIRE(at::equal(lake::resize_mask(m, 2, 3), m));
  // Doubling repeats each pixel twice.
  REQUIRE(at::equal(lake::resize_mask(m, 4, 6), m.repeat_interleave(2, 0).repeat_interleave(2, 1)));
  // 6 -> 3 columns take the centres: columns 1, 3, 5 of the doubled mask = the original.
  REQUIRE(at::equal(lake::resize_mask(m.repeat_interleave(2, 1), 2, 3), m));
  // 3 -> 2: centres 0.75 and 2.25 -> columns 0 and 2.
  REQUIRE(at::equal(lake::resize_mask(m, 2, 2), m.index_select(1, at::tensor({0, 2}, at::kLong))));
  REQUIRE_THROWS_WITH(lake::resize_mask(m.to(at::kByte), 4, 4), Contains("expected a bool mask"));
  REQUIRE_THROWS_WITH(lake::resize_mask(m[0], 4, 4), Contains("expected a (H, W) bool mask, got [3]"));
  REQUIRE_THROWS_WITH(lake::resize_mask(m, 0, 4), Contains("positive output size, got 0x4"));
}

TEST_CASE("write_png: round trips through read_image; atomic; bad input", "[image][write]") {
  at::manual_seed(3);
  const std::string rgb_path = (scratch_dir() / "written_rgb.png").string();
  at::Tensor rgb = at::randint(0, 256, {3, 17, 29}, at::kByte);
  lake::write_png(rgb_path, rgb);
  REQUIRE(at::equal(lake::read_image(rgb_path), rgb));
  // Grey uint8: replicated to three channels on reading; uint16: scaled as the reader scales.
  const std::string grey_path = (scratch_dir() / "written_grey.png").string();
  at::Tensor grey = at::randint(0, 256, {9, 5}, at::kByte);
  lake::write_png(grey_path, grey);
  REQUIRE(at::equal(lake::read_image(grey_path), grey.unsqueeze(0).expand({3, 9, 5})));
  const std::string wide_path = (scratch_dir() / "written_16.png").string();
  at::Tensor wide = at::tensor(std::vector<int32_t>{0, 1, 128, 255, 256, 32767, 32768, 65534, 65535, 40000}).view({2, 5});
  lake::write_png(wide_path, wide.to(at::kUInt16));
  at::Tensor want = ((wide.to(at::kLong) * 255 + 32767) / 65535).to(at::kByte);
  REQUIRE(at::equal(lake::read_image(wide_path)[0], want));
  // A non-contiguous view is written as its values.
  lake::write_png(rgb_path, rgb.transpose(1, 2));
  REQUIRE(at::equal(lake::read_image(rgb_path), rgb.transpose(1, 2).contiguous()));

  REQUIRE_THROWS_WITH(lake::write_png(rgb_path, at::zeros({4, 8, 8}, at::kByte)),
                      Contains("expected a (H, W) grey or (3, H, W) RGB image for '" + rgb_path));
  REQUIRE_THROWS_WITH(lake::write_png(rgb_path, at::zeros({3, 8, 8})), Contains("expected uint8 pixels"));
  REQUIRE_THROWS_WITH(lake::write_png(rgb_path, at::zeros({3, 8, 8}, at::kUInt16)), Contains("expected uint8 pixels"));
  REQUIRE_THROWS_WITH(lake::write_png(rgb_path, at::zeros({0, 8}, at::kByte)), Contains("non-empty"));
  // The earlier file is untouched by the failed writes.
  REQUIRE(at::equal(lake::read_image(rgb_path), rgb.transpose(1, 2).contiguous()));
  // A target that cannot be replaced (a folder): an error, the folder as it was, no temporary file left.
  const fs::path dir = scratch_dir() / "a_folder.png";
  fs::create_directories(dir);
  REQUIRE_THROWS_WITH(lake::write_png(dir.string(), rgb), Contains("nothing was written"));
  REQUIRE(fs::is_directory(dir));
  ::rmdir(dir.c_str());
  REQUIRE_THROWS_WITH(lake::write_png((scratch_dir() / "no" / "such" / "x.png").string(), rgb),
                      Contains("cannot create"));
  for (const auto& e : fs::directory_iterator(scratch_dir()))
    REQUIRE(e.path().string().find(".tmp.") == std::string::npos);
}

TEST_CASE("prepare_image: read_image then clip_preprocess, with the file's size", "[image]") {
  at::manual_seed(4);
  const std::string path = (scratch_dir() / "prepare.png").string();
  at::Tensor rgb = at::randint(0, 256, {3, 40, 56}, at::kByte);
  lake::write_png(path, rgb);
  lake::PreparedImage p = lake::prepare_image(path, 32, kMean, kStd);
  REQUIRE(p.height == 40);
  REQUIRE(p.width == 56);
  REQUIRE(at::equal(p.pixels, lake::clip_preprocess(rgb, 32, kMean, kStd)));
  // clip_normalize is clip_preprocess without the resize: equal on a square image at its own size.
  at::Tensor square = rgb.narrow(2, 0, 40).contiguous();
  REQUIRE(at::equal(lake::clip_normalize(square, kMean, kStd), lake::clip_preprocess(square, 40, kMean, kStd)));
  REQUIRE_THROWS_WITH(lake::clip_normalize(at::zeros({3, 4, 4}), kMean, kStd), Contains("expected a (3, H, W) uint8"));
  REQUIRE_THROWS_WITH(lake::prepare_image((scratch_dir() / "missing.png").string(), 32, kMean, kStd),
                      Contains("does not exist"));
}

}  // namespace
}  // namespace image_io_test
