#pragma once
// LAKE's own CLIP export (internal): what lake::save_clip writes and read_archive reads.
//
// v2 (lake::save_clip): a safetensors file, every parameter under its OpenAI name, and
//   "__metadata__" = {format: lake-clip, format_version: 2, activation, the ClipConfig
//   hyper-parameters, mean, std ("a,b,c"), source, vocabulary_gz_base64}.
// v1 (what pylake.export wrote before v2; still read): a TorchScript archive whose parameters are
//   the weights, with extra/lake_config.txt (the same keys as key=value lines) and
//   extra/lake_vocab.txt.gz.

#include <map>
#include <string>

#include "detail/clip_archive.h"
#include "detail/safetensors.h"

namespace lake::detail {

constexpr const char* kLakeExportFormat = "lake-clip";
/// The format versions this build reads: 1 (TorchScript) and 2 (safetensors, written).
constexpr int kLakeExportTorchScriptVersion = 1;
constexpr int kLakeExportVersion = 2;
/// The v2 metadata key holding the gzip'd BPE merges, base64-encoded.
constexpr const char* kLakeVocabularyKey = "vocabulary_gz_base64";

/// True when a safetensors file's metadata says format=lake-clip.
bool is_lake_export(const std::map<std::string, std::string>& metadata);

/// Checks `raw.lake_config` of a LAKE export stored as `container_version` (1: TorchScript,
/// 2: safetensors): format=lake-clip, a known format_version matching the container; sets
/// `raw.kind` and the activation hint. Errors (ValueError) name `path` and the key.
void check_lake_export_config(RawArchive& raw, const std::string& path, int container_version);

/// A v2 export: the tensors as stored, the metadata as lake_config, the vocabulary decoded.
RawArchive read_lake_safetensors(const std::string& path, SafetensorsFile file);

}  // namespace lake::detail
