#pragma once
// Binding helpers for LAKE's options structs and enums, so that each is defined once, in C++:
//
//  * bind_enum: a `py::enum_` whose Python string form is the C++ spelling (`to_string`,
//    e.g. "variance") and which is constructed from that spelling by the one C++ parser
//    (`SensitivityScore("cv")` calls `parse_sensitivity_score`, whose ValueError names the input).
//  * OptionsClass: a `py::class_` of an options struct whose fields are listed once (`field`,
//    `enum_field`, ...). That list gives the keyword constructor (`NormalityOptions(k=50)`,
//    every other field at the C++ default), `_fields`, `__repr__`, `__eq__` and pickling; Python's
//    keyword defaults, the CLI's defaults and the docs' options table are tested against it.
//
// Usage:
//   bind_enum<ProbeKind>(m, "ProbeKind", &parse_probe_kind, {{"Residual", ProbeKind::Residual}, ...});
//   OptionsClass<ProbeOptions>(m, "ProbeOptions", "...")
//       .field("layers", &ProbeOptions::layers, "...")
//       .enum_field("kind", &ProbeOptions::kind, &parse_probe_kind, "...")
//       .finish();

#include <torch/extension.h>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lake::bindings {

namespace py = pybind11;

/// A Python value for an enum field or argument: the enum itself, or its C++ spelling
/// (converted by `parse`, whose c10::ValueError names the input); other types: TypeError.
template <class E>
E enum_value(const py::handle& v, E (*parse)(const std::string&), const char* what) {
  if (py::isinstance<py::str>(v)) return parse(v.cast<std::string>());
  try {
    return v.cast<E>();
  } catch (const py::cast_error&) {
    const std::string type_name = py::str(py::type::of(py::cast(E{})).attr("__name__"));
    throw py::type_error(fmt::format("{}: expected a {} or its name as a string, got {}", what, type_name,
                                     std::string(py::repr(v))));
  }
}

/// Binds enum E as `name`: values, `E("spelling")` through `parse`, `str(value)` = to_string(value).
template <class E>
py::enum_<E> bind_enum(py::module_& m, const char* name, E (*parse)(const std::string&),
                       const std::vector<std::pair<const char*, E>>& values, const char* doc) {
  py::enum_<E> e(m, name, doc);
  for (const auto& [value_name, value] : values) e.value(value_name, value);
  e.def(py::init([parse](const std::string& s) { return parse(s); }), py::arg("name"),
        "The value of a C++ spelling (case-insensitive); a ValueError names an unknown one.");
  e.attr("__str__") = py::cpp_function([](E v) { return to_string(v); }, py::name("__str__"), py::is_method(e));
  return e;
}

/// A bound options struct T whose fields are listed once; see the file comment.
template <class T>
class OptionsClass {
 public:
  OptionsClass(py::module_& m, const char* name, const char* doc)
      : cls_(m, name, doc), name_(name), fields_(std::make_shared<std::vector<std::string>>()) {}

  /// A plain field (numbers, strings, lists), read and written as its Python type.
  template <class V>
  OptionsClass& field(const char* name, V T::*member, const char* doc) {
    cls_.def_readwrite(name, member, doc);
    fields_->emplace_back(name);
    return *this;
  }

  /// An enum field: set from the enum or from its C++ spelling (through `parse`).
  template <class E>
  OptionsClass& enum_field(const char* name, E T::*member, E (*parse)(const std::string&), const char* doc) {
    const std::string what = fmt::format("{}.{}", name_, name);
    cls_.def_property(
        name, [member](const T& o) { return o.*member; },
        [member, parse, what](T& o, const py::object& v) { o.*member = enum_value<E>(v, parse, what.c_str()); }, doc);
    fields_->emplace_back(name);
    return *this;
  }

