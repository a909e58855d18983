#pragma once
// Small string helpers shared by the option parsers (internal).

#include <cctype>
#include <string>

namespace lake::detail {

/// ASCII lower case: option names are matched case-insensitively.
inline std::string lower(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return out;
}

}  // namespace lake::detail
