// The VM driver against the real thing: libvirtd (deploy/libvirt/strongroom-libvirtd: its own sockets and
// qemu.conf, in the node's netns where netd makes its taps), qemu under TCG (this host's /dev/kvm is a PVM
// backend that hangs stock kernels), Debian's kernel with a busybox initramfs (build-test-guest.sh), and
// netd's test bed for the tap. A VM boots on its tap (serial log: its own kernel, hostname and br-secure
// address), reaches its allowlisted service and not another port, and is destroyed; one killed behind
// host-agent's back ends with that reason; one survives its client (no autodestroy) and a new client adopts
// it from its <metadata>; libvirt down and bad input give clear errors and leave nothing. Nothing is left
// afterwards: no domain, qemu, tap or libvirtd.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "services/host_agent/vm/domain_xml.h"
#include "services/host_agent/vm/libvirt_client.h"
#include "strongroom/v1/netd.pb.h"
#include "tests/netd/netd_testbed.h"
#include "tests/rig/files.h"

namespace strongroom::host_agent::vm {
namespace {

using netd::testing::Caller;
using netd::testing::CtlResult;
using netd::testing::NetdTestbed;

// Collects the stop events of one client.
class Stops {
 public:
  LibvirtClient::StopObserver Observer() {
    return [this](const DomainStopped& stopped) {
      std::lock_guard<std::mutex> lock(mu_);
      stops_.push_back(stopped);
      cv_.notify_all();
    };
  }
  std::optional<DomainStopped> WaitFor(const std::string& workload_id, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(timeout);
    for (;;) {
      for (const DomainStopped& s : stops_) {
        if (s.workload_id == workload_id) return s;
      }
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) return std::nullopt;
    }
  }

 private:
  std::mutex mu_;                     // guards stops_
  std::condition_variable cv_;        // signalled per event
  std::vector<DomainStopped> stops_;  // every event so far
};

class VmLibvirtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<NetdTestbed>> bed = NetdTestbed::Start();
    ASSERT_TRUE(bed.ok()) << bed.status();
    bed_ = *std::move(bed);
    dir_ = bed_->rig().state_dir() + "/vm";
    ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0);
    absl::StatusOr<Rig::ExecResult> guest =
        RunWithTimeout({SR_BUILD_TEST_GUEST, dir_ + "/guest"}, absl::Seconds(300));
    ASSERT_TRUE(guest.ok() && guest->exit_code == 0)
        << (guest.ok() ? guest->output : guest.status().ToString());
    absl::StatusOr<pid_t> libvirtd =
        bed_->rig().Spawn("node", dir_ + "/libvirtd.out", {SR_LIBVIRTD, dir_ + "/libvirt"});
    ASSERT_TRUE(libvirtd.ok()) << libvirtd.status();
    libvirtd_ = *libvirtd;
    uri_ = absl::StrCat("qemu:///system?socket=", dir_, "/libvirt/sock/libvirt-sock");
    for (const absl::Time deadline = absl::Now() + absl::Seconds(60);;) {
      absl::StatusOr<std::unique_ptr<LibvirtClient>> client = LibvirtClient::Connect(uri_, stops_.Observer());
      if (client.ok()) {
        client_ = *std::move(client);
        break;
      }
      ASSERT_LT(absl::Now(), deadline) << client.status() << ReadFileOrEmpty(dir_ + "/libvirtd.out");
      absl::SleepFor(absl::Milliseconds(200));
    }
  }

  void TearDown() override {
    if (HasFailure()) {
      std::fprintf(stderr, "---- libvirtd.log ----\n%s\n",
                   ReadFileOrEmpty(dir_ + "/libvirt/log/libvirtd.log").c_str());
      for (const std::string& id : started_) {
        std::fprintf(stderr, "---- %s console ----\n%s\n", id.c_str(), ReadFileOrEmpty(Console(id)).c_str());
        std::fprintf(
            stderr, "---- %s qemu log ----\n%s\n", id.c_str(),
            ReadFileOrEmpty(absl::StrCat(dir_, "/libvirt/log/qemu/", DomainName(id), ".log")).c_str());
      }
    }
    if (client_) {
      absl::StatusOr<std::vector<OwnedDomain>> left = client_->ListOwned();
      if (left.ok()) {
        for (const OwnedDomain& d : *left) (void)client_->Destroy(d.workload_id);
      }
      client_.reset();
    }
    // Any qemu our libvirtd started and that is still there (libvirt's pid files are in our directory).
    for (const std::string& id : started_) {
      if (pid_t pid = QemuPid(id); pid > 0) {
        kill(pid, SIGKILL);
        ADD_FAILURE() << "a qemu was left for " << id;
      }
    }
    if (libvirtd_ > 0) (void)bed_->rig().Stop(libvirtd_);
    bed_.reset();
  }

  std::string Console(const std::string& id) { return absl::StrCat(dir_, "/", id, ".console.log"); }

  // The pid of the workload's qemu while it runs (libvirt's pid file, and the process exists), else 0.
  pid_t QemuPid(const std::string& id) {
    std::string text = ReadFileOrEmpty(absl::StrCat(dir_, "/libvirt/run/qemu/", DomainName(id), ".pid"));
    int pid = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid) || pid <= 0) return 0;
    return kill(pid, 0) == 0 ? pid : 0;
  }

  v1::Port AllocateTap(const std::string& workload) {
    CtlResult r = bed_->Ctl(
        Caller::kHostAgent, "AllocatePort",
        absl::StrCat("{\"workload_id\":\"", workload, "\",\"tap\":{},\"egress_allowlist\":",
                     netd::testing::EgressJson({{"192.0.2.10/32", "PROTOCOL_TCP", netd::testing::kEchoPort}}),
                     "}"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    v1::AllocatePortResponse response;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.json, &response).ok()) << r.output;
    return response.port();
  }

  VmDomainSpec Spec(const std::string& id, const v1::Port* port) {
    VmDomainSpec spec;
    spec.workload_id = id;
    spec.domain_type = "qemu";
    spec.vcpus = 1;
    spec.memory_mib = 256;
    spec.kernel = dir_ + "/guest/vmlinux";
    spec.initrd = dir_ + "/guest/initrd.cpio";
    spec.cmdline = absl::StrCat("console=ttyS0 panic=-1 loglevel=3 no_timer_check sr_hostname=", id);
    if (port != nullptr) {
      const v1::NetworkAttachment& a = port->attachment();
      absl::StrAppend(&spec.cmdline, " sr_ip=", a.ipv4_address(), "/", a.prefix_length(),
                      " sr_gw=", a.gateway(), " sr_probe=192.0.2.10:", netd::testing::kEchoPort,
                      ",192.0.2.10:", netd::testing::kOtherEchoPort);
      spec.tap = a.port_name();
      spec.mac = a.mac();
    }
    spec.serial_log = Console(id);
    return spec;
  }

  absl::Status Start(const VmDomainSpec& spec) {
    started_.push_back(spec.workload_id);
    absl::StatusOr<std::string> xml = DomainXml(spec);
    if (!xml.ok()) return xml.status();
    return client_->CreateTransient(*xml).status();
  }

  // Waits for `marker` on the workload's serial console.
  bool WaitForConsole(const std::string& id, const std::string& marker, absl::Duration timeout) {
    for (const absl::Time deadline = absl::Now() + timeout; absl::Now() < deadline;) {
      if (absl::StrContains(ReadFileOrEmpty(Console(id)), marker)) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return absl::StrContains(ReadFileOrEmpty(Console(id)), marker);
  }

  std::unique_ptr<NetdTestbed> bed_;
  std::string dir_;     // the test's files: guest, libvirt's directories, consoles
  std::string uri_;     // our libvirtd
  pid_t libvirtd_ = 0;  // Spawned in the node's netns
  Stops stops_;         // client_'s stop events
  std::unique_ptr<LibvirtClient> client_;
  std::vector<std::string> started_;  // workload ids of every domain the test created
};

