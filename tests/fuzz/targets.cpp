// The fuzz targets of targets.h: each hands the bytes to one reader and catches c10::Error.
#include "targets.h"

#include "detail/clip_archive.h"
#include "detail/safetensors.h"
#include "detail/torch_pickle.h"
#include "lake/clip_config.h"
#include "lake/clip_model.h"
#include "lake/image_io.h"
#include "lake/normality_model.h"
#include "lake/tokenizer.h"

#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>

#ifndef LAKE_SHARED_DIR
#define LAKE_SHARED_DIR "../shared"
#endif
#ifndef LAKE_FIXTURES_DIR
#define LAKE_FIXTURES_DIR "build/fixtures"
#endif

namespace lake::fuzz {
namespace {

// A folder of this process's own, holding only the input files (load_clip looks beside a
// file for open_clip_config.json): /dev/shm/lake-fuzz-<pid>, else $TMPDIR/..., else /tmp/....
// Removed, with the files written into it, when the process exits normally.
struct FuzzDir {
  std::string path;
  std::set<std::string> files;
  FuzzDir() {
    std::string base = "/tmp";
    if (const char* t = std::getenv("TMPDIR"); t && *t) base = t;
    std::error_code ec;
    if (std::filesystem::is_directory("/dev/shm", ec)) base = "/dev/shm";
    path = base + "/lake-fuzz-" + std::to_string(::getpid());
    std::filesystem::create_directories(path, ec);
  }
  ~FuzzDir() {
    std::error_code ec;  // std::filesystem::remove, never remove_all (libtorch.so exports a crashing one)
    for (const std::string& f : files) std::filesystem::remove(f, ec);
    std::filesystem::remove(path, ec);
  }
};

FuzzDir& fuzz_dir() {
  static FuzzDir dir;
  return dir;
}

// Writes `size` bytes to `name` in fuzz_dir() (overwritten each input) and returns its path.
std::string write_input(const std::string& name, const void* data, size_t size) {
  FuzzDir& dir = fuzz_dir();
  const std::string path = dir.path + "/" + name;
  dir.files.insert(path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) throw std::runtime_error("fuzz: cannot write " + path);  // not a reader's fault: surfaces
  return path;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

bool is_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

template <class F>
int refusals_ok(F&& f) {
  try {
    f();
  } catch (const c10::Error&) {
    // an expected refusal of bad input
  }
  return 0;
}

}  // namespace

int fuzz_png_jpeg(const uint8_t* data, size_t size) {
  const std::string path = write_input("image", data, size);
  return refusals_ok([&] {
    ImageReadOptions options;
    options.max_pixels = int64_t{1} << 22;
    const at::Tensor rgb = read_image(path, options);
    (void)read_mask(path, options);
    if (rgb.size(1) * rgb.size(2) <= 256 * 256) {
      const ClipConfig config;
      (void)clip_preprocess(rgb, 16, config.image_mean, config.image_std, true);
    }
  });
}

int fuzz_pickle(const uint8_t* data, size_t size) {
  // A valid zip (as torch.save writes it) around the bytes, so that mutations reach the
  // pickle machine rather than the zip's checksums.
  std::string zip;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* p, size_t n) {
      zip.append(static_cast<const char*>(p), n);
      return n;
    });
    writer.writeRecord("data.pkl", data, size);
    static const std::string storage(256, '\x3f');
    const size_t sizes[] = {4, 16, 64, 256};
    for (int i = 0; i < 4; ++i) writer.writeRecord("data/" + std::to_string(i), storage.data(), sizes[i]);
    writer.writeRecord("byteorder", "little", 6);
    writer.writeEndOfFile();
  }
  const std::string path = write_input("pickle.pt", zip.data(), zip.size());
  return refusals_ok([&] { (void)detail::read_torch_save(path); });
}

int fuzz_zip_archive(const uint8_t* data, size_t size) {
  const std::string path = write_input("archive.pt", data, size);
  return refusals_ok([&] {
    LoadOptions options;
    options.load_text = false;  // the seeds are image towers (a text tower is 49408 embeddings)
    (void)load_clip(path, options);
  });
}

int fuzz_safetensors(const uint8_t* data, size_t size) {
  const std::string path = write_input("tensors.safetensors", data, size);
  return refusals_ok([&] {
    (void)detail::looks_like_safetensors(path);
    (void)detail::read_safetensors(path);
  });
}

int fuzz_lake_file(const uint8_t* data, size_t size) {
  static const std::optional<ClipModel> clip = []() -> std::optional<ClipModel> {
    const std::string archive = env_or("LAKE_FUZZ_CLIP", std::string(LAKE_FIXTURES_DIR) + "/tiny_export.pt");
    if (!is_file(archive)) {
      std::fprintf(stderr, "fuzz_lake_file: no CLIP archive at '%s' (set LAKE_FUZZ_CLIP): skipped\n",
                   archive.c_str());
      return std::nullopt;
    }
    return load_clip(archive);
  }();
  if (!clip) return 0;
  const std::string path = write_input("model.lake", data, size);
  return refusals_ok([&] { (void)NormalityModel::load(path, *clip); });
}

int fuzz_tokenizer(const uint8_t* data, size_t size) {
  static const std::optional<Tokenizer> tokenizer = []() -> std::optional<Tokenizer> {
    const std::string vocab =
        env_or("LAKE_FUZZ_VOCAB", std::string(LAKE_SHARED_DIR) + "/clip/bpe_simple_vocab_16e6.txt.gz");
    if (!is_file(vocab)) {
      std::fprintf(stderr, "fuzz_tokenizer: no vocabulary at '%s' (set LAKE_FUZZ_VOCAB): skipped\n", vocab.c_str());
      return std::nullopt;
    }
    return Tokenizer::from_file(vocab);
  }();
  if (!tokenizer) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  return refusals_ok([&] {
    const std::vector<int64_t> ids = tokenizer->encode(text);
    (void)tokenizer->decode(ids);
    (void)tokenizer->tokenize({text}, 77, true);
  });
}

int fuzz_vocabulary(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  return refusals_ok([&] {
    const Tokenizer t = Tokenizer::from_bytes(bytes, "<fuzz>");
    (void)t.encode("a photo of a cat");
  });
}

int fuzz_key_values(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  return refusals_ok([&] { (void)detail::parse_key_values(text, "<fuzz>"); });
}

const std::vector<NamedTarget>& all_targets() {
  static const std::vector<NamedTarget> targets = {
      {"png_jpeg", fuzz_png_jpeg},   {"pickle", fuzz_pickle},       {"zip_archive", fuzz_zip_archive},
      {"safetensors", fuzz_safetensors}, {"lake_file", fuzz_lake_file}, {"tokenizer", fuzz_tokenizer},
      {"vocabulary", fuzz_vocabulary}, {"key_values", fuzz_key_values},
  };
  return targets;
}

}  // namespace lake::fuzz
