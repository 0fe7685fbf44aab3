#include "services/host_agent/vm/domain_xml.h"

#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace strongroom::host_agent::vm {
namespace {

bool Matches(const std::string& text, const char* pattern) {
  return std::regex_match(text, std::regex(pattern));
}

}  // namespace

std::string XmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '\'':
        out += "&apos;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string DomainName(const std::string& workload_id) { return absl::StrCat(kDomainPrefix, workload_id); }

absl::StatusOr<std::string> DomainXml(const VmDomainSpec& spec) {
  auto invalid = [](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
  };
  if (!Matches(spec.workload_id, "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"))
    return invalid("workload_id", "not an ID");
  if (spec.domain_type != "kvm" && spec.domain_type != "qemu") {
    return invalid("domain_type", absl::StrCat("\"", spec.domain_type, "\" is neither \"kvm\" nor \"qemu\""));
  }
  if (!spec.uuid.empty() &&
      !Matches(spec.uuid, "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")) {
    return invalid("uuid", "not a lowercase UUID");
  }
  if (spec.vcpus < 1 || spec.vcpus > 1024) return invalid("vcpus", "must be 1..1024");
  if (spec.memory_mib < 64) return invalid("memory_mib", "must be at least 64");
  if (spec.kernel.empty() || spec.kernel[0] != '/') return invalid("kernel", "an absolute path is required");
  if (!spec.initrd.empty() && spec.initrd[0] != '/') return invalid("initrd", "must be an absolute path");
  if (spec.serial_log.empty() || spec.serial_log[0] != '/')
    return invalid("serial_log", "an absolute path is required");
  if (spec.disks.size() > 20) return invalid("disks", "at most 20");
  if (spec.filesystems.size() > 8) return invalid("filesystems", "at most 8");
  for (size_t i = 0; i < spec.filesystems.size(); ++i) {
    const VmFilesystem& fs = spec.filesystems[i];
    const std::string field = absl::StrCat("filesystems[", i, "]");
    if (fs.host_dir.empty() || fs.host_dir[0] != '/')
      return invalid(field + ".host_dir", "an absolute path is required");
    // Control characters cannot appear in XML 1.0 at all (escaping does not help), and a ".." would let the
    // share name a directory other than the one it appears to.
    for (unsigned char c : fs.host_dir) {
      if (c < 0x20 || c == 0x7f) return invalid(field + ".host_dir", "contains a control character");
    }
    if (absl::StrContains(absl::StrCat(fs.host_dir, "/"), "/../"))
      return invalid(field + ".host_dir", "may not contain \"..\"");
    if (!Matches(fs.tag, "^[A-Za-z0-9_]{1,31}$")) return invalid(field + ".tag", "1..31 of [A-Za-z0-9_]");
  }
  if (!spec.tap.empty()) {
    if (!Matches(spec.tap, "^[A-Za-z0-9_.-]{1,15}$")) return invalid("tap", "not an interface name");
    if (!Matches(spec.mac, "^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")) return invalid("mac", "not a lowercase MAC");
  }

  std::string xml = absl::StrCat("<domain type='", spec.domain_type, "'>\n");
  absl::StrAppend(&xml, "  <name>", XmlEscape(DomainName(spec.workload_id)), "</name>\n");
  if (!spec.uuid.empty()) absl::StrAppend(&xml, "  <uuid>", spec.uuid, "</uuid>\n");
  absl::StrAppend(&xml, "  <metadata>\n    <", kMetadataPrefix, ":workload xmlns:", kMetadataPrefix, "='",
                  kMetadataUri, "' id='", XmlEscape(spec.workload_id), "'/>\n  </metadata>\n");
  absl::StrAppend(&xml, "  <memory unit='MiB'>", spec.memory_mib, "</memory>\n");
  absl::StrAppend(&xml, "  <vcpu placement='static'>", spec.vcpus, "</vcpu>\n");
  absl::StrAppend(&xml, "  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n");
  absl::StrAppend(&xml, "    <kernel>", XmlEscape(spec.kernel), "</kernel>\n");
  if (!spec.initrd.empty()) absl::StrAppend(&xml, "    <initrd>", XmlEscape(spec.initrd), "</initrd>\n");
  absl::StrAppend(&xml, "    <cmdline>", XmlEscape(spec.cmdline), "</cmdline>\n  </os>\n");
  // TCG refuses host-passthrough; 'maximum' is every feature TCG emulates.
  absl::StrAppend(
      &xml, spec.domain_type == "kvm" ? "  <cpu mode='host-passthrough'/>\n" : "  <cpu mode='maximum'/>\n");
  absl::StrAppend(&xml, "  <features><acpi/></features>\n  <clock offset='utc'/>\n");
  // The VM never comes back by itself: a guest that powers off, reboots or crashes ends its
  // workload (the lifecycle event says which).
  absl::StrAppend(&xml,
                  "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n"
                  "  <on_crash>destroy</on_crash>\n");
  absl::StrAppend(&xml, "  <devices>\n    <emulator>", XmlEscape(spec.emulator), "</emulator>\n");
  for (size_t i = 0; i < spec.disks.size(); ++i) {
    const VmDisk& disk = spec.disks[i];
    if (disk.path.empty() || disk.path[0] != '/')
      return invalid(absl::StrCat("disks[", i, "].path"), "an absolute path is required");
    if (!Matches(disk.serial, "^[A-Za-z0-9_-]{0,20}$"))
      return invalid(absl::StrCat("disks[", i, "].serial"), "1..20 of [A-Za-z0-9_-]");
    // The writable disk bypasses the host's page cache (it holds only the guest's ciphertext, and a VM's
    // writes should not crowd the node's memory). A read-only disk (the image's root, the config disk) goes
    // through it: every VM on the node shares one cached copy of the image.
    absl::StrAppend(&xml, "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw' ",
                    disk.read_only ? "cache='writeback' io='threads'" : "cache='none' io='native'", "/>\n",
                    "      <source file='", XmlEscape(disk.path), "'/>\n      <target dev='vd",
                    std::string(1, static_cast<char>('a' + i)), "' bus='virtio'/>\n");
    if (!disk.serial.empty()) absl::StrAppend(&xml, "      <serial>", disk.serial, "</serial>\n");
    if (disk.read_only) absl::StrAppend(&xml, "      <readonly/>\n");
    absl::StrAppend(&xml, "    </disk>\n");
  }
  for (const VmFilesystem& fs : spec.filesystems) {
    // qemu runs as root (deploy/libvirt/strongroom-libvirtd): passthrough keeps the guest's uids on the
    // files.
    absl::StrAppend(&xml,
                    "    <filesystem type='mount' accessmode='passthrough'>\n      <driver type='path'/>\n"
                    "      <source dir='",
                    XmlEscape(fs.host_dir), "'/>\n      <target dir='", XmlEscape(fs.tag), "'/>\n");
    if (fs.read_only) absl::StrAppend(&xml, "      <readonly/>\n");
    absl::StrAppend(&xml, "    </filesystem>\n");
  }
  if (!spec.tap.empty()) {
    // netd's tap, unmanaged: libvirt opens it and does nothing else (no bridge, no MAC, no MTU).
    absl::StrAppend(
        &xml, "    <interface type='ethernet'>\n      <mac address='", spec.mac, "'/>\n      <target dev='",
        spec.tap, "' managed='no'/>\n      <model type='virtio'/>\n",
        // No checksum or segmentation offload in either direction: on br-secure's
        // userspace datapath ovs-vswitchd reads the tap through a packet socket, and a
        // frame with a checksum left for "the hardware" would leave the bridge broken
        // (the veth's `tx off`, notes/ovs.md). The guest computes every checksum.
        "      <driver>\n        <host csum='off' gso='off' tso4='off' tso6='off' ecn='off' ufo='off'/>\n"
        "        <guest csum='off' tso4='off' tso6='off' ecn='off' ufo='off'/>\n      </driver>\n"
        "    </interface>\n");
  }
  absl::StrAppend(&xml, "    <serial type='file'>\n      <source path='", XmlEscape(spec.serial_log),
                  "'/>\n      <target port='0'/>\n    </serial>\n");
  absl::StrAppend(&xml, "    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\n");
  absl::StrAppend(&xml, "    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n");
  absl::StrAppend(&xml, "  </devices>\n</domain>\n");
  return xml;
}

std::optional<std::string> WorkloadIdFromMetadata(const std::string& element_xml) {
  // virDomainGetMetadata(ELEMENT, kMetadataUri) returns the element without its namespace
  // (<workload id="ID"/>: the URI was the lookup key); accepted too, with any prefix and attribute
  // order, is the element as written, whose namespace must then be host-agent's.
  static const std::regex* const kElement = new std::regex("^\\s*<([A-Za-z0-9_]+:)?workload\\s[^<>]*/>\\s*$");
  static const std::regex* const kUri = new std::regex("\\sxmlns(:[A-Za-z0-9_]+)?=[\"']([^\"']*)[\"']");
  static const std::regex* const kId = new std::regex("\\sid=[\"']([A-Za-z0-9][A-Za-z0-9_.-]{0,62})[\"']");
  std::smatch uri;
  std::smatch id;
  if (!std::regex_match(element_xml, *kElement) || !std::regex_search(element_xml, id, *kId))
    return std::nullopt;
  if (std::regex_search(element_xml, uri, *kUri) && uri[2] != kMetadataUri) return std::nullopt;
  return id[1].str();
}

}  // namespace strongroom::host_agent::vm
