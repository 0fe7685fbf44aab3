#include "services/host_agent/container/scratch.h"

#include <fcntl.h>
#include <libcryptsetup.h>
#include <linux/dm-ioctl.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "common/subprocess.h"
#include "services/host_agent/container/secure_key.h"
#include "services/host_agent/mounts.h"

namespace strongroom::host_agent {
namespace {

constexpr size_t kKeyBytes = 64;                               // aes-xts-plain64 with 2 x 256-bit keys
constexpr uint64_t kHeaderWipeBytes = uint64_t{16} << 20;      // the LUKS2 default header area (16 MiB)
constexpr absl::Duration kDeactivateWait = absl::Seconds(10);  // dm-crypt busy: retry this long

absl::Status CryptError(absl::string_view what, int rc) {
  return absl::InternalError(absl::StrCat("libcryptsetup ", what, ": ", std::strerror(-rc)));
}

// Formats and activates; the key lives only for the duration of this function.
absl::Status ActivateCrypt(const ScratchLayout& layout) {
  SR_ASSIGN_OR_RETURN(SecureKey key, SecureKey::Generate(kKeyBytes));
  crypt_device* cd = nullptr;
  int rc = crypt_init(&cd, layout.loop_device.c_str());
  if (rc < 0) return CryptError(absl::StrCat("init ", layout.loop_device), rc);
  if (layout.encryption == v1::SCRATCH_ENCRYPTION_PLAIN_DMCRYPT) {
    crypt_params_plain params{};
    params.hash = nullptr;  // the key is used as is
    params.sector_size = 4096;
    rc = crypt_format(cd, CRYPT_PLAIN, "aes", "xts-plain64", nullptr, key.data(), key.size(), &params);
  } else {
    // No keyslot ever exists, so no PBKDF protects anything; keep the volume-key digest cheap (argon2 under
    // TCG is slow and memory-hungry, and the 512-bit random key makes the digest unattackable anyway).
    crypt_pbkdf_type pbkdf{};
    pbkdf.type = CRYPT_KDF_PBKDF2;
    pbkdf.hash = "sha256";
    pbkdf.iterations = 1000;
    pbkdf.flags = CRYPT_PBKDF_NO_BENCHMARK;
    crypt_set_pbkdf_type(cd, &pbkdf);
    crypt_params_luks2 params{};
    params.sector_size = 4096;
    rc = crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", nullptr, key.data(), key.size(), &params);
  }
  if (rc < 0) {
    crypt_free(cd);
    return CryptError("format", rc);
  }
  // Keep the key out of the kernel keyring: it then lives only in the dm-crypt target, which wipes it when
  // the device is deactivated (a keyring copy could outlive the device).
  crypt_volume_key_keyring(cd, 0);
  rc = crypt_activate_by_volume_key(cd, layout.crypt_name.c_str(), key.data(), key.size(), 0);
  key.Wipe();
  crypt_free(cd);  // libcryptsetup wipes its own copy of the key
  if (rc < 0) return CryptError(absl::StrCat("activate ", layout.crypt_name), rc);
  return absl::OkStatus();
}

std::string FsDevice(const ScratchLayout& layout) {
  return layout.encryption == v1::SCRATCH_ENCRYPTION_NONE ? layout.loop_device
                                                          : absl::StrCat("/dev/mapper/", layout.crypt_name);
}

// Zeroes the first 16 MiB (LUKS2 header and its copy; the start of a plain volume): O(1) in the scratch size.
absl::Status WipeHeader(const std::string& file) {
  const int fd = open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? absl::OkStatus() : absl::InternalError(std::strerror(errno));
  struct stat st;
  fstat(fd, &st);
  const uint64_t n = std::min<uint64_t>(kHeaderWipeBytes, static_cast<uint64_t>(st.st_size));
  static const std::string zeros(1 << 20, '\0');
  absl::Status status;
  for (uint64_t off = 0; off < n && status.ok(); off += zeros.size()) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(zeros.size(), n - off));
    if (pwrite(fd, zeros.data(), len, static_cast<off_t>(off)) != static_cast<ssize_t>(len)) {
      status = absl::InternalError(absl::StrCat("wipe header of ", file, ": ", std::strerror(errno)));
    }
  }
  fdatasync(fd);
  close(fd);
  return status;
}

}  // namespace

ScratchLayout LayoutFor(const std::string& workload_dir, const std::string& workload_id) {
  ScratchLayout l;
  l.backing_file = workload_dir + "/scratch.img";
  l.crypt_name = "strongroom-" + workload_id;
  l.mount_point = workload_dir + "/scratch";
  return l;
}

absl::Status CheckDmCrypt() {
  // The node alone proves nothing: libdevmapper (libvirtd's, for one) creates /dev/mapper/control with the
  // default numbers on a kernel without device-mapper. Ask the driver itself (opening it loads dm_mod).
  const int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
  dm_ioctl version{};
  version.version[0] = DM_VERSION_MAJOR;
  version.data_size = sizeof(version);
  const bool answers = fd >= 0 && ioctl(fd, DM_VERSION, &version) == 0;
  const int error = errno;
  if (fd >= 0) close(fd);
  if (!answers) {
    return absl::FailedPreconditionError(absl::StrCat(
        "encrypted scratch unavailable: this kernel has no device-mapper (CONFIG_BLK_DEV_DM; /dev/mapper/control: ",
        std::strerror(error),
        "), so dm-crypt (CONFIG_DM_CRYPT) cannot be used; refusing to run with unencrypted scratch "
        "(host-agent config allow_unencrypted_scratch is for development only)"));
  }
  return absl::OkStatus();
}

