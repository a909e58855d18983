// Untrusted files: TorchScript archives read without torch::jit::load (the reference here,
// in the test only), and every reader limit (src/detail/limits.h) an error naming the file
// and the limit. Peak memory is measured by tests/python/test_untrusted.py, one process per bomb.
#include <lake/clip_model.h>
#include <lake/image_io.h>
#include <lake/tokenizer.h>

#include <caffe2/serialize/inline_container.h>
#include <torch/script.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "detail/clip_archive.h"
#include "detail/limits.h"
#include "detail/torch_pickle.h"
#include "fixtures.h"

using Catch::Contains;
using lake::test::fixture;
using namespace std::string_literals;  // "..."s keeps embedded NULs

namespace limits_test {

std::string scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / "lake_test_limits";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

// A zip laid out as torch.save lays it out, with the given records.
std::string torch_zip(const std::string& name, const std::map<std::string, std::string>& records) {
  const std::string path = scratch(name);
  caffe2::serialize::PyTorchStreamWriter w(path);
  for (const auto& [record, data] : records) w.writeRecord(record, data.data(), data.size());
  w.writeEndOfFile();
  return path;
}

}  // namespace limits_test

TEST_CASE("TorchScript archives: the code-free reader gives torch::jit::load's tensors", "[limits][clip]") {
  for (const char* name : {"tiny_openai_jit_fp16.pt", "tiny_openai_jit_fp32.pt", "tiny_export.pt"}) {
    INFO(name);
    const lake::detail::RawArchive raw = lake::detail::read_archive(fixture(name));
    torch::jit::Module ref = torch::jit::load(fixture(name), c10::Device(c10::kCPU));
    std::map<std::string, at::Tensor> expected;
    for (const auto& p : ref.named_parameters(true)) expected[p.name] = p.value;
    for (const auto& b : ref.named_buffers(true)) expected.emplace(b.name, b.value);
    REQUIRE(raw.tensors.size() == expected.size());
    for (const auto& [k, v] : expected) {
      INFO(k);
      REQUIRE(raw.tensors.count(k) == 1);
      const at::Tensor& t = raw.tensors.at(k);
      CHECK(t.scalar_type() == v.scalar_type());
      CHECK(t.sizes() == v.sizes());
      CHECK(at::equal(t, v));
    }
  }
}

TEST_CASE("pickles: depth, cycles and storages are bounded", "[limits]") {
  using limits_test::torch_zip;
  const std::string deep = torch_zip("deep.pt", {{"data.pkl", "\x80\x02)" + std::string(1000000, '\x85') + "."}});
  REQUIRE_THROWS_AS(lake::load_clip(deep), c10::ValueError);
  REQUIRE_THROWS_WITH(lake::load_clip(deep), Contains("deep.pt") && Contains("pickle nesting depth limit of 512"));

  const std::string cycle = torch_zip("cycle.pt", {{"data.pkl", "\x80\x02]q\x00h\x00" "a."s}});
  REQUIRE_THROWS_AS(lake::load_clip(cycle), c10::ValueError);
  REQUIRE_THROWS_WITH(lake::load_clip(cycle), Contains("cycle.pt") && Contains("reference cycle"));

  // 2^20 + 1 values pushed (Nones, popped again)
  std::string many = "\x80\x02";
  for (int64_t k = 0; k <= lake::detail::limits::kMaxPickleElements; ++k) many += "N0";
  const std::string crowded = torch_zip("crowded.pt", {{"data.pkl", many + "}."}});
  REQUIRE_THROWS_WITH(lake::load_clip(crowded), Contains("crowded.pt") && Contains("pickle element limit"));
}

TEST_CASE("tensors: a view may not leave or outgrow its storage", "[limits]") {
  // {'visual.conv1.weight': _rebuild_tensor_v2(storage('0', FloatStorage, numel), 0, sizes, strides, False, OrderedDict())}
  auto state_dict = [](int64_t numel, const std::string& sizes, const std::string& strides) {
    std::string p = "\x80\x02}X\x13\x00\x00\x00visual.conv1.weightctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
                    "ctorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpu\x8a\x08"s;
    for (int k = 0; k < 8; ++k) p += static_cast<char>((static_cast<uint64_t>(numel) >> (8 * k)) & 0xff);
    p += "tQK\x00"s + sizes + strides + "\x89" "ccollections\nOrderedDict\n)RtRs."s;
    return p;
  };
  const std::string four(4, '\0');
  const std::string big = "(\x8a\x03\x40\x42\x0f\x8a\x03\x40\x42\x0ft"s;  // (1000000, 1000000)
  const std::string claims = limits_test::torch_zip(
      "claims.pt", {{"data.pkl", state_dict(1000000000000LL, big, "(\x8a\x03\x40\x42\x0fK\x01t"s)}, {"data/0", four}});
  REQUIRE_THROWS_AS(lake::load_clip(claims), c10::ValueError);
  REQUIRE_THROWS_WITH(lake::load_clip(claims), Contains("a storage claims 1000000000000 elements") &&
                                                   Contains("holds 4 bytes"));
  const std::string expanded =
      limits_test::torch_zip("expanded.pt", {{"data.pkl", state_dict(1, big, "(K\x00K\x00t"s)}, {"data/0", four}});
  REQUIRE_THROWS_WITH(lake::load_clip(expanded), Contains("expanded.pt") && Contains("tensor-vs-storage limit"));
  const std::string outside =
      limits_test::torch_zip("outside.pt", {{"data.pkl", state_dict(1, "(K\x02t"s, "(K\x01t"s)}, {"data/0", four}});
  REQUIRE_THROWS_WITH(lake::load_clip(outside), Contains("outside.pt") && Contains("reaches past its storage"));
}

TEST_CASE("images and vocabularies: bombs are refused before allocation", "[limits]") {
  // A PNG header of 100000 x 100000 (IHDR with a valid CRC).
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  std::string ihdr = "IHDR" + be32(100000) + be32(100000) + std::string("\x08\x02\x00\x00\x00", 5);
  const uint32_t crc = crc32(0, reinterpret_cast<const Bytef*>(ihdr.data()), ihdr.size());
  const std::string png_path = limits_test::scratch("huge.png");
  std::ofstream(png_path, std::ios::binary) << "\x89PNG\r\n\x1a\n" << be32(13) << ihdr << be32(crc);
  REQUIRE_THROWS_AS(lake::read_image(png_path), c10::ValueError);
  REQUIRE_THROWS_WITH(lake::read_image(png_path), Contains("huge.png") && Contains("max_pixels"));

  // 128 MB of zeros gzip-compressed (about 128 KB): past the vocabulary size limit.
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string gz, zeros(1 << 20, '\0');
  std::vector<char> buf(1 << 16);
  for (int k = 0; k < 128; ++k) {
    zs.next_in = reinterpret_cast<Bytef*>(&zeros[0]);
    zs.avail_in = static_cast<uInt>(zeros.size());
    const int flush = k == 127 ? Z_FINISH : Z_NO_FLUSH;
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf.data());
      zs.avail_out = static_cast<uInt>(buf.size());
      deflate(&zs, flush);
      gz.append(buf.data(), buf.size() - zs.avail_out);
    } while (zs.avail_out == 0);
  }
  deflateEnd(&zs);
  REQUIRE_THROWS_AS(lake::Tokenizer::from_bytes(gz, "bomb.gz"), c10::ValueError);
  REQUIRE_THROWS_WITH(lake::Tokenizer::from_bytes(gz, "bomb.gz"), Contains("bomb.gz") && Contains("vocabulary size limit"));
}
