// Statement parameters for libpqxx 6.4, which has no std::optional support: every value goes as text
// (PostgreSQL casts it), a NULL as a null pointer. Use with exec_params / exec_prepared through Dynamic().
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace strongroom::backend {

class SqlParams {
 public:
  SqlParams& Text(std::string value) {
    values_.push_back(std::move(value));
    pointers_.push_back(values_.back().c_str());
    return *this;
  }
  SqlParams& Int(int64_t value) { return Text(absl::StrCat(value)); }
  SqlParams& Bool(bool value) { return Text(value ? "true" : "false"); }
  SqlParams& Null() {
    pointers_.push_back(nullptr);
    return *this;
  }
  SqlParams& OptionalInt(const std::optional<int64_t>& value) { return value ? Int(*value) : Null(); }
  SqlParams& OptionalText(const std::optional<std::string>& value) { return value ? Text(*value) : Null(); }
  // bytea in PostgreSQL's hex text form.
  SqlParams& Bytes(const std::string& raw) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string hex = "\\x";
    for (unsigned char c : raw) {
      hex.push_back(kDigits[c >> 4]);
      hex.push_back(kDigits[c & 0xf]);
    }
    return Text(std::move(hex));
  }

  auto Dynamic() const { return pqxx::prepare::make_dynamic_params(pointers_); }

 private:
  std::deque<std::string> values_;     // owns the text; a deque keeps addresses stable as it grows
  std::vector<const char*> pointers_;  // one per parameter, nullptr for NULL
};

}  // namespace strongroom::backend