absl::Status CreateScratch(ScratchLayout& layout, const ScratchOptions& options,
                           const std::function<absl::Status(const ScratchLayout&)>& record) {
  auto fail = [&](absl::Status s) {
    (void)DestroyScratch(layout);
    return s;
  };
  std::error_code ec;
  std::filesystem::create_directories(layout.mount_point, ec);
  const int fd = open(layout.backing_file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return fail(
        absl::InternalError(absl::StrCat("create ", layout.backing_file, ": ", std::strerror(errno))));
  const int rc = ftruncate(fd, static_cast<off_t>(options.size_bytes));  // sparse: O(1) in the size
  close(fd);
  if (rc != 0)
    return fail(absl::InternalError(absl::StrCat("size ", layout.backing_file, ": ", std::strerror(errno))));

  absl::StatusOr<std::string> loop = AttachLoop(layout.backing_file, /*read_only=*/false);
  if (!loop.ok()) return fail(loop.status());
  layout.loop_device = *loop;
  if (absl::Status s = record(layout); !s.ok()) return fail(s);

  if (layout.encryption != v1::SCRATCH_ENCRYPTION_NONE) {
    if (absl::Status s = ActivateCrypt(layout); !s.ok()) return fail(Annotate(s, "dm-crypt"));
  }
  const std::string device = FsDevice(layout);
  absl::StatusOr<RunResult> mkfs = Run(
      {options.mkfs_binary, "-q", "-F", "-m", "0", "-O", "^has_journal", "-E",
       absl::StrCat("lazy_itable_init=1,nodiscard,root_owner=", options.owner_uid, ":", options.owner_uid),
       device},
      options.mkfs_timeout);
  if (!mkfs.ok()) return fail(mkfs.status());
  if (mkfs->exit_code != 0) {
    return fail(absl::InternalError(
        absl::StrCat("mkfs.ext4 ", device, " exited ", mkfs->exit_code, ": ", mkfs->output)));
  }
  if (mount(device.c_str(), layout.mount_point.c_str(), "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "") != 0) {
    return fail(absl::InternalError(absl::StrCat("mount ", device, ": ", std::strerror(errno))));
  }
  // Private: never propagated into another mount namespace, where a copy would pin the scratch. (Not
  // unbindable: overlayfs refuses layers on unbindable mounts, see clone_private_mount.)
  if (absl::Status s = MakePrivate(layout.mount_point, /*unbindable=*/false); !s.ok()) return fail(s);
  return absl::OkStatus();
}

ScratchTeardown DestroyScratch(const ScratchLayout& layout) {
  ScratchTeardown t;
  if (absl::Status s = Unmount(layout.mount_point); !s.ok()) {
    t.unmounted = false;
    t.leftovers.push_back(std::string(s.message()));
  }
  if (access(absl::StrCat("/dev/mapper/", layout.crypt_name).c_str(), F_OK) == 0) {
    // EBUSY while the file system is still held (a lazily detached mount whose last user is going away):
    // retried within a bound, then reported.
    const absl::Time deadline = absl::Now() + kDeactivateWait;
    int rc = crypt_deactivate(nullptr, layout.crypt_name.c_str());
    while (rc == -EBUSY && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(100));
      rc = crypt_deactivate(nullptr, layout.crypt_name.c_str());
    }
    if (rc < 0 && rc != -ENODEV) {
      t.deactivated = false;
      t.leftovers.push_back(
          absl::StrCat("dm-crypt ", layout.crypt_name, ": deactivate: ", std::strerror(-rc)));
    }
  }
  if (absl::Status s = WipeHeader(layout.backing_file); !s.ok())
    t.leftovers.push_back(std::string(s.message()));
  // The loop device we recorded, and any other one still backed by this file (a crash before recording).
  std::vector<std::pair<std::string, std::string>> loops = LoopsBackedUnder(layout.backing_file);
  if (!layout.loop_device.empty()) loops.push_back({layout.loop_device, layout.backing_file});
  for (const auto& [device, file] : loops) {
    if (file != layout.backing_file) continue;
    if (absl::Status s = DetachLoop(device, file); !s.ok()) {
      t.deactivated = false;
      t.leftovers.push_back(std::string(s.message()));
    }
  }
  if (unlink(layout.backing_file.c_str()) != 0 && errno != ENOENT) {
    t.file_removed = false;
    t.leftovers.push_back(absl::StrCat("unlink ", layout.backing_file, ": ", std::strerror(errno)));
  }
  if (rmdir(layout.mount_point.c_str()) != 0 && errno != ENOENT) {
    t.leftovers.push_back(absl::StrCat("rmdir ", layout.mount_point, ": ", std::strerror(errno)));
  }
  return t;
}

}  // namespace strongroom::host_agent
