#include "tests/rig/slurm_cluster.h"

#include <openssl/rand.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace strongroom {
namespace {

constexpr absl::Duration kStartTimeout = absl::Seconds(30);

}  // namespace

SlurmCluster::SlurmCluster(Rig* rig, std::string dir, SlurmClusterOptions options)
    : rig_(rig), dir_(std::move(dir)), options_(std::move(options)), conf_(dir_ + "/slurm.conf") {}

SlurmCluster::~SlurmCluster() {
  absl::Status s = Stop();
  if (!s.ok()) std::fprintf(stderr, "SlurmCluster %s: stop failed: %s\n", dir_.c_str(), s.ToString().c_str());
}

pid_t SlurmCluster::slurmd_pid(const std::string& node) const {
  auto it = slurmd_pids_.find(node);
  return it == slurmd_pids_.end() ? 0 : it->second;
}

absl::Status SlurmCluster::WriteFiles() {
  std::error_code ec;
  for (const char* sub : {"", "/munge", "/state", "/spool", "/logs"}) {
    std::filesystem::create_directories(dir_ + sub, ec);
    if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir_, sub, ": ", ec.message()));
  }
  // Non-root users reach munged through this directory (notes/slurm.md).
  chmod(dir_.c_str(), 0755);
  chmod((dir_ + "/munge").c_str(), 0755);
  for (const auto& node : options_.nodes)
    std::filesystem::create_directories(dir_ + "/spool/" + node.name, ec);

  unsigned char key[1024];
  if (RAND_bytes(key, sizeof key) != 1) return absl::InternalError("RAND_bytes failed");
  const std::string key_path = dir_ + "/munge/munge.key";
  {
    std::ofstream out(key_path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(key), sizeof key);
    if (!out) return absl::InternalError("cannot write " + key_path);
  }
  chmod(key_path.c_str(), 0400);

  std::ofstream c(conf_);
  c << "# " << options_.cluster_name << ": written by tests/rig/slurm_cluster.cc\n"
    << "ClusterName=" << options_.cluster_name << "\n"
    << "SlurmctldHost=" << options_.controller_host << "(" << options_.controller_ip << ")\n"
    << "SlurmctldPort=" << options_.controller_port << "\n"
    << "SlurmdPort=" << options_.slurmd_port << "\n"
    << "AuthType=auth/munge\nCredType=cred/munge\n"
    << "AuthInfo=socket=" << dir_ << "/munge/munge.sock\n"
    << "StateSaveLocation=" << dir_ << "/state\n"
    << "SlurmdSpoolDir=" << (options_.nodes_in_workloads ? "/var/spool/slurmd" : dir_ + "/spool/%n") << "\n"
    << "SlurmctldPidFile=" << dir_ << "/slurmctld.pid\n"
    << "SlurmdPidFile=" << (options_.nodes_in_workloads ? "/run/slurm/slurmd.pid" : dir_ + "/slurmd-%n.pid") << "\n"
    << "SlurmctldLogFile=" << dir_ << "/logs/slurmctld.log\n"
    << (options_.nodes_in_workloads ? "" : "SlurmdLogFile=" + dir_ + "/logs/slurmd-%n.log\n")
    << "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n"
    << "AccountingStorageType=accounting_storage/none\nJobCompType=jobcomp/none\nSwitchType=switch/none\n"
    << "MpiDefault=none\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\nDefMemPerCPU=100\n"
    << "SchedulerType=sched/backfill\nSchedulerParameters=bf_interval=1\nReturnToService=2\nMinJobAge=600\n"
    << "SlurmUser=root\nMailProg=/bin/true\nSlurmdParameters=config_overrides\n"
    << "SlurmdTimeout=" << options_.slurmd_timeout_seconds << "\n";
  if (options_.dynamic_nodes) {
    c << "MaxNodeCount=64\nTreeWidth=65533\nNodeset=dynset Feature=" << options_.dynamic_feature << "\n"
      << "PartitionName=batch Nodes=dynset Default=YES MaxTime=INFINITE State=UP\n";
  } else {
    std::vector<std::string> names;
    for (const auto& node : options_.nodes) {
      c << "NodeName=" << node.name << " NodeAddr=" << node.ip << " CPUs=" << options_.cpus_per_node
        << " RealMemory=" << options_.memory_mb << " State=UNKNOWN\n";
      names.push_back(node.name);
    }
    c << "PartitionName=" << options_.cluster_name << " Nodes=" << absl::StrJoin(names, ",")
      << " Default=YES MaxTime=INFINITE State=UP\n";
  }
  for (const std::string& line : options_.extra_config) c << line << "\n";
  for (const auto& [name, source] : options_.files) {
    std::filesystem::copy_file(source, dir_ + "/" + name, std::filesystem::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("copy ", source, " to ", dir_, "/", name, ": ", ec.message()));
  }
  return c.good() ? absl::OkStatus() : absl::InternalError("cannot write " + conf_);
}

