// A client of StrongSwan's VICI protocol (the versatile IKE control interface, strongswan's
// src/libcharon/plugins/vici/README.md) over charon's unix socket. Strongroom configures charon only through
// this: connections, certificates and keys go over the socket from memory, so no key file is ever written and
// swanctl is not needed in production (operators may still use it to look).
//
//   SR_ASSIGN_OR_RETURN(ViciClient vici, ViciClient::Connect("/run/strongroom/charon.vici",
//   absl::Seconds(5))); ViciMessage key; key.Set("type", "ecdsa"); key.Set("data", private_key_pem);
//   SR_RETURN_IF_ERROR(vici.CallChecked("load-key", key));
//
// Wire format: every packet is a 32-bit big-endian length and a payload whose first byte is the packet type;
// command requests, event (un)registrations and events carry a name (8-bit length); the rest is a message of
// elements (section start/end, key-value, list start/item/end).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace strongroom {

// One VICI message: an ordered tree of key-values, lists and sections. Keys may repeat on the wire; Get
// returns the first.
class ViciMessage {
 public:
  struct Element {
    enum class Kind { kValue, kList, kSection };
    Kind kind = Kind::kValue;
    std::string name;
    std::string value;                     // kValue: the raw bytes
    std::vector<std::string> items;        // kList
    std::shared_ptr<ViciMessage> section;  // kSection (deep-copied with the message)
  };

  ViciMessage() = default;
  ViciMessage(const ViciMessage& other);
  ViciMessage& operator=(const ViciMessage& other);
  ViciMessage(ViciMessage&&) = default;
  ViciMessage& operator=(ViciMessage&&) = default;

  // Builders; each returns *this so calls chain. Section() returns the new (empty) child section.
  ViciMessage& Set(absl::string_view key, absl::string_view value);
  ViciMessage& SetList(absl::string_view key, std::vector<std::string> items);
  ViciMessage& Section(absl::string_view name);

  // Lookups on this level; nullptr / "" when absent.
  const std::string* Value(absl::string_view key) const;
  std::string ValueOr(absl::string_view key, absl::string_view fallback) const;
  const std::vector<std::string>* List(absl::string_view key) const;
  const ViciMessage* FindSection(absl::string_view name) const;
  // The child sections in order, as (name, section) pairs: list-sas gives one per IKE SA, named by the
  // connection.
  std::vector<std::pair<std::string, const ViciMessage*>> Sections() const;

  const std::vector<Element>& elements() const { return elements_; }

  // The message part of a packet. Encode fails on a name over 255 bytes or a value over 65535 bytes.
  absl::StatusOr<std::string> Encode() const;
  static absl::StatusOr<ViciMessage> Decode(absl::string_view bytes);

  // A readable one-line rendering for errors and logs, with every value longer than 64 bytes elided (so a
  // key or certificate never reaches a log through it).
  std::string DebugString() const;

 private:
  std::vector<Element> elements_;  // in wire order
};

// A connection to one charon. Not thread-safe: one call at a time (VICI itself is strictly request/response
// on a connection, with events interleaved before the response).
class ViciClient {
 public:
  // Connects to the unix socket at `socket_path`; every later call must finish within `timeout`.
  static absl::StatusOr<ViciClient> Connect(const std::string& socket_path, absl::Duration timeout);

  ViciClient(ViciClient&& other) noexcept;
  ViciClient& operator=(ViciClient&& other) noexcept;
  ViciClient(const ViciClient&) = delete;
  ViciClient& operator=(const ViciClient&) = delete;
  ~ViciClient();

  // Sends command `command` with `request` and returns charon's response message. UNIMPLEMENTED when charon
  // does not know the command.
  absl::StatusOr<ViciMessage> Call(absl::string_view command, const ViciMessage& request);

  // Call, then require `success = yes` in the response; the error carries charon's errmsg.
  absl::Status CallChecked(absl::string_view command, const ViciMessage& request);

  // For streaming commands (list-sas, list-conns, list-certs): registers for `event`, runs the command,
  // collects every event message that arrives before the response, unregisters.
  absl::StatusOr<std::vector<ViciMessage>> Stream(absl::string_view command, const ViciMessage& request,
                                                  absl::string_view event);

 private:
  ViciClient(int fd, std::string socket_path, absl::Duration timeout);
  absl::Status SendPacket(uint8_t type, absl::string_view name, const ViciMessage* message);
  // Reads one packet: type, name (for named types) and the message bytes.
  struct Packet {
    uint8_t type = 0;
    std::string name;
    std::string body;
  };
  absl::StatusOr<Packet> ReadPacket(absl::Time deadline);
  absl::Status WriteAll(absl::string_view bytes, absl::Time deadline);
  absl::Status ReadAll(char* out, size_t n, absl::Time deadline);
  absl::Status Register(uint8_t type, absl::string_view event, absl::Time deadline);

  int fd_ = -1;              // the connected socket; -1 after a move
  std::string socket_path_;  // for error messages
  absl::Duration timeout_;   // bound on each call
};

}  // namespace strongroom