TEST_F(VmLibvirtTest, AVmBootsOnItsTapReachesOnlyItsAllowlistAndIsDestroyed) {
  const v1::Port port = AllocateTap("vm1");
  ASSERT_TRUE(port.tap());
  const absl::Time start = absl::Now();
  ASSERT_TRUE(Start(Spec("vm1", &port)).ok());
  ASSERT_TRUE(WaitForConsole("vm1", "STRONGROOM-VM-UP", absl::Seconds(120)))
      << ReadFileOrEmpty(Console("vm1"));
  std::fprintf(stderr, "vm1: userspace %.1f s after CreateXML (TCG)\n",
               absl::ToDoubleSeconds(absl::Now() - start));
  ASSERT_TRUE(WaitForConsole("vm1", "STRONGROOM-VM-READY", absl::Seconds(120)))
      << ReadFileOrEmpty(Console("vm1"));
  const std::string console = ReadFileOrEmpty(Console("vm1"));
  std::fprintf(stderr, "%s", console.c_str());
  // Its own kernel (Debian's 6.1, not this host's), its hostname, and netd's address and MAC on its NIC.
  EXPECT_TRUE(absl::StrContains(console, "kernel=6.1.0-")) << console;
  EXPECT_TRUE(absl::StrContains(console, "hostname=vm1")) << console;
  EXPECT_TRUE(absl::StrContains(
      console, absl::StrCat("STRONGROOM-VM-NET ", port.attachment().ipv4_address(), "/",
                            port.attachment().prefix_length(), " mac=", port.attachment().mac())))
      << console;
  // The allowlisted service answers through br-secure; the other port of the same host does not.
  EXPECT_TRUE(
      absl::StrContains(console, absl::StrCat("STRONGROOM-VM-REACHED 192.0.2.10:", netd::testing::kEchoPort)))
      << console;
  EXPECT_TRUE(absl::StrContains(
      console, absl::StrCat("STRONGROOM-VM-UNREACHABLE 192.0.2.10:", netd::testing::kOtherEchoPort)))
      << console;

  absl::StatusOr<std::vector<OwnedDomain>> owned = client_->ListOwned();
  ASSERT_TRUE(owned.ok()) << owned.status();
  ASSERT_EQ(owned->size(), 1u);
  EXPECT_EQ((*owned)[0].workload_id, "vm1");
  EXPECT_EQ((*owned)[0].name, "sr-vm1");
  EXPECT_GT(QemuPid("vm1"), 0);

  ASSERT_TRUE(client_->Destroy("vm1").ok());
  std::optional<DomainStopped> stopped = stops_.WaitFor("vm1", absl::Seconds(30));
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(stopped->reason, "VM_DESTROYED");
  EXPECT_EQ(*client_->Find("vm1"), std::nullopt);
  EXPECT_TRUE(client_->Destroy("vm1").ok()) << "idempotent";
  EXPECT_EQ(QemuPid("vm1"), 0);
  // libvirt left netd's tap alone (managed='no'); releasing the port deletes it.
  EXPECT_FALSE(bed_->Links(bed_->NodeNetns(), port.attachment().port_name())->empty());
  ASSERT_EQ(bed_->Ctl(Caller::kHostAgent, "ReleasePort", R"({"workload_id":"vm1"})").exit_code, 0);
  EXPECT_TRUE(bed_->Links(bed_->NodeNetns(), "sr")->empty());
}

