#include "common/vici.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace strongroom {
namespace {

// Packet types (README "Packet layer").
constexpr uint8_t kCmdRequest = 0;
constexpr uint8_t kCmdResponse = 1;
constexpr uint8_t kCmdUnknown = 2;
constexpr uint8_t kEventRegister = 3;
constexpr uint8_t kEventUnregister = 4;
constexpr uint8_t kEventConfirm = 5;
constexpr uint8_t kEventUnknown = 6;
constexpr uint8_t kEvent = 7;

// Message element types (README "Message format").
constexpr uint8_t kSectionStart = 1;
constexpr uint8_t kSectionEnd = 2;
constexpr uint8_t kKeyValue = 3;
constexpr uint8_t kListStart = 4;
constexpr uint8_t kListItem = 5;
constexpr uint8_t kListEnd = 6;

// charon refuses larger packets (VICI_MESSAGE_SIZE_MAX is 512 KiB); so do we, for what we read.
constexpr uint32_t kMaxPacket = 512 * 1024;
constexpr int kMaxDepth = 32;

bool NamedType(uint8_t type) {
  return type == kCmdRequest || type == kEventRegister || type == kEventUnregister || type == kEvent;
}

absl::Status PutName(std::string& out, absl::string_view name) {
  if (name.empty() || name.size() > 255)
    return absl::InvalidArgumentError(absl::StrCat("vici: bad name length ", name.size()));
  out.push_back(static_cast<char>(name.size()));
  out.append(name.data(), name.size());
  return absl::OkStatus();
}

absl::Status PutValue(std::string& out, absl::string_view value) {
  if (value.size() > 65535)
    return absl::InvalidArgumentError(absl::StrCat("vici: value of ", value.size(), " bytes"));
  out.push_back(static_cast<char>(value.size() >> 8));
  out.push_back(static_cast<char>(value.size() & 0xff));
  out.append(value.data(), value.size());
  return absl::OkStatus();
}

absl::Status EncodeInto(const ViciMessage& m, std::string& out, int depth) {
  if (depth > kMaxDepth) return absl::InvalidArgumentError("vici: message nested too deeply");
  for (const ViciMessage::Element& e : m.elements()) {
    switch (e.kind) {
      case ViciMessage::Element::Kind::kValue:
        out.push_back(kKeyValue);
        SR_RETURN_IF_ERROR(PutName(out, e.name));
        SR_RETURN_IF_ERROR(PutValue(out, e.value));
        break;
      case ViciMessage::Element::Kind::kList:
        out.push_back(kListStart);
        SR_RETURN_IF_ERROR(PutName(out, e.name));
        for (const std::string& item : e.items) {
          out.push_back(kListItem);
          SR_RETURN_IF_ERROR(PutValue(out, item));
        }
        out.push_back(kListEnd);
        break;
      case ViciMessage::Element::Kind::kSection:
        out.push_back(kSectionStart);
        SR_RETURN_IF_ERROR(PutName(out, e.name));
        SR_RETURN_IF_ERROR(EncodeInto(*e.section, out, depth + 1));
        out.push_back(kSectionEnd);
        break;
    }
  }
  return absl::OkStatus();
}

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  bool Done() const { return pos_ >= in_.size(); }
  absl::StatusOr<uint8_t> Byte() {
    if (pos_ >= in_.size()) return Truncated();
    return static_cast<uint8_t>(in_[pos_++]);
  }
  absl::StatusOr<std::string> Name() {
    SR_ASSIGN_OR_RETURN(uint8_t n, Byte());
    return Bytes(n);
  }
  absl::StatusOr<std::string> Value() {
    SR_ASSIGN_OR_RETURN(uint8_t hi, Byte());
    SR_ASSIGN_OR_RETURN(uint8_t lo, Byte());
    return Bytes((static_cast<size_t>(hi) << 8) | lo);
  }

