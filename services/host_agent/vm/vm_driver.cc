#include "services/host_agent/vm/vm_driver.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "services/host_agent/vm/domain_xml.h"

namespace strongroom::host_agent::vm {
namespace {

bool IsFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

absl::Status WriteFile(const std::string& path, const std::string& bytes, mode_t mode) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return absl::InternalError(absl::StrCat("creating ", path, ": ", std::strerror(errno)));
  const ssize_t written = write(fd, bytes.data(), bytes.size());
  const int error = errno;
  const bool synced = fsync(fd) == 0;
  close(fd);
  if (written != static_cast<ssize_t>(bytes.size()) || !synced) {
    return absl::InternalError(absl::StrCat("writing ", path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

// One ustar header block.
std::string TarHeader(const std::string& name, size_t size) {
  std::string h(512, '\0');
  auto put = [&](size_t offset, size_t width, const std::string& text) {
    h.replace(offset, text.size(), text);
  };
  auto octal = [](uint64_t value, int digits) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%0*llo", digits, static_cast<unsigned long long>(value));
    return std::string(buffer);
  };
  put(0, 100, name);
  put(100, 8, octal(0444, 7));
  put(108, 8, octal(0, 7));
  put(116, 8, octal(0, 7));
  put(124, 12, octal(size, 11));
  put(136, 12, octal(0, 11));
  h.replace(148, 8, "        ");
  h[156] = '0';
  put(257, 6, std::string("ustar", 5));
  h[262] = '\0';
  put(263, 2, "00");
  unsigned int sum = 0;
  for (unsigned char c : h) sum += c;
  put(148, 8, octal(sum, 6));
  h[154] = '\0';
  h[155] = ' ';
  return h;
}

// A random (version 4) UUID for a new domain.
absl::StatusOr<std::string> RandomUuid() {
  unsigned char b[16];
  if (getrandom(b, sizeof(b), 0) != static_cast<ssize_t>(sizeof(b))) {
    return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  char text[37];
  std::snprintf(text, sizeof(text), "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return std::string(text);
}

}  // namespace

absl::StatusOr<std::string> WorkloadEnvFile(const std::vector<std::pair<std::string, std::string>>& vars) {
  static const std::regex* const kName = new std::regex("^[A-Za-z_][A-Za-z0-9_]*$");
  std::string out;
  for (const auto& [name, value] : vars) {
    if (!std::regex_match(name, *kName)) {
      return absl::InvalidArgumentError(absl::StrCat("workload.env: \"", name, "\" is not a variable name"));
    }
    if (value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("workload.env: ", name, " contains a NUL byte"));
    }
    absl::StrAppend(&out, name, "='", absl::StrReplaceAll(value, {{"'", "'\\''"}}), "'\n");
  }
  return out;
}

std::string ConfigDiskImage(const std::map<std::string, std::string>& files) {
  std::string out;
  for (const auto& [name, contents] : files) {
    out += TarHeader(name, contents.size());
    out += contents;
    out.append((512 - contents.size() % 512) % 512, '\0');
  }
  out.append(1024, '\0');  // the end-of-archive marker
  constexpr size_t kMiB = size_t{1} << 20;
  out.append((kMiB - out.size() % kMiB) % kMiB, '\0');
  return out;
}

absl::StatusOr<VmImage> ResolveVmImage(const std::string& image_root, const std::string& name) {
  VmImage image{absl::StrCat(image_root, "/", name, ".squashfs"),
                absl::StrCat(image_root, "/", name, ".vmlinux"),
                absl::StrCat(image_root, "/", name, ".initrd")};
  if (!IsFile(image.rootfs)) {
    return absl::NotFoundError(absl::StrCat("image ", name, ": a VM needs its root file system ",
                                            image.rootfs, " (a squashfs), which is not in the catalog"));
  }
  if (!IsFile(image.kernel)) {
    return absl::FailedPreconditionError(
        absl::StrCat("image ", name, " has no kernel: ", image.kernel,
                     " is missing (deploy/image/vm/build-vm-boot.sh makes it)"));
  }
  if (!IsFile(image.initrd)) {
    return absl::FailedPreconditionError(
        absl::StrCat("image ", name, " has no initrd: ", image.initrd,
                     " is missing (deploy/image/vm/build-vm-boot.sh makes it)"));
  }
  return image;
}

absl::Status VmDriver::CheckCanRun(const VmImage& image) const {
  return CheckDomainType(options_.domain_type, image.kernel);
}

absl::StatusOr<LibvirtClient*> VmDriver::Client() {
  std::lock_guard<std::mutex> lock(mu_);
  if (client_ && client_->connected()) return client_.get();
  client_.reset();
  absl::StatusOr<std::unique_ptr<LibvirtClient>> client =
      LibvirtClient::Connect(options_.libvirt_uri, on_stop_);
  if (!client.ok()) return client.status();
  client_ = *std::move(client);
  return client_.get();
}

absl::StatusOr<std::string> VmDriver::Start(
    const VmLaunch& launch, const std::function<absl::Status(const std::string& uuid)>& before_create) {
  SR_RETURN_IF_ERROR(CheckCanRun(launch.image));
  absl::StatusOr<LibvirtClient*> client = Client();
  if (!client.ok()) return client.status();
  const std::string disk = launch.workload_dir + "/disk.img";
  const std::string config = launch.workload_dir + "/config.img";
  // The writable layer: sparse, zero until the guest writes ciphertext to it.
  {
    const int fd = open(disk.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return absl::InternalError(absl::StrCat("creating ", disk, ": ", std::strerror(errno)));
    const bool sized = ftruncate(fd, static_cast<off_t>(options_.writable_disk_bytes)) == 0;
    const int error = errno;
    close(fd);
    if (!sized) return absl::InternalError(absl::StrCat("sizing ", disk, ": ", std::strerror(error)));
  }
  std::map<std::string, std::string> files;
  files["network.env"] =
      absl::StrCat("SR_WORKLOAD_ID='", launch.workload_id, "'\nSR_HOSTNAME='", launch.hostname, "'\nSR_IP='",
                   launch.address_cidr, "'\nSR_GW='", launch.gateway, "'\nSR_MAC='", launch.mac,
                   "'\nSR_ENTRYPOINT='", launch.entrypoint, "'\n");
  if (!launch.provisioning_json.empty()) files["provisioning.json"] = launch.provisioning_json;
  if (!launch.workload_env.empty()) files["workload.env"] = launch.workload_env;
  SR_RETURN_IF_ERROR(WriteFile(config, ConfigDiskImage(files), 0600));

  VmDomainSpec spec;
  spec.workload_id = launch.workload_id;
  SR_ASSIGN_OR_RETURN(spec.uuid, RandomUuid());
  spec.domain_type = options_.domain_type;
  spec.vcpus = launch.vcpus;
  spec.memory_mib = launch.memory_bytes >> 20;
  spec.kernel = launch.image.kernel;
  spec.initrd = launch.image.initrd;
  // no_timer_check: under TCG on a loaded node the kernel's IO-APIC timer check can fail ("IO-APIC + timer
  // doesn't work!") and panic the boot; the emulated timer works, the check only times it.
  spec.cmdline = "console=ttyS0 panic=-1 loglevel=3 no_timer_check";
  spec.disks = {{launch.image.rootfs, true, "root"}, {disk, false, "writable"}, {config, true, "config"}};
  spec.filesystems = launch.filesystems;
  spec.tap = launch.tap;
  spec.mac = launch.mac;
  spec.serial_log = launch.workload_dir + "/console.log";
  absl::StatusOr<std::string> xml = DomainXml(spec);
  if (!xml.ok()) return xml.status();
  SR_RETURN_IF_ERROR(before_create(spec.uuid));
  absl::StatusOr<std::string> uuid = (*client)->CreateTransient(*xml);
  if (!uuid.ok()) {
    return absl::Status(uuid.status().code(),
                        absl::StrCat("starting the VM of workload ", launch.workload_id,
                                     launch.tap.empty() ? "" : absl::StrCat(" on tap ", launch.tap), ": ",
                                     uuid.status().message()));
  }
  return uuid;
}

absl::Status VmDriver::Stop(const std::string& workload_id, absl::Duration grace) {
  absl::StatusOr<LibvirtClient*> client = Client();
  if (!client.ok()) return client.status();
  if (grace > absl::ZeroDuration()) {
    if ((*client)->Shutdown(workload_id).ok()) {
      for (const absl::Time deadline = absl::Now() + grace; absl::Now() < deadline;) {
        absl::StatusOr<std::optional<OwnedDomain>> found = (*client)->Find(workload_id);
        if (found.ok() && !found->has_value()) return absl::OkStatus();
        absl::SleepFor(absl::Milliseconds(100));
      }
    }
  }
  return (*client)->Destroy(workload_id);
}

absl::StatusOr<bool> VmDriver::Running(const std::string& workload_id) {
  absl::StatusOr<LibvirtClient*> client = Client();
  if (!client.ok()) return client.status();
  absl::StatusOr<std::optional<OwnedDomain>> found = (*client)->Find(workload_id);
  if (!found.ok()) return found.status();
  return found->has_value();
}

absl::Status VmDriver::WarmUp() {
  absl::StatusOr<LibvirtClient*> client = Client();
  if (!client.ok()) return client.status();
  return (*client)->ProbeEmulator(VmDomainSpec{}.emulator, options_.domain_type);
}

absl::StatusOr<std::vector<std::string>> VmDriver::RunningWorkloads() {
  absl::StatusOr<LibvirtClient*> client = Client();
  if (!client.ok()) return client.status();
  absl::StatusOr<std::vector<OwnedDomain>> owned = (*client)->ListOwned();
  if (!owned.ok()) return owned.status();
  std::vector<std::string> ids;
  for (const OwnedDomain& d : *owned) ids.push_back(d.workload_id);
  return ids;
}

}  // namespace strongroom::host_agent::vm
