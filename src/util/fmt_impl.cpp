// fmt's out-of-line functions, compiled once for liblake (docs/setup.md, "fmt and Eigen").
//
// fmt comes as headers only (LibTorch's bundled copy; no fmt library is installed or linked).
// With FMT_HEADER_ONLY every translation unit that includes <fmt/format.h> also compiles
// fmt/format-inl.h (the float formatter's tables, the locale hooks, vformat): 3.2 s per TU on
// this machine, in liblake's unity TU, the Python extension's, the C++ tests' and each
// example's. Without it, <fmt/format.h> only declares those functions, and this file defines
// them, once, inside liblake.a: everything that links lake (the extension, the tests, the
// examples, a find_package(lake) consumer) gets them from here.
//
// format-inl.h defines the non-template functions itself (FMT_FUNC is empty in this mode);
// the templates that <fmt/format.h> declares `extern template` or only declares are
// instantiated below for the types it uses them with.
//
// Built outside the unity TU (SKIP_UNITY_BUILD_INCLUSION), so that it compiles next to it and
// FMT_HEADER_ONLY can never be mixed into one TU with the declarations.

#ifdef FMT_HEADER_ONLY
#error "src/util/fmt_impl.cpp defines fmt's functions for liblake: build it without FMT_HEADER_ONLY"
#endif

#include <fmt/format-inl.h>

#include <locale>

FMT_BEGIN_NAMESPACE

// The std::locale behind the type-erased reference that "{:L}" and the locale overloads pass.
template FMT_API auto locale_ref::get<std::locale>() const -> std::locale;

namespace detail {

// The shortest round-trip float and double conversion ("{}" of a float or double).
template FMT_API auto dragonbox::to_decimal(float x) noexcept -> dragonbox::decimal_fp<float>;
template FMT_API auto dragonbox::to_decimal(double x) noexcept -> dragonbox::decimal_fp<double>;

// Grouping and the decimal point of a locale, for narrow and wide output.
template FMT_API auto thousands_sep_impl(locale_ref) -> thousands_sep_result<char>;
template FMT_API auto thousands_sep_impl(locale_ref) -> thousands_sep_result<wchar_t>;
template FMT_API auto decimal_point_impl(locale_ref) -> char;
template FMT_API auto decimal_point_impl(locale_ref) -> wchar_t;

}  // namespace detail
FMT_END_NAMESPACE
