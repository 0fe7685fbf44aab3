// The libvirt domain of a VM workload, as XML (pure: no libvirt here). A transient domain that
// boots the workload's kernel directly, with its disks, the tap netd made for it, a serial log,
// and the workload id in <metadata> (how a restarted host-agent recognises its domains).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strongroom::host_agent::vm {

// The namespace of host-agent's <metadata> element: <sr:workload xmlns:sr=URI id="..."/>.
inline constexpr char kMetadataUri[] = "https://strongroom.dev/xmlns/libvirt/workload/1";
inline constexpr char kMetadataPrefix[] = "sr";
// Every domain host-agent makes is named kDomainPrefix + workload id.
inline constexpr char kDomainPrefix[] = "sr-";

struct VmDisk {
  std::string path;  // a raw file or block device on the host
  bool read_only = false;
  std::string serial;  // what the guest sees in /sys/block/vdX/serial (≤ 20 characters), e.g. "root"
};

// A host directory shared with the guest over virtio-9p (passthrough: the guest's uids on its files). Only
// development-mode stand-ins use this (docs/HOST_AGENT.md "VMs").
struct VmFilesystem {
  std::string host_dir;  // absolute
  std::string tag;       // the mount tag the guest mounts, e.g. "sr_project_share"
  bool read_only = true;
};

struct VmDomainSpec {
  std::string workload_id;  // an ID (validated by the caller)
  std::string uuid;         // the domain's UUID (lowercase 8-4-4-4-12 hex); empty: libvirt picks one
  std::string domain_type;  // "kvm" or "qemu" (TCG)
  uint32_t vcpus = 1;
  uint64_t memory_mib = 512;
  std::string kernel;  // host paths for direct kernel boot
  std::string initrd;  // may be empty
  std::string cmdline;
  std::vector<VmDisk> disks;  // vda, vdb, ... in this order
  std::vector<VmFilesystem> filesystems;
  std::string tap;            // netd's tap (attachment.port_name); empty: no NIC
  std::string mac;            // attachment.mac, the address netd pins
  std::string serial_log;     // the guest's console goes to this file
  std::string emulator = "/usr/bin/qemu-system-x86_64";
};

// INVALID_ARGUMENT naming the field for a spec libvirt would refuse or misread.
absl::StatusOr<std::string> DomainXml(const VmDomainSpec& spec);

std::string DomainName(const std::string& workload_id);

// The workload id in a <metadata> element as virDomainGetMetadata returns it, or nullopt if it is
// not host-agent's.
std::optional<std::string> WorkloadIdFromMetadata(const std::string& element_xml);

// Escapes text for an XML attribute or element.
std::string XmlEscape(const std::string& text);

}  // namespace strongroom::host_agent::vm