absl::Status SlurmCluster::WaitFor(const std::string& what, absl::Duration timeout,
                                   const std::function<bool()>& ready) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (ready()) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::ifstream log(dir_ + "/logs/slurmctld.log");
  std::string tail((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  if (tail.size() > 3000) tail = tail.substr(tail.size() - 3000);
  return absl::DeadlineExceededError(absl::StrCat("Slurm cluster ", options_.cluster_name, ": ", what,
                                                  " within ", absl::FormatDuration(timeout),
                                                  "; slurmctld log tail:\n", tail));
}

absl::StatusOr<std::unique_ptr<SlurmCluster>> SlurmCluster::Start(Rig* rig, const std::string& dir,
                                                                  SlurmClusterOptions options) {
  std::unique_ptr<SlurmCluster> cluster(new SlurmCluster(rig, dir, std::move(options)));
  const SlurmClusterOptions& o = cluster->options_;
  if (absl::Status s = cluster->WriteFiles(); !s.ok()) return s;
  if (absl::Status s = rig->AddHost(o.controller_host, o.controller_ip + "/24"); !s.ok()) return s;
  for (const auto& node : o.nodes) {
    if (absl::Status s = rig->AddHost(node.name, node.ip + "/24"); !s.ok()) return s;
  }
  const std::string logs = dir + "/logs/";
  absl::StatusOr<pid_t> munged =
      rig->Spawn(o.controller_host, logs + "munged.out",
                 {"/usr/sbin/munged", "--foreground", "--force", "--socket=" + dir + "/munge/munge.sock",
                  "--key-file=" + dir + "/munge/munge.key", "--pid-file=" + dir + "/munge/munged.pid",
                  "--seed-file=" + dir + "/munge/munged.seed", "--log-file=" + dir + "/logs/munged.log"});
  if (!munged.ok()) return munged.status();
  cluster->munged_pid_ = *munged;
  if (absl::Status s = cluster->WaitFor("munged did not create its socket", kStartTimeout,
                                        [&] { return std::filesystem::exists(dir + "/munge/munge.sock"); });
      !s.ok()) {
    return s;
  }
  const std::string env_conf = "SLURM_CONF=" + cluster->conf_;
  absl::StatusOr<pid_t> controller =
      rig->Spawn(o.controller_host, logs + "slurmctld.out",
                 {"/usr/bin/env", env_conf, "/usr/sbin/slurmctld", "-D", "-i"});
  if (!controller.ok()) return controller.status();
  cluster->controller_pid_ = *controller;
  if (absl::Status s =
          cluster->WaitFor("slurmctld did not answer scontrol ping", kStartTimeout,
                           [&] {
                             absl::StatusOr<Rig::ExecResult> r =
                                 cluster->Command(o.controller_host, {"scontrol", "ping"}, absl::Seconds(5));
                             return r.ok() && r->exit_code == 0 && absl::StrContains(r->output, "is UP");
                           });
      !s.ok()) {
    return s;
  }
  for (const auto& node : o.nodes) {
    absl::StatusOr<pid_t> slurmd = rig->Spawn(node.name, logs + "slurmd-" + node.name + ".out",
                                              {"/usr/bin/env", env_conf, "/usr/sbin/slurmd", "-D"});
    if (!slurmd.ok()) return slurmd.status();
    cluster->slurmd_pids_[node.name] = *slurmd;
  }
  if (!o.nodes.empty()) {
    if (absl::Status s = cluster->WaitFor(
            "not every node became idle", kStartTimeout,
            [&] {
              absl::StatusOr<Rig::ExecResult> r =
                  cluster->Command(o.controller_host, {"sinfo", "-h", "-N", "-o", "%N %T"}, absl::Seconds(5));
              if (!r.ok() || r->exit_code != 0) return false;
              int idle = 0;
              for (absl::string_view line : absl::StrSplit(r->output, '\n', absl::SkipEmpty())) {
                idle += absl::EndsWith(line, " idle") ? 1 : 0;
              }
              return idle == static_cast<int>(o.nodes.size());
            });
        !s.ok()) {
      return s;
    }
  }
  return cluster;
}

absl::StatusOr<Rig::ExecResult> SlurmCluster::Command(const std::string& host, std::vector<std::string> argv,
                                                      absl::Duration timeout) {
  if (argv.empty()) return absl::InvalidArgumentError("SlurmCluster::Command: empty argv");
  argv[0] = "/usr/bin/" + argv[0];
  argv.insert(argv.begin(), {"/usr/bin/env", "SLURM_CONF=" + conf_});
  return rig_->Exec(host, argv, timeout);
}

absl::Status SlurmCluster::Stop() {
  if (stopped_) return absl::OkStatus();
  absl::Status result;
  // Nodes first: a slurmd that lost its controller ignores SIGTERM (Rig::Stop escalates to SIGKILL anyway).
  for (const auto& [node, pid] : slurmd_pids_) {
    if (absl::Status s = rig_->Stop(pid); !s.ok() && result.ok()) result = s;
  }
  for (pid_t pid : {controller_pid_, munged_pid_}) {
    if (pid == 0) continue;
    if (absl::Status s = rig_->Stop(pid); !s.ok() && result.ok()) result = s;
  }
  stopped_ = true;
  return result;
}

}  // namespace strongroom
