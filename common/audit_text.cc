#include "common/audit_text.h"

#include <openssl/evp.h>

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/audit_chain.h"

namespace strongroom {
namespace {

constexpr char kEscapedKey[] = "audit.escaped";
constexpr char kTruncatedKey[] = "audit.truncated";
constexpr char kActionKey[] = "audit.action";
constexpr char kInvalidAction[] = "audit.invalid_action";

// Length of the valid UTF-8 sequence starting at s[i] (1..4), or 0 if none starts there. Overlong forms,
// surrogates and code points above U+10FFFF are invalid, as PostgreSQL and protobuf treat them.
size_t Utf8SequenceAt(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  uint32_t min = 0, cp = 0;
  if ((c & 0xE0) == 0xC0) {
    n = 2, min = 0x80, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, min = 0x800, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

std::string Sha256Hex(absl::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  return HexOf(std::string(reinterpret_cast<const char*>(digest), length));
}

// At most `max` bytes of storable `text`, cut before a UTF-8 continuation byte and never inside an escape
// (\\ or \xHH), so the cut text is still storable and still unescapes.
std::string CutStorable(const std::string& text, size_t max, bool escaped) {
  if (text.size() <= max) return text;
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  if (escaped) {
    // Walk the escapes from the start: the last one that would not fit whole is dropped.
    size_t i = 0, safe = 0;
    while (i < end) {
      const size_t step = text[i] != '\\' ? 1 : (i + 1 < text.size() && text[i + 1] == 'x' ? 4 : 2);
      if (i + step > end) break;
      i += step;
      safe = i;
    }
    end = safe;
  }
  return text.substr(0, end);
}

bool IsDetailKey(absl::string_view key) {
  if (key.empty() || key.size() > 64 || key[0] < 'a' || key[0] > 'z') return false;
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return false;
  }
  return true;
}

// Collects what one record needed, for its markers.
struct Marks {
  std::vector<std::string> escaped;    // field names
  std::vector<std::string> truncated;  // "field=bytes:sha256"

  // `value` made storable within `max` bytes; records what was done under `field`.
  std::string Storable(const std::string& field, const std::string& value, size_t max) {
    const bool escape = !IsStorableAuditText(value);
    std::string text = escape ? EscapeAuditBytes(value) : value;
    if (escape) escaped.push_back(field);
    if (text.size() > max) {
      truncated.push_back(absl::StrCat(field, "=", value.size(), ":", Sha256Hex(value)));
      text = CutStorable(text, max, escape);
    }
    return text;
  }
};

}  // namespace

bool IsStorableAuditText(absl::string_view value) {
  for (size_t i = 0; i < value.size();) {
    if (value[i] == '\0') return false;
    const size_t n = Utf8SequenceAt(value, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string EscapeAuditBytes(absl::string_view raw) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size();) {
    const size_t n = raw[i] == '\0' ? 0 : Utf8SequenceAt(raw, i);
    if (n == 0) {
      const unsigned char c = static_cast<unsigned char>(raw[i]);
      out.append("\\x");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
      ++i;
    } else if (raw[i] == '\\') {
      out.append("\\\\");
      ++i;
    } else {
      out.append(raw.data() + i, n);
      i += n;
    }
  }
  return out;
}

absl::StatusOr<std::string> UnescapeAuditBytes(absl::string_view escaped) {
  std::string out;
  for (size_t i = 0; i < escaped.size(); ++i) {
    if (escaped[i] != '\\') {
      out.push_back(escaped[i]);
      continue;
    }
    if (i + 1 < escaped.size() && escaped[i + 1] == '\\') {
      out.push_back('\\');
      ++i;
      continue;
    }
    std::string byte;
    if (i + 3 < escaped.size() && escaped[i + 1] == 'x' &&
        BytesOfHex(std::string(escaped.substr(i + 2, 2)), &byte)) {
      out += byte;
      i += 3;
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat("malformed escape at byte ", i));
  }
  return out;
}

bool IsAuditActionText(absl::string_view action) {
  if (action.empty() || action.size() > kMaxAuditActionBytes) return false;
  for (char c : action) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '/' || c == ':' || c == '>' || c == '-')) {
      return false;
    }
  }
  return true;
}

void MakeAuditRecordStorable(v1::AuditRecord* r) {
  Marks marks;
  std::map<std::string, std::string> details;
  std::string escaped_before, truncated_before;
  int invalid_keys = 0;
  for (const auto& [key, value] : r->details()) {
    if (key == kEscapedKey) {
      escaped_before = value;
      continue;
    }
    if (key == kTruncatedKey) {
      truncated_before = value;
      continue;
    }
    if (IsDetailKey(key)) {
      details[key] = marks.Storable("details." + key, value, kMaxAuditDetailBytes);
    } else {
      const std::string name = absl::StrCat("audit.invalid_key.", ++invalid_keys);
      details[name] = marks.Storable("details." + name, absl::StrCat(key, "=", value), kMaxAuditDetailBytes);
    }
  }
  if (!IsAuditActionText(r->action())) {
    details[kActionKey] =
        marks.Storable(absl::StrCat("details.", kActionKey), r->action(), kMaxAuditDetailBytes);
    r->set_action(kInvalidAction);
  }
  r->set_object(marks.Storable("object", r->object(), kMaxAuditObjectBytes));
  r->mutable_actor()->set_spiffe_id(marks.Storable("actor", r->actor().spiffe_id(), 512));
  if (r->has_recorded_by()) {
    r->mutable_recorded_by()->set_spiffe_id(marks.Storable("recorded_by", r->recorded_by().spiffe_id(), 512));
  }
  // Room for the two markers within kMaxAuditDetails: the last keys (in sorted order) give way, counted.
  const size_t room = kMaxAuditDetails - 2;
  if (details.size() > room) {
    marks.truncated.push_back(
        absl::StrCat("details=", details.size(), " entries, ", details.size() - room, " dropped"));
    auto it = details.begin();
    std::advance(it, room);
    details.erase(it, details.end());
  }
  // A sender's markers are kept (it made the record storable before shipping it) and extended.
  auto storable = [](const std::string& v) { return IsStorableAuditText(v) ? v : EscapeAuditBytes(v); };
  if (!escaped_before.empty()) marks.escaped.insert(marks.escaped.begin(), storable(escaped_before));
  if (!truncated_before.empty()) marks.truncated.insert(marks.truncated.begin(), storable(truncated_before));
  if (!marks.escaped.empty()) {
    details[kEscapedKey] = CutStorable(absl::StrJoin(marks.escaped, ","), kMaxAuditDetailBytes, false);
  }
  if (!marks.truncated.empty()) {
    details[kTruncatedKey] = CutStorable(absl::StrJoin(marks.truncated, ","), kMaxAuditDetailBytes, false);
  }
  r->clear_details();
  for (auto& [key, value] : details) (*r->mutable_details())[key] = std::move(value);
}

}  // namespace strongroom
