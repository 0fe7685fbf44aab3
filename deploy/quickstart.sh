#!/usr/bin/env bash
# README command 1: the whole Strongroom stack on this machine, plus one sample job.
#
#   deploy/quickstart.sh          install deps, build, build the workload image, bring everything up, run two
#                                 sample jobs as an ordinary user (`sbatch --exclusive`: a whole-node container;
#                                 `sbatch -n1`: a VM), print their output and timelines, and leave the stack up
#                                 for exploring
#   deploy/quickstart.sh status   is it up, and where
#   deploy/quickstart.sh down     remove everything it started (processes, namespaces, OVS, PostgreSQL, state)
#
# What comes up (tests/e2e/e2e_stack.h; every piece real, each "host" a network namespace on one test bridge):
# PostgreSQL; munge plus two Slurm clusters (Global: a controller and 2 compute nodes; Local: a controller with
# dynamic nodes, job_submit.lua and EpilogSlurmctld); on every compute node ovsdb-server + ovs-vswitchd with
# br-secure, netd, libvirtd (deploy/libvirt/strongroom-libvirtd; VMs run under qemu TCG here) and host-agent;
# backend; vm-controller with the controlling VM's side of the secure data path (its enrollment listener, its own
# charon as the IPsec responder and nfs-ganesha exporting the project share; docs/IPSEC.md); a PKI. The sample
# project uses the data path: each workload enrolls, brings up IPsec to the controlling VM and only then starts
# slurmd, and no compute host holds the Local munge key. The stack is held by one process
# (strongroom-e2e-stack) whose SIGTERM removes it all.
#
# State: $STRONGROOM_QUICKSTART_DIR (default /var/tmp/strongroom-quickstart). Needs root.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${STRONGROOM_QUICKSTART_DIR:-/var/tmp/strongroom-quickstart}
build=${STRONGROOM_BUILD_DIR:-$root/build}
demo_user=${STRONGROOM_DEMO_USER:-srdemo}

say() { printf 'quickstart: %s\n' "$*" >&2; }
pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
owner_pid() { cat "$state/owner.pid" 2>/dev/null || true; }

down() {
  local pid
  pid=$(owner_pid)
  if pid_alive "$pid"; then
    say "stopping the stack (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 600); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then
      say "the stack owner did not exit within 60 s; see $state/stack.log"
      exit 1
    fi
  fi
  # A crashed owner leaves its rig and database behind: the sweeps remove rigs/instances whose owner is gone.
  [[ -d $state/rig ]] && "$root/tests/rig/rig.sh" sweep "$state/rig" || true
  "$root/tests/rig/postgres.sh" sweep /tmp/strongroom-pg || true
  if [[ -f $state/created-user ]]; then
    userdel --remove "$(<"$state/created-user")" 2>/dev/null || true
  fi
  rm -rf -- "$state"
  say "stack removed"
}

status() {
  local pid
  pid=$(owner_pid)
  if pid_alive "$pid"; then
    echo "up (owner pid $pid); environment: $state/stack.env; log: $state/stack.log"
  else
    echo "down"
  fi
}

ensure_demo_user() {
  id "$demo_user" >/dev/null 2>&1 && return
  useradd --create-home --shell /bin/bash "$demo_user"
  echo "$demo_user" >"$state/created-user"
  say "created the ordinary user $demo_user for the sample job (removed by down)"
}

up() {
  if pid_alive "$(owner_pid)"; then
    say "the stack is already up"
    explore
    return
  fi
  "$root/deploy/install-deps.sh"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j "$(nproc)" --target strongroom-e2e-stack backend vm-controller host-agent netd \
    strongroomctl strongroom-global-job strongroom-slurm-hook strongroom-submit-check

  mkdir -p "$state"
  chmod 0711 "$state" # the demo user reaches the Local Slurm's files below it
  ensure_demo_user
  rm -f "$state/stack.env" "$state/report.txt"
  say "bringing the stack up (the first run builds the workload image with debootstrap: a few minutes)"
  setsid "$build/tests/e2e/strongroom-e2e-stack" --root "$state/rig" --env-file "$state/stack.env" \
    --demo-user "$demo_user" --report "$state/report.txt" </dev/null >>"$state/stack.log" 2>&1 &
  echo $! >"$state/owner.pid"
  local pid
  pid=$(owner_pid)
  for _ in $(seq 1 12000); do # 20 minutes: image build + stack + two jobs
    [[ -f $state/report.txt ]] && break
    if ! pid_alive "$pid"; then
      say "the stack failed to come up; the end of $state/stack.log:"
      tail -n 60 "$state/stack.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  [[ -f $state/report.txt ]] || { say "no report after 20 minutes; see $state/stack.log"; exit 1; }
  cat "$state/report.txt"
  explore
}

explore() {
  # shellcheck source=/dev/null
  . "$state/stack.env"
  cat <<EOF

The stack stays up (state in $state). Try:

  # submit as $demo_user on the Local Slurm (its login node is the network namespace $SR_LOCAL_NETNS)
  cat >/tmp/job.sh <<'JOB'
#!/bin/bash
hostname; id; cat /proc/self/uid_map
JOB
  # (development-mode share: a container writes as uid 100000+uid, a VM through 9p as the user's own uid)
  install -d -m 1777 -o \$((100000 + \$(id -u $demo_user))) $SR_SHARE/$demo_user
  nsenter --net=/run/netns/$SR_LOCAL_NETNS runuser -u $demo_user -- env SLURM_CONF=$SR_LOCAL_SLURM_CONF \\
      sbatch --exclusive -A proj1 --chdir=$SR_SHARE/$demo_user /tmp/job.sh   # a whole-node container
  nsenter --net=/run/netns/$SR_LOCAL_NETNS runuser -u $demo_user -- env SLURM_CONF=$SR_LOCAL_SLURM_CONF \\
      sbatch -n1 -A proj1 --chdir=$SR_SHARE/$demo_user /tmp/job.sh           # shares its node: a VM
  nsenter --net=/run/netns/$SR_LOCAL_NETNS env SLURM_CONF=$SR_LOCAL_SLURM_CONF squeue
  nsenter --net=/run/netns/$SR_GLOBAL_NETNS env SLURM_CONF=$SR_GLOBAL_SLURM_CONF squeue -o '%i %a %T %N'

  # operators: strongroomctl with mTLS from the client namespace
  ctl() { nsenter --net=/run/netns/$SR_CLIENT_NETNS $build/services/strongroomctl/strongroomctl \\
      --trust-domain $SR_TRUST_DOMAIN --ca $SR_PKI/ca.pem --cert $SR_PKI/operator.pem --key $SR_PKI/operator.key "\$@"; }
  ctl --target $SR_BACKEND jobs
  ctl --target $SR_BACKEND timeline <GLOBAL_JOB_ID>
  ctl --target $SR_BACKEND audit verify
  ctl --target $SR_VM_CONTROLLER --server-role vm-controller call strongroom.v1.VmController/ListLocalJobs '{}'

Logs: $SR_STACK_DIR/logs/ (JSON lines). Remove everything: deploy/quickstart.sh down
EOF
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) say "unknown command \"$1\"; use up, status or down"; exit 2 ;;
esac
