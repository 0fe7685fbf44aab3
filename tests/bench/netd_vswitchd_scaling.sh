#!/bin/bash
# ovs-vswitchd alone (no netd): how one add-port and one flow bundle scale with the number of veth
# ports already on a userspace-datapath (netdev) bridge. docs/PERFORMANCE.md "## netd" cites it.
#
#   tests/bench/netd_vswitchd_scaling.sh [SIZES] [SAMPLES] [other_config:KEY=VALUE ...]
#   e.g. tests/bench/netd_vswitchd_scaling.sh "1 100 1000" 10
#
# Environment: VSWITCHD=PATH runs another ovs-vswitchd binary (e.g. one built with symbols from
# build-*/_deps/openvswitch); PERF_DATA=FILE records `perf record ${PERF_ARGS:--g}` of it during the samples of
# the last size; KEEP_LOG=FILE keeps its log.
#
# Root. Everything lives in one private netns (srvs-<pid>) and a temporary directory; both are
# removed on exit, whatever happens. No address is configured anywhere.
set -euo pipefail
SIZES=${1:-"1 100 1000"}
SAMPLES=${2:-10}
shift 2 2>/dev/null || shift $#
EXTRA=("$@")

NS=srvs-$$
DIR=$(mktemp -d /tmp/srvs.XXXXXX)
export OVS_RUNDIR=$DIR OVS_DBDIR=$DIR OVS_LOGDIR=$DIR
DB=unix:$DIR/db.sock
cleanup() {
  for p in ovs-vswitchd ovsdb-server; do
    if [[ -f $DIR/$p.pid ]]; then kill "$(cat "$DIR/$p.pid")" 2>/dev/null || true; fi
  done
  sleep 0.5
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

ip netns add "$NS"
inns() { ip netns exec "$NS" "$@"; }
inns ip link set lo up
ovsdb-tool create "$DIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema
inns ovsdb-server "$DIR/conf.db" --remote=punix:"$DIR/db.sock" --pidfile="$DIR/ovsdb-server.pid" \
  --log-file="$DIR/ovsdb-server.log" --unixctl="$DIR/ovsdb-server.ctl" -vconsole:off --detach
ovs-vsctl --db=$DB --no-wait init
for kv in "${EXTRA[@]}"; do ovs-vsctl --db=$DB --no-wait set Open_vSwitch . "$kv"; done
inns "${VSWITCHD:-ovs-vswitchd}" $DB --pidfile="$DIR/ovs-vswitchd.pid" --log-file="$DIR/ovs-vswitchd.log" \
  --unixctl="$DIR/ovs-vswitchd.ctl" -vconsole:off --detach
ovs-vsctl --db=$DB add-br br0 -- set bridge br0 datapath_type=netdev fail-mode=secure
VS_PID=$(cat "$DIR/ovs-vswitchd.pid")

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
pct() { sort -n | awk '{a[NR]=$1} END {i=int(0.5*(NR-1)+0.5)+1; j=int(0.99*(NR-1)+0.5)+1; print a[i]" "a[j]}'; }
cpu() { awk '{print $14+$15}' "/proc/$VS_PID/stat"; }  # user+system ticks (1/100 s), all threads
# The main thread's voluntary context switches: one per poll_block() that actually sleeps.
wakeups() { awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$VS_PID/task/$VS_PID/status"; }

have=0
echo "| ports | add-port p50/p99 ms | add-flows bundle p50/p99 ms | first echo after a carrier change p50/p99 ms | idle CPU % of a core | main-loop wakeups/s |"
echo "|---|---|---|---|---|---|"
for size in $SIZES; do
  # Grow in batches of 100 ports per transaction (the growth itself is not measured).
  while (( have < size )); do
    batch=()
    n=$(( size - have < 100 ? size - have : 100 ))
    for ((k = 0; k < n; k++)); do
      v=fill$((have + k))
      inns ip link add "$v" type veth peer name "${v}p"
      inns ip link set "$v" up
      batch+=(-- add-port br0 "$v")
    done
    ovs-vsctl --db=$DB --timeout=600 "${batch[@]}"
    have=$(( have + n ))
  done
  sleep 6  # let the stats/status updates of the growth settle
  # Idle: CPU and main-loop wakeups over 10 s, nothing asked of it.
  c0=$(cpu); w0=$(wakeups)
  sleep 10
  c1=$(cpu); w1=$(wakeups)
  idle_cpu=$(( (c1 - c0) / 10 ))
  add=() flows=()
  perf_pid=
  if [[ -n ${PERF_DATA:-} && $size == "${SIZES##* }" ]]; then
    perf record -q ${PERF_ARGS:--g} -p "$VS_PID" -o "$PERF_DATA" 2>/dev/null &
    perf_pid=$!
    sleep 1
  fi
  for ((i = 0; i < SAMPLES; i++)); do
    inns ip link add probe type veth peer name probep
    inns ip link set probe up
    t=$(date +%s%N)
    ovs-vsctl --db=$DB add-port br0 probe -- get Interface probe ofport >/dev/null
    add+=("$(ms "$t")")
    printf 'table=0,priority=100,in_port=probe,cookie=0x%x,actions=drop\n' $((i + 1)) >"$DIR/f"
    for k in 1 2 3 4 5 6 7 8; do
      printf 'table=1,priority=%d,in_port=probe,tcp,tp_dst=%d,cookie=0x%x,actions=drop\n' $((100 + k)) $((1000 + k)) $((i + 1)) >>"$DIR/f"
    done
    t=$(date +%s%N)
    ovs-ofctl -O OpenFlow14 --bundle add-flows br0 "$DIR/f"
    flows+=("$(ms "$t")")
    ovs-ofctl -O OpenFlow14 --bundle del-flows br0 "cookie=0x$(printf %x $((i + 1)))/-1"
    ovs-vsctl --db=$DB del-port br0 probe
    inns ip link del probe
  done
  if [[ -n $perf_pid ]]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  # What one link event costs it: the peer of a bridged veth goes down (the host end loses its
  # carrier, as when a veth's peer moves to another netns), then the first OpenFlow echo's round
  # trip; 1 s apart so each event is handled alone.
  echoes=()
  for ((i = 0; i < SAMPLES; i++)); do
    inns ip link set fill0p down
    echoes+=("$(ovs-ofctl -O OpenFlow14 ping br0 | sed -n 's/.*time=\([0-9.]*\) *ms.*/\1/p' | head -1)")
    inns ip link set fill0p up
    sleep 1
  done
  read -r a50 a99 < <(printf '%s\n' "${add[@]}" | pct)
  read -r f50 f99 < <(printf '%s\n' "${flows[@]}" | pct)
  read -r e50 e99 < <(printf '%s\n' "${echoes[@]}" | pct)
  echo "| $size | $a50 / $a99 | $f50 / $f99 | $e50 / $e99 | $idle_cpu | $(( (w1 - w0) / 10 )) |"
done
if [[ -n ${KEEP_LOG:-} ]]; then cp "$DIR/ovs-vswitchd.log" "$KEEP_LOG"; fi
