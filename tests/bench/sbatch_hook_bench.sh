#!/bin/bash
# sbatch latency with Strongroom's job_submit.lua (and its static strongroom-submit-check) against its anchor, plain
# sbatch on the same Local Slurm without the plugin, in one run (docs/PERFORMANCE.md, "sbatch with the submit
# check"). Budget: p50 added <= 20 ms.
#
#   tests/bench/sbatch_hook_bench.sh BUILD_DIR [N]      (root; N submissions per configuration, default 200)
#
# A throwaway Local Slurm (munged + slurmctld, no nodes, the wait partition) in its own network namespace
# (198.18.12.0/24 on a veth pair, no route out), as in tests/rig. The hook's background call to vm-controller is
# replaced by /bin/true, so only the submit path is measured (its fork is still paid). Everything it started is
# stopped and removed on exit.
set -euo pipefail
build=${1:?usage: sbatch_hook_bench.sh BUILD_DIR [N]}
n=${2:-200}
src=$(cd "$(dirname "$0")/../.." && pwd)
check="$build/services/slurm_hook/strongroom-submit-check"
[[ -x $check ]] || { echo "no $check: build first" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "needs root (netns, slurmctld)" >&2; exit 2; }

dir=$(mktemp -d /tmp/sr-sbatch-bench.XXXXXX)
chmod 711 "$dir"
ns="sr-bench-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
# getaddrinfo(AI_ADDRCONFIG) needs a non-loopback address.
ip netns exec "$ns" ip link add b0 type veth peer name b1
ip netns exec "$ns" ip addr add 198.18.12.1/24 dev b0
ip netns exec "$ns" ip link set b0 up
ip netns exec "$ns" ip link set b1 up
N=(nsenter --net="/run/netns/$ns")

mkdir -p "$dir"/{munge,state,logs}
chmod 755 "$dir/munge"
head -c 1024 /dev/urandom >"$dir/munge/munge.key"
chmod 400 "$dir/munge/munge.key"
"${N[@]}" /usr/sbin/munged --foreground --force --socket="$dir/munge/munge.sock" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/seed" --log-file="$dir/logs/munged.log" \
  >"$dir/logs/munged.out" 2>&1 &
pids+=($!)

cp "$src/deploy/slurm/job_submit.lua" "$dir/job_submit.lua"
cat >"$dir/strongroom-hook.conf" <<EOF
hook=/bin/true
config=/dev/null
check=$check
accounts=proj1
default_account=proj1
max_cpus=8
max_memory_mb=4000
max_time_minutes=1440
EOF

write_conf() {  # $1: extra lines
  cat >"$dir/slurm.conf" <<EOF
ClusterName=bench
SlurmctldHost=$(hostname)(198.18.12.1)
SlurmctldPort=16917
SlurmdPort=16918
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.sock
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/logs/slurmctld.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
MinJobAge=600
SlurmUser=root
MailProg=/bin/true
MaxNodeCount=64
TreeWidth=65533
Nodeset=strongroom Feature=strongroom
PartitionName=batch Nodes=strongroom Default=YES MaxTime=INFINITE State=UP
PartitionName=wait MaxTime=INFINITE State=UP
$1
EOF
}

S=(env -i PATH=/usr/bin:/bin SLURM_CONF="$dir/slurm.conf")
ctld=""
start_ctld() {
  rm -rf "$dir/state"/*
  "${N[@]}" "${S[@]}" /usr/sbin/slurmctld -D -i >"$dir/logs/slurmctld.out" 2>&1 &
  ctld=$!
  pids+=("$ctld")
  for _ in $(seq 100); do "${N[@]}" "${S[@]}" scontrol ping 2>/dev/null | grep -q UP && return 0; sleep 0.1; done
  echo "slurmctld did not start" >&2; tail "$dir/logs/slurmctld.log" >&2; exit 1
}
stop_ctld() {
  kill "$ctld"; for _ in $(seq 100); do kill -0 "$ctld" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$ctld" || true
}

printf '#!/bin/sh\nhostname\n' >"$dir/job.sh"
chmod 755 "$dir/job.sh"
measure() {  # $1: label
  python3 - "$1" "$n" "$dir/job.sh" "/run/netns/$ns" "$dir/slurm.conf" <<'PY'
import statistics, subprocess, sys, time
label, n, script, netns, conf = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
argv = ["nsenter", "--net=" + netns, "runuser", "-u", "nobody", "--", "env", "-i", "PATH=/usr/bin:/bin",
        "SLURM_CONF=" + conf, "sbatch", "--parsable", "--exclusive", "-A", "proj1", "-o", "/dev/null", script]
for _ in range(5):  # warm-up
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd="/tmp")
t = []
for _ in range(n):
    s = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd="/tmp")
    t.append((time.perf_counter() - s) * 1000)
t.sort()
p = lambda q: t[min(len(t) - 1, int(q * len(t)))]
print(f"{label}: n={n} p50={p(0.50):.1f} ms p90={p(0.90):.1f} ms p99={p(0.99):.1f} ms mean={statistics.mean(t):.1f} ms")
print(f"{label}_p50={p(0.50):.3f}")
PY
}

write_conf ""
start_ctld
anchor=$(measure "anchor (no job_submit plugin)")
stop_ctld
write_conf "JobSubmitPlugins=lua"
start_ctld
hook=$(measure "with job_submit.lua + strongroom-submit-check")
# Every job must have been put into the wait partition by the plugin.
if "${N[@]}" "${S[@]}" squeue -h -o %P | grep -vqx wait; then echo "a job escaped the wait partition" >&2; exit 1; fi
stop_ctld
echo "$anchor" | head -1
echo "$hook" | head -1
a=$(echo "$anchor" | sed -n 's/.*_p50=//p')
h=$(echo "$hook" | sed -n 's/.*_p50=//p')
python3 -c "import sys; a,h=float('$a'),float('$h'); d=h-a; print(f'added p50: {d:.1f} ms (budget 20 ms)'); sys.exit(0 if d <= 20 else 1)"
