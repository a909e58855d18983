#pragma once
// fmt for the messages and text liblake builds (internal; docs/setup.md, "fmt").
//
// Every error message, report line and file text of the C++ side is written with
// fmt::format; TORCH_CHECK / TORCH_CHECK_VALUE / TORCH_CHECK_INDEX still raise (they choose
// Python's exception type) and take the formatted string as their message:
//   TORCH_CHECK_VALUE(x.dim() == 4, fmt::format("{}: expected a 4-d tensor, got shape {}", what, x.sizes()));
// The macros evaluate their message only when the check fails, so fmt::format costs nothing
// on the good path.
//
// The formatters below print the torch types exactly as c10's operator<< does, so messages
// that once went through c10::str / TORCH_CHECK's variadic form keep their text:
//   at::IntArrayRef {2, 3}  -> "[2, 3]"      (c10/util/ArrayRef.h)
//   c10::ScalarType::Float  -> "Float"       (c10::toString)
//   caffe2::TypeMeta        -> "float"       (TypeMeta::name)
//   c10::Device             -> "cpu", "cuda:0" (Device::str)
//   c10::DeviceType::CUDA   -> "cuda"        (DeviceTypeName, lower case)
// tests/cpp/test_format.cpp compares each with c10's operator<<.
//
// Two traps when converting a streamed message: a double streamed with the default
// precision prints like "{:g}" (6 significant digits), not like "{}" (shortest round trip);
// a bool streams as "1" / "0", fmt writes "true" / "false". Use "{:g}" and int(b) to keep
// the old text.
//
// liblake compiles against LibTorch's bundled fmt (12.x headers; its out-of-line functions are
// compiled once, in src/util/fmt_impl.cpp); lake/core/*.h use only what fmt 9 has too.

#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/typeid.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include <cstdint>
#include <string_view>

/// at::IntArrayRef (at::Tensor::sizes(), strides()) as "[a, b]". A full specialisation, so it
/// wins over fmt/ranges.h's generic range formatter.
template <>
struct fmt::formatter<c10::ArrayRef<int64_t>> {
  constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }
  template <typename Ctx>
  auto format(c10::ArrayRef<int64_t> list, Ctx& ctx) const {
    return fmt::format_to(ctx.out(), "[{}]", fmt::join(list.begin(), list.end(), ", "));
  }
};

/// c10::ScalarType by its c10 name ("Float", "Long", "Bool"); width / fill specs apply.
template <>
struct fmt::formatter<c10::ScalarType> : fmt::formatter<std::string_view> {
  template <typename Ctx>
  auto format(c10::ScalarType t, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(c10::toString(t), ctx);
  }
};

/// caffe2::TypeMeta (at::Tensor::dtype()) by its C++ name ("float", "long int"), as c10 prints it.
template <>
struct fmt::formatter<caffe2::TypeMeta> : fmt::formatter<std::string_view> {
  template <typename Ctx>
  auto format(const caffe2::TypeMeta& t, Ctx& ctx) const {
    const auto name = t.name();
    return fmt::formatter<std::string_view>::format(std::string_view(name.data(), name.size()), ctx);
  }
};

/// c10::Device as "cpu", "cuda:0" (Device::str()).
template <>
struct fmt::formatter<c10::Device> : fmt::formatter<std::string_view> {
  template <typename Ctx>
  auto format(const c10::Device& d, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(d.str(), ctx);
  }
};

/// c10::DeviceType in lower case ("cpu", "cuda"), as its operator<< prints it.
template <>
struct fmt::formatter<c10::DeviceType> : fmt::formatter<std::string_view> {
  template <typename Ctx>
  auto format(c10::DeviceType t, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(c10::DeviceTypeName(t, /*lower_case=*/true), ctx);
  }
};