 private:
  absl::StatusOr<std::string> Bytes(size_t n) {
    if (in_.size() - pos_ < n) return Truncated();
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  static absl::Status Truncated() { return absl::DataLossError("vici: truncated message"); }
  absl::string_view in_;
  size_t pos_ = 0;
};

// Parses elements into `m` until the input ends (depth 0) or a section end (depth > 0).
absl::Status DecodeInto(Reader& r, ViciMessage& m, int depth) {
  if (depth > kMaxDepth) return absl::DataLossError("vici: message nested too deeply");
  while (!r.Done()) {
    SR_ASSIGN_OR_RETURN(uint8_t type, r.Byte());
    switch (type) {
      case kSectionStart: {
        SR_ASSIGN_OR_RETURN(std::string name, r.Name());
        SR_RETURN_IF_ERROR(DecodeInto(r, m.Section(name), depth + 1));
        break;
      }
      case kSectionEnd:
        if (depth == 0) return absl::DataLossError("vici: section end without a section");
        return absl::OkStatus();
      case kKeyValue: {
        SR_ASSIGN_OR_RETURN(std::string name, r.Name());
        SR_ASSIGN_OR_RETURN(std::string value, r.Value());
        m.Set(name, value);
        break;
      }
      case kListStart: {
        SR_ASSIGN_OR_RETURN(std::string name, r.Name());
        std::vector<std::string> items;
        while (true) {
          SR_ASSIGN_OR_RETURN(uint8_t t, r.Byte());
          if (t == kListEnd) break;
          if (t != kListItem)
            return absl::DataLossError(absl::StrCat("vici: element ", t, " inside list ", name));
          SR_ASSIGN_OR_RETURN(std::string item, r.Value());
          items.push_back(std::move(item));
        }
        m.SetList(name, std::move(items));
        break;
      }
      default:
        return absl::DataLossError(absl::StrCat("vici: unknown element type ", type));
    }
  }
  if (depth != 0) return absl::DataLossError("vici: unterminated section");
  return absl::OkStatus();
}

void Render(const ViciMessage& m, std::string& out) {
  auto show = [](const std::string& v) { return v.size() > 64 ? absl::StrCat("<", v.size(), " bytes>") : v; };
  bool first = true;
  for (const ViciMessage::Element& e : m.elements()) {
    if (!first) out.append(" ");
    first = false;
    switch (e.kind) {
      case ViciMessage::Element::Kind::kValue:
        absl::StrAppend(&out, e.name, "=", show(e.value));
        break;
      case ViciMessage::Element::Kind::kList: {
        std::vector<std::string> items;
        for (const std::string& i : e.items) items.push_back(show(i));
        absl::StrAppend(&out, e.name, "=[", absl::StrJoin(items, ","), "]");
        break;
      }
      case ViciMessage::Element::Kind::kSection:
        absl::StrAppend(&out, e.name, "{");
        Render(*e.section, out);
        out.append("}");
        break;
    }
  }
}

}  // namespace

ViciMessage::ViciMessage(const ViciMessage& other) { *this = other; }

ViciMessage& ViciMessage::operator=(const ViciMessage& other) {
  if (this == &other) return *this;
  elements_ = other.elements_;
  for (Element& e : elements_) {
    if (e.section) e.section = std::make_shared<ViciMessage>(*e.section);
  }
  return *this;
}

ViciMessage& ViciMessage::Set(absl::string_view key, absl::string_view value) {
  Element e;
  e.kind = Element::Kind::kValue;
  e.name = std::string(key);
  e.value = std::string(value);
  elements_.push_back(std::move(e));
  return *this;
}

ViciMessage& ViciMessage::SetList(absl::string_view key, std::vector<std::string> items) {
  Element e;
  e.kind = Element::Kind::kList;
  e.name = std::string(key);
  e.items = std::move(items);
  elements_.push_back(std::move(e));
  return *this;
}

ViciMessage& ViciMessage::Section(absl::string_view name) {
  Element e;
  e.kind = Element::Kind::kSection;
  e.name = std::string(name);
  e.section = std::make_shared<ViciMessage>();
  elements_.push_back(std::move(e));
  return *elements_.back().section;
}

const std::string* ViciMessage::Value(absl::string_view key) const {
  for (const Element& e : elements_)
    if (e.kind == Element::Kind::kValue && e.name == key) return &e.value;
  return nullptr;
}

std::string ViciMessage::ValueOr(absl::string_view key, absl::string_view fallback) const {
  const std::string* v = Value(key);
  return v ? *v : std::string(fallback);
}