  /// An optional enum field (None: unset).
  template <class E>
  OptionsClass& optional_enum_field(const char* name, std::optional<E> T::*member, E (*parse)(const std::string&),
                                    const char* doc) {
    const std::string what = fmt::format("{}.{}", name_, name);
    cls_.def_property(
        name, [member](const T& o) { return o.*member; },
        [member, parse, what](T& o, const py::object& v) {
          o.*member = v.is_none() ? std::nullopt : std::optional<E>(enum_value<E>(v, parse, what.c_str()));
        },
        doc);
    fields_->emplace_back(name);
    return *this;
  }

  /// A field with its own conversion from Python (`convert(value)` -> V), read as V's caster gives it.
  template <class V, class Convert>
  OptionsClass& converted_field(const char* name, V T::*member, Convert convert, const char* doc) {
    cls_.def_property(
        name, [member](const T& o) { return o.*member; },
        [member, convert](T& o, const py::object& v) { o.*member = convert(v); }, doc);
    fields_->emplace_back(name);
    return *this;
  }

  /// Adds the keyword constructor, `_fields`, `__repr__`, `__eq__` and pickling.
  py::class_<T>& finish() {
    auto fields = fields_;
    const std::string name = name_;
    cls_.attr("_fields") = py::tuple(py::cast(*fields));
    cls_.def(py::init([fields, name](const py::kwargs& kw) { return from_dict(kw, *fields, name); }),
             fmt::format("Keyword arguments set fields by name; the others keep the C++ defaults. Fields: {}.",
                         join(*fields))
                 .c_str());
    cls_.def("__repr__", [fields, name](const py::object& self) {
      std::vector<std::string> items;
      for (size_t i = 0; i < fields->size(); ++i) {
        py::object v = self.attr((*fields)[i].c_str());
        if (py::hasattr(py::type::of(v), "__members__")) v = py::str(v);  // an enum: its spelling
        items.push_back(fmt::format("{}={}", (*fields)[i], py::repr(v).cast<std::string>()));
      }
      return fmt::format("{}({})", name, join(items));
    });
    cls_.def(
        "__eq__",
        [fields](const py::object& self, const py::object& other) -> py::object {
          if (!py::type::of(self).is(py::type::of(other))) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
          for (const auto& f : *fields)
            if (!self.attr(f.c_str()).equal(other.attr(f.c_str()))) return py::bool_(false);
          return py::bool_(true);
        },
        py::is_operator());
    cls_.def(py::pickle(
        [fields](const py::object& self) {
          py::dict d;
          for (const auto& f : *fields) d[f.c_str()] = self.attr(f.c_str());
          return d;
        },
        [fields, name](const py::dict& d) { return from_dict(d, *fields, name); }));
    return cls_;
  }

 private:
  static std::string join(const std::vector<std::string>& names) { return fmt::format("{}", fmt::join(names, ", ")); }

  static std::string type_name(const py::handle& v) {
    return py::type::of(v).attr("__name__").cast<std::string>();
  }

  static T from_dict(const py::dict& kw, const std::vector<std::string>& fields, const std::string& name) {
    py::object self = py::cast(T{});
    for (const auto& item : kw) {
      const std::string key = py::str(item.first);
      if (std::find(fields.begin(), fields.end(), key) == fields.end())
        throw py::type_error(
            fmt::format("{}() got an unexpected keyword argument '{}'; its fields: {}", name, key, join(fields)));
      try {
        py::setattr(self, item.first, item.second);
      } catch (py::error_already_set& e) {
        if (!e.matches(PyExc_TypeError)) throw;
        const py::object current = self.attr(key.c_str());
        throw py::type_error(fmt::format("{}.{}: expected {} (like the default {}), got {} {}", name, key,
                                         type_name(current), py::repr(current).cast<std::string>(),
                                         type_name(item.second), py::repr(item.second).cast<std::string>()));
      }
    }
    return self.cast<T>();
  }

  py::class_<T> cls_;
  std::string name_;
  std::shared_ptr<std::vector<std::string>> fields_;
};

}  // namespace lake::bindings