TEST_F(VmLibvirtTest, AVmOutlivesItsClientIsAdoptedAndEndsWithTheReasonWhenKilledBehindItsBack) {
  ASSERT_TRUE(Start(Spec("vm2", nullptr)).ok());
  ASSERT_TRUE(WaitForConsole("vm2", "STRONGROOM-VM-UP", absl::Seconds(120)))
      << ReadFileOrEmpty(Console("vm2"));
  const pid_t qemu = QemuPid("vm2");
  ASSERT_GT(qemu, 0);

  // host-agent restarts: its connection goes, the VM stays (transient, no autodestroy).
  client_.reset();
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(QemuPid("vm2"), qemu) << "the VM must outlive the connection that started it";
  Stops adopted_stops;
  absl::StatusOr<std::unique_ptr<LibvirtClient>> again =
      LibvirtClient::Connect(uri_, adopted_stops.Observer());
  ASSERT_TRUE(again.ok()) << again.status();
  client_ = *std::move(again);
  absl::StatusOr<std::vector<OwnedDomain>> owned = client_->ListOwned();
  ASSERT_TRUE(owned.ok()) << owned.status();
  ASSERT_EQ(owned->size(), 1u);
  EXPECT_EQ((*owned)[0].workload_id, "vm2") << "recognised by its <metadata>";
  absl::StatusOr<std::optional<OwnedDomain>> found = client_->Find("vm2");
  ASSERT_TRUE(found.ok() && found->has_value());

  // qemu killed by someone else: the adopted workload ends, and says why.
  ASSERT_EQ(kill(qemu, SIGKILL), 0);
  std::optional<DomainStopped> stopped = adopted_stops.WaitFor("vm2", absl::Seconds(30));
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(stopped->reason, "VM_EMULATOR_FAILED") << stopped->message;
  EXPECT_TRUE(absl::StrContains(stopped->message, "qemu")) << stopped->message;
  EXPECT_EQ(*client_->Find("vm2"), std::nullopt);
  EXPECT_TRUE(client_->ListOwned()->empty());
}

TEST_F(VmLibvirtTest, LibvirtDownAndBadInputGiveClearErrorsAndLeaveNothing) {
  absl::StatusOr<std::unique_ptr<LibvirtClient>> down =
      LibvirtClient::Connect(absl::StrCat("qemu:///system?socket=", dir_, "/nowhere/libvirt-sock"), nullptr);
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
  EXPECT_TRUE(absl::StrContains(down.status().message(), "is unreachable")) << down.status();

  // An image without a kernel.
  VmDomainSpec spec = Spec("vm3", nullptr);
  spec.kernel = dir_ + "/guest/no-such-vmlinux";
  absl::Status missing = Start(spec);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(absl::StrContains(missing.message(), "no-such-vmlinux")) << missing;
  EXPECT_TRUE(client_->ListOwned()->empty());
  EXPECT_EQ(QemuPid("vm3"), 0);

  // A tap that netd never made: libvirt refuses (it must not create one of its own).
  spec = Spec("vm4", nullptr);
  spec.tap = "sr000000000000";
  spec.mac = "02:53:cb:00:71:63";
  absl::Status no_tap = Start(spec);
  ASSERT_FALSE(no_tap.ok());
  EXPECT_TRUE(absl::StrContains(no_tap.message(), "dev doesn't exist")) << no_tap;
  EXPECT_TRUE(client_->ListOwned()->empty());
  EXPECT_TRUE(bed_->Links(bed_->NodeNetns(), "sr")->empty()) << "libvirt made a tap";

  // KVM on this host: a PVM backend, refused with the cause before anything is made.
  struct stat st;
  if (stat("/sys/module/kvm_pvm", &st) == 0) {
    absl::Status kvm = CheckDomainType("kvm", spec.kernel);
    EXPECT_EQ(kvm.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(absl::StrContains(kvm.message(), "PVM backend")) << kvm;
  }
}

}  // namespace
}  // namespace strongroom::host_agent::vm