const std::vector<std::string>* ViciMessage::List(absl::string_view key) const {
  for (const Element& e : elements_)
    if (e.kind == Element::Kind::kList && e.name == key) return &e.items;
  return nullptr;
}

const ViciMessage* ViciMessage::FindSection(absl::string_view name) const {
  for (const Element& e : elements_)
    if (e.kind == Element::Kind::kSection && e.name == name) return e.section.get();
  return nullptr;
}

std::vector<std::pair<std::string, const ViciMessage*>> ViciMessage::Sections() const {
  std::vector<std::pair<std::string, const ViciMessage*>> out;
  for (const Element& e : elements_)
    if (e.kind == Element::Kind::kSection) out.emplace_back(e.name, e.section.get());
  return out;
}

absl::StatusOr<std::string> ViciMessage::Encode() const {
  std::string out;
  SR_RETURN_IF_ERROR(EncodeInto(*this, out, 0));
  return out;
}

absl::StatusOr<ViciMessage> ViciMessage::Decode(absl::string_view bytes) {
  ViciMessage m;
  Reader r(bytes);
  SR_RETURN_IF_ERROR(DecodeInto(r, m, 0));
  return m;
}

std::string ViciMessage::DebugString() const {
  std::string out;
  Render(*this, out);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

ViciClient::ViciClient(int fd, std::string socket_path, absl::Duration timeout)
    : fd_(fd), socket_path_(std::move(socket_path)), timeout_(timeout) {}

ViciClient::ViciClient(ViciClient&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      socket_path_(std::move(other.socket_path_)),
      timeout_(other.timeout_) {}

ViciClient& ViciClient::operator=(ViciClient&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    socket_path_ = std::move(other.socket_path_);
    timeout_ = other.timeout_;
  }
  return *this;
}

ViciClient::~ViciClient() {
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<ViciClient> ViciClient::Connect(const std::string& socket_path, absl::Duration timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path))
    return absl::InvalidArgumentError(absl::StrCat("vici: socket path too long: ", socket_path));
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("vici: socket: ", std::strerror(errno)));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("vici: connect ", socket_path, ": ", std::strerror(err)));
  }
  return ViciClient(fd, socket_path, timeout);
}

absl::Status ViciClient::WriteAll(absl::string_view bytes, absl::Time deadline) {
  while (!bytes.empty()) {
    ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN)
      return absl::UnavailableError(absl::StrCat("vici: send: ", std::strerror(errno)));
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("vici: send timed out");
    pollfd p{fd_, POLLOUT, 0};
    poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
  }
  return absl::OkStatus();
}

absl::Status ViciClient::ReadAll(char* out, size_t n, absl::Time deadline) {
  while (n > 0) {
    ssize_t got = recv(fd_, out, n, 0);
    if (got > 0) {
      out += got;
      n -= static_cast<size_t>(got);
      continue;
    }
    if (got == 0) return absl::UnavailableError("vici: charon closed the connection");
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return absl::UnavailableError(absl::StrCat("vici: recv: ", std::strerror(errno)));
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration())
      return absl::DeadlineExceededError("vici: no answer from charon in time");
    pollfd p{fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
  }
  return absl::OkStatus();
}

absl::Status ViciClient::SendPacket(uint8_t type, absl::string_view name, const ViciMessage* message) {
  if (fd_ < 0) return absl::FailedPreconditionError("vici: client was moved from");
  std::string payload(1, static_cast<char>(type));
  if (NamedType(type)) SR_RETURN_IF_ERROR(PutName(payload, name));
  if (message != nullptr) {
    SR_ASSIGN_OR_RETURN(std::string body, message->Encode());
    payload += body;
  }
  if (payload.size() > kMaxPacket) return absl::InvalidArgumentError("vici: request too large");
  uint32_t len = static_cast<uint32_t>(payload.size());
  char header[4] = {static_cast<char>(len >> 24), static_cast<char>(len >> 16), static_cast<char>(len >> 8),
                    static_cast<char>(len)};
  absl::Time deadline = absl::Now() + timeout_;
  SR_RETURN_IF_ERROR(WriteAll(absl::string_view(header, 4), deadline));
  return WriteAll(payload, deadline);
}

