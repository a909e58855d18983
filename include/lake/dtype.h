#pragma once
// The names of LAKE's floating-point dtypes: one table, read by every entry point that takes
// a dtype by name or by value (lake::load_clip, lake::save_clip, their bindings,
// pylake.load_clip, pylake.export.export_clip and `lake export --dtype`).
//
//   c10::ScalarType t = lake::parse_dtype("half");                  // c10::kHalf
//   lake::dtype_name(t);                                              // "float16"
//   lake::check_dtype(t, lake::kSaveClipDtypes, "save_clip: dtype");  // ok; float64 would throw

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <iterator>
#include <string>

namespace lake {

/// A dtype LAKE names: its name (what LAKE writes and prints), an alias also accepted (or
/// nullptr), its type.
struct DtypeName {
  const char* name;
  const char* alias;
  c10::ScalarType type;
};

/// Every dtype name LAKE accepts (case-sensitive, as torch spells them).
inline constexpr DtypeName kDtypeNames[] = {{"float32", "float", c10::kFloat},
                                            {"float16", "half", c10::kHalf},
                                            {"bfloat16", nullptr, c10::kBFloat16},
                                            {"float64", "double", c10::kDouble}};

/// The compute dtypes lake::load_clip takes (LoadOptions::dtype).
inline constexpr c10::ScalarType kLoadClipDtypes[] = {c10::kFloat, c10::kHalf, c10::kBFloat16, c10::kDouble};
/// The stored dtypes lake::save_clip writes (SaveClipOptions::dtype).
inline constexpr c10::ScalarType kSaveClipDtypes[] = {c10::kFloat, c10::kHalf, c10::kBFloat16};

/// "float32" for c10::kFloat, ...; c10's own name ("Long") for a type without a LAKE name.
inline std::string dtype_name(c10::ScalarType type) {
  for (const auto& d : kDtypeNames)
    if (d.type == type) return d.name;
  return c10::toString(type);
}

/// "float32, float16 or bfloat16": the names of `types`, for messages.
template <typename Types>
std::string dtype_list(const Types& types) {
  std::string out;
  const size_t n = std::size(types);
  size_t i = 0;
  for (c10::ScalarType t : types) {
    out += fmt::format("{}{}", i == 0 ? "" : i + 1 == n ? " or " : ", ", dtype_name(t));
    ++i;
  }
  return out;
}

/// The dtype named `name` (a name or an alias of kDtypeNames). Anything else is a
/// c10::ValueError naming the input and every accepted name.
inline c10::ScalarType parse_dtype(const std::string& name) {
  for (const DtypeName& d : kDtypeNames)
    if (name == d.name || (d.alias != nullptr && name == d.alias)) return d.type;
  // Not found: the message lists every name and alias (built only here, not on every call).
  std::string names, aliases;
  const size_t n = std::size(kDtypeNames);
  for (size_t i = 0; i < n; ++i) {
    const DtypeName& d = kDtypeNames[i];
    names += fmt::format("{}{}", i == 0 ? "" : i + 1 == n ? " or " : ", ", d.name);
    if (d.alias != nullptr) aliases += fmt::format("{}{} for {}", aliases.empty() ? "" : ", ", d.alias, d.name);
  }
  TORCH_CHECK_VALUE(false, fmt::format("unknown dtype '{}': expected {} (or {})", name, names, aliases));
}

/// Checks that `type` is one of `allowed`: else a c10::ValueError "<what> must be float32,
/// float16 or bfloat16, got float64".
template <typename Types>
void check_dtype(c10::ScalarType type, const Types& allowed, const char* what) {
  for (c10::ScalarType t : allowed)
    if (t == type) return;
  TORCH_CHECK_VALUE(false, fmt::format("{} must be {}, got {}", what, dtype_list(allowed), dtype_name(type)));
}

}  // namespace lake