absl::StatusOr<ViciClient::Packet> ViciClient::ReadPacket(absl::Time deadline) {
  unsigned char header[4];
  SR_RETURN_IF_ERROR(ReadAll(reinterpret_cast<char*>(header), 4, deadline));
  uint32_t len =
      (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) | (uint32_t{header[2]} << 8) | header[3];
  if (len == 0 || len > kMaxPacket)
    return absl::DataLossError(absl::StrCat("vici: packet of ", len, " bytes"));
  std::string payload(len, '\0');
  SR_RETURN_IF_ERROR(ReadAll(payload.data(), len, deadline));
  Packet p;
  p.type = static_cast<uint8_t>(payload[0]);
  size_t pos = 1;
  if (NamedType(p.type)) {
    if (payload.size() < 2) return absl::DataLossError("vici: truncated packet name");
    size_t n = static_cast<uint8_t>(payload[1]);
    if (payload.size() < 2 + n) return absl::DataLossError("vici: truncated packet name");
    p.name = payload.substr(2, n);
    pos = 2 + n;
  }
  p.body = payload.substr(pos);
  return p;
}

absl::StatusOr<ViciMessage> ViciClient::Call(absl::string_view command, const ViciMessage& request) {
  absl::Time deadline = absl::Now() + timeout_;
  SR_RETURN_IF_ERROR(SendPacket(kCmdRequest, command, &request));
  while (true) {
    SR_ASSIGN_OR_RETURN(Packet p, ReadPacket(deadline));
    if (p.type == kCmdUnknown)
      return absl::UnimplementedError(absl::StrCat("vici: charon does not know ", command));
    if (p.type == kEvent) continue;  // an event we registered for elsewhere; not ours to keep
    if (p.type != kCmdResponse)
      return absl::DataLossError(absl::StrCat("vici: ", command, ": unexpected packet type ", p.type));
    return ViciMessage::Decode(p.body);
  }
}

absl::Status ViciClient::CallChecked(absl::string_view command, const ViciMessage& request) {
  SR_ASSIGN_OR_RETURN(ViciMessage response, Call(command, request));
  if (response.ValueOr("success", "no") == "yes") return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("vici: ", command, " failed: ", response.ValueOr("errmsg", "(no errmsg)")));
}

absl::Status ViciClient::Register(uint8_t type, absl::string_view event, absl::Time deadline) {
  SR_RETURN_IF_ERROR(SendPacket(type, event, nullptr));
  while (true) {
    SR_ASSIGN_OR_RETURN(Packet p, ReadPacket(deadline));
    if (p.type == kEvent) continue;
    if (p.type == kEventConfirm) return absl::OkStatus();
    if (p.type == kEventUnknown)
      return absl::UnimplementedError(absl::StrCat("vici: charon has no event ", event));
    return absl::DataLossError(
        absl::StrCat("vici: (un)register ", event, ": unexpected packet type ", p.type));
  }
}

absl::StatusOr<std::vector<ViciMessage>> ViciClient::Stream(absl::string_view command,
                                                            const ViciMessage& request,
                                                            absl::string_view event) {
  absl::Time deadline = absl::Now() + timeout_;
  SR_RETURN_IF_ERROR(Register(kEventRegister, event, deadline));
  SR_RETURN_IF_ERROR(SendPacket(kCmdRequest, command, &request));
  std::vector<ViciMessage> events;
  while (true) {
    SR_ASSIGN_OR_RETURN(Packet p, ReadPacket(deadline));
    if (p.type == kEvent && p.name == event) {
      SR_ASSIGN_OR_RETURN(ViciMessage m, ViciMessage::Decode(p.body));
      events.push_back(std::move(m));
      continue;
    }
    if (p.type == kEvent) continue;
    if (p.type == kCmdUnknown)
      return absl::UnimplementedError(absl::StrCat("vici: charon does not know ", command));
    if (p.type != kCmdResponse)
      return absl::DataLossError(absl::StrCat("vici: ", command, ": unexpected packet type ", p.type));
    break;
  }
  SR_RETURN_IF_ERROR(Register(kEventUnregister, event, deadline));
  return events;
}

}  // namespace strongroom
