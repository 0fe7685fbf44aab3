#!/usr/bin/env bash
# rig.sh: the per-service test rig. Each service runs as its own "host": its own network
# namespace, hostname (UTS namespace) and IP on a test bridge, with real TCP between hosts.
#
# A rig lives in a STATE directory chosen by the caller. Every name derives from a random
# 5-hex-digit id, so parallel rigs never collide:
#   netns  sr<id>-sw            the switch: a Linux bridge br0 with a fixed MAC, lo up
#   netns  sr<id>-<host>        one per host: eth0 (IP given by the caller), lo up
#   veth   s<id><n>a            the switch end of host number n (attached to br0); the host
#                               end is created directly in the host netns as eth0
# Nothing is created in the root network namespace except the /run/netns entries.
#
# STATE files (all written by this script):
#   id                 the rig id
#   owner_pid          the owner process; `sweep` tears the rig down once it is dead
#   owner_start        its start time (/proc/PID/stat field 22), to detect PID reuse
#   hosts              "NAME N IP/PREFIX" per host
#   next               the next host number
#   pids               "PID START" per spawned process (each is a session/process-group leader)
#   lock               flock(1) target serialising updates
# `down` removes these files, then STATE itself if it is empty (logs the caller put there stay).
set -euo pipefail

readonly PROG=rig.sh
readonly IP_TIMEOUT=10       # seconds, for each ip(8) call
readonly LOCK_TIMEOUT=15     # seconds to wait for STATE/lock
readonly TERM_TIMEOUT=3      # seconds between SIGTERM and SIGKILL
readonly KILL_TIMEOUT=3      # seconds to wait for SIGKILLed processes to vanish
readonly SPAWN_SETTLE=2      # seconds to wait for a spawned process to become a session leader
readonly MAX_HOSTS=250
readonly EXEC_ERROR=125      # exit status of `exec` when rig.sh itself fails (not the command)
readonly RIG_FILES=(id owner_pid owner_start hosts next pids lock)

usage() {
  cat <<'EOF'
Usage:
  rig.sh up STATE [--owner PID]
      Create a rig in STATE (created, mode 0700, if missing): a switch netns with a bridge.
      PID (default: the caller, $PPID) owns the rig; `sweep` removes rigs whose owner died.
      Prints the rig id.
  rig.sh host STATE NAME IP/PREFIX
      Add host NAME (^[a-z0-9][a-z0-9.-]{0,62}$, not "sw") with eth0 address IP/PREFIX.
  rig.sh exec STATE NAME [--timeout SECONDS] -- CMD [ARG]...
      Run CMD in NAME's netns, in a fresh UTS namespace with hostname NAME, in the
      foreground. The exit status is CMD's (124 on timeout); rig.sh's own errors exit 125.
  rig.sh spawn STATE NAME LOGFILE -- CMD [ARG]...
      Like exec, but in the background, in a new session (setsid), stdin from /dev/null,
      stdout+stderr appended to LOGFILE. Records and prints the PID (= its process group).
  rig.sh kill STATE PID [SIGNAL]
      PID must have been spawned in this rig. With SIGNAL (name or number): send it to PID
      only, like kill(1). Without: stop PID's whole process group (TERM, 3 s, KILL), wait
      for it to vanish, and forget PID.
  rig.sh down STATE
      Stop every spawned process group, kill any process left in the rig's namespaces,
      delete all of the rig's namespaces (and so its veths), remove the state files.
      Idempotent; succeeds when there is nothing (left) to tear down.
  rig.sh sweep ROOT
      Run `down` on every ROOT/*/ rig whose owner process is dead.
  rig.sh ip STATE NAME        Print NAME's IP address (without prefix).
  rig.sh netns STATE NAME     Print the netns name of NAME ("sw" gives the switch).
  rig.sh help
Errors: "rig.sh: <what>: <why>" on stderr, exit status 1 (2 for usage, 125 for exec).
EOF
}

ERR_STATUS=1
die() { # die WHAT WHY...
  local what=$1
  shift
  printf '%s: %s: %s\n' "$PROG" "$what" "$*" >&2
  exit "$ERR_STATUS"
}
warn() { printf '%s: %s\n' "$PROG" "$*" >&2; }
usage_die() {
  printf '%s: %s: %s\n' "$PROG" "$1" "$2" >&2
  printf "Run '%s help' for usage.\n" "$PROG" >&2
  exit $((ERR_STATUS == 1 ? 2 : ERR_STATUS))
}

# ---------------------------------------------------------------------------------------------
# Small helpers

valid_name() { [[ $1 =~ ^[a-z0-9][a-z0-9.-]{0,62}$ ]]; }
valid_id() { [[ $1 =~ ^[0-9a-f]{5}$ ]]; }
valid_pid() { [[ $1 =~ ^[1-9][0-9]{0,9}$ ]]; }

valid_cidr() {
  local addr=${1%/*} prefix=${1##*/} octet
  [[ $1 == */* && $prefix =~ ^(0|[1-9][0-9]{0,2})$ ]] || return 1
  if [[ $addr == *:* ]]; then
    [[ $addr =~ ^[0-9A-Fa-f:.]{2,45}$ ]] && ((prefix >= 1 && prefix <= 128))
    return
  fi
  [[ $addr =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] && ((prefix >= 1 && prefix <= 32)) || return 1
  local IFS=.
  for octet in $addr; do
    [[ $octet =~ ^(0|[1-9][0-9]*)$ ]] && ((octet <= 255)) || return 1
  done
}

# ip with a timeout; on failure dies with ip's message.
ipc() { # ipc WHAT ARGS...
  local what=$1 err
  shift
  if ! err=$(timeout -k 2 "$IP_TIMEOUT" ip "$@" 2>&1); then
    die "$what" "ip $* failed: ${err//$'\n'/ | }"
  fi
}
# ip with a timeout, errors ignored (teardown).
ipq() { timeout -k 2 "$IP_TIMEOUT" ip "$@" >/dev/null 2>&1 || true; }

# proc_stat PID: sets P_STATE, P_PGID, P_SID, P_START from /proc/PID/stat; fails if PID is gone.
proc_stat() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  # Field 2 (comm) may contain spaces and parentheses; the rest starts after the last ") ".
  local -a f
  read -r -a f <<<"${stat##*) }"
  P_STATE=${f[0]} P_PGID=${f[2]} P_SID=${f[3]} P_START=${f[19]}
}

# running PID [START]: PID exists, is not a zombie, and (if START is given) started at START.
running() {
  proc_stat "$1" || return 1
  [[ $P_STATE != Z && $P_STATE != X ]] || return 1
  [[ -z ${2:-} || $P_START == "$2" ]]
}

# group_alive PGID: some non-zombie process is in process group PGID.
group_alive() {
  local d
  for d in /proc/[0-9]*; do
    proc_stat "${d#/proc/}" 2>/dev/null || continue
    [[ $P_PGID == "$1" && $P_STATE != Z && $P_STATE != X ]] && return 0
  done
  return 1
}

# ours PID START: may we signal process group PID? START is the leader's recorded start time
# ("0" if it had exited before it could be read). If a process with that PID exists but
# started at another time, the PID was reused; and a PID cannot be reused while a process
# group of that number still exists, so our group is gone.
ours() {
  if proc_stat "$1"; then
    [[ $2 != 0 && $P_START == "$2" ]]
  else
    return 0 # leader gone; group members (if any) still carry PGID = PID
  fi
}

now_ms() { local s; s=$(date +%s%N); echo $((s / 1000000)); }

# stop_groups "PID START"...: TERM each group, wait, KILL the survivors, wait again.
stop_groups() {
  local entry pid start
  local -a live=()
  for entry in "$@"; do
    read -r pid start <<<"$entry"
    valid_pid "$pid" || continue
    ours "$pid" "${start:-0}" || continue
    kill -TERM -- "-$pid" 2>/dev/null || true
    kill -CONT -- "-$pid" 2>/dev/null || true # a stopped process only sees TERM once continued
    live+=("$pid")
  done
  ((${#live[@]})) || return 0
  wait_groups "$TERM_TIMEOUT" && return 0
  for pid in "${live[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait_groups "$KILL_TIMEOUT" && return 0
  warn "process groups still alive after SIGKILL: ${live[*]}"
  return 1
}

# wait_groups SECONDS: waits until no group in the caller's `live` array has a live member;
# leaves the survivors in `live`. Fails on timeout.
wait_groups() {
  local deadline pid
  deadline=$(($(now_ms) + 1000 * $1))
  while :; do
    local -a still=()
    for pid in "${live[@]}"; do
      if group_alive "$pid"; then still+=("$pid"); fi
    done
    live=(${still[@]+"${still[@]}"})
    ((${#live[@]})) || return 0
    (($(now_ms) < deadline)) || return 1
    sleep 0.05
  done
}

# ---------------------------------------------------------------------------------------------
# State access

# load_state STATE: sets STATE (absolute), ID, NS_SW. Dies if STATE holds no rig.
load_state() {
  [[ -d $1 ]] || die "$1" "no such STATE directory"
  STATE=$(cd -- "$1" && pwd -P)
  [[ -f $STATE/id ]] || die "$1" "no rig here (run 'rig.sh up' first, or it is already down)"
  ID=$(<"$STATE/id")
  valid_id "$ID" || die "$STATE/id" "corrupt rig id '$ID'"
  NS_SW="sr$ID-sw"
}

lock_state() {
  exec 9>>"$STATE/lock" || die "$STATE/lock" "cannot open"
  flock -w "$LOCK_TIMEOUT" 9 || die "$STATE/lock" "still locked after ${LOCK_TIMEOUT}s"
}
unlock_state() { exec 9>&-; }

# host_line NAME: prints "NAME N CIDR" for host NAME, fails if unknown.
host_line() {
  local n i c
  [[ -f $STATE/hosts ]] || return 1
  while read -r n i c; do
    if [[ $n == "$1" ]]; then
      printf '%s %s %s\n' "$n" "$i" "$c"
      return 0
    fi
  done <"$STATE/hosts"
  return 1
}

# need_host NAME: dies unless NAME is a host of this rig whose netns exists; sets NS_HOST.
need_host() {
  valid_name "$1" || die "$1" "not a valid host name"
  host_line "$1" >/dev/null || die "$1" "no such host in rig $ID (STATE $STATE)"
  NS_HOST="sr$ID-$1"
  [[ -e /run/netns/$NS_HOST ]] || die "$1" "netns $NS_HOST is missing"
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_up() {
  local state="" owner=$PPID
  while (($#)); do
    case $1 in
      --owner) (($# >= 2)) || usage_die "--owner" "missing value"; owner=$2; shift 2 ;;
      -*) usage_die "$1" "unknown option for up" ;;
      *) [[ -z $state ]] || usage_die "$1" "unexpected extra argument"; state=$1; shift ;;
    esac
  done
  [[ -n $state ]] || usage_die "STATE" "missing (up STATE [--owner PID])"
  valid_pid "$owner" || die "--owner" "'$owner' is not a PID"
  running "$owner" || die "--owner" "process $owner does not exist"
  local owner_start=$P_START
  if [[ ! -e $state ]]; then
    mkdir -m 0700 -- "$state" 2>/dev/null || die "$state" "cannot create STATE directory"
  fi
  [[ -d $state ]] || die "$state" "not a directory"
  STATE=$(cd -- "$state" && pwd -P)
  lock_state
  [[ ! -e $STATE/id ]] || die "$state" "already holds rig $(<"$STATE/id") (run 'rig.sh down' first)"
  rm -f -- "$STATE/hosts" "$STATE/pids" "$STATE/next"
  printf '%s\n' "$owner" >"$STATE/owner_pid"
  printf '%s\n' "$owner_start" >"$STATE/owner_start"

  # Pick an id no existing namespace uses, and claim it by creating the switch netns.
  local tries id hex err
  for tries in 1 2 3 4 5 6 7 8 9 10; do
    hex=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    id=${hex:0:5}
    compgen -G "/run/netns/sr$id-*" >/dev/null && continue
    if err=$(timeout -k 2 "$IP_TIMEOUT" ip netns add "sr$id-sw" 2>&1); then
      ID=$id
      break
    fi
    [[ -e /run/netns/sr$id-sw ]] && continue # lost a race with another rig
    die "up" "ip netns add sr$id-sw failed: ${err//$'\n'/ | }"
  done
  [[ -n ${ID:-} ]] || die "up" "no free rig id after $tries tries"
  printf '%s\n' "$ID" >"$STATE/id"
  NS_SW="sr$ID-sw"
  echo 1 >"$STATE/next"
  : >"$STATE/hosts"
  : >"$STATE/pids"

  # From here on, a failure tears the rig down again.
  trap 'unlock_state; (cmd_down "$STATE") >/dev/null 2>&1 || true' EXIT
  # A fixed bridge MAC (02:00:0i:ii:ii:01 from the id): otherwise it changes as ports come and
  # go, and peers stall on stale ARP (notes/slurm.md).
  local mac="02:00:0${ID:0:1}:${ID:1:2}:${ID:3:2}:01"
  ipc "up" -n "$NS_SW" link set lo up
  ipc "up" -n "$NS_SW" link add br0 address "$mac" type bridge stp_state 0 forward_delay 0
  ipc "up" -n "$NS_SW" link set br0 up
  trap - EXIT
  printf '%s\n' "$ID"
}

cmd_host() {
  (($# == 3)) || usage_die "host" "expects STATE NAME IP/PREFIX"
  local name=$2 cidr=$3
  load_state "$1"
  valid_name "$name" || die "$name" "host name must match ^[a-z0-9][a-z0-9.-]{0,62}\$"
  [[ $name != sw ]] || die "$name" "reserved for the switch"
  valid_cidr "$cidr" || die "$cidr" "not an IPv4 (or IPv6) address with /prefix"
  [[ -e /run/netns/$NS_SW ]] || die "$1" "switch netns $NS_SW is missing"
  lock_state
  host_line "$name" >/dev/null && die "$name" "host already exists in rig $ID"
  local h i c n
  while read -r h i c; do
    [[ ${c%/*} != "${cidr%/*}" ]] || die "$cidr" "address already used by host $h"
  done <"$STATE/hosts"
  n=$(<"$STATE/next")
  [[ $n =~ ^[0-9]+$ ]] || die "$STATE/next" "corrupt"
  ((n <= MAX_HOSTS)) || die "$name" "rig $ID already has $MAX_HOSTS hosts"
  echo $((n + 1)) >"$STATE/next"
  printf '%s %s %s\n' "$name" "$n" "$cidr" >>"$STATE/hosts"

  local ns="sr$ID-$name" veth="s$ID${n}a"
  local mac
  mac=$(printf '02:01:0%s:%s:%s:%02x' "${ID:0:1}" "${ID:1:2}" "${ID:3:2}" "$n")
  # On failure, take the host out again (deleting its netns deletes the veth pair).
  UNDO_NAME=$name
  trap undo_host EXIT
  ipc "$name" netns add "$ns"
  ipc "$name" -n "$NS_SW" link add "$veth" type veth peer name eth0 address "$mac" netns "$ns"
  ipc "$name" -n "$NS_SW" link set "$veth" master br0 up
  ipc "$name" -n "$ns" link set lo up
  ipc "$name" -n "$ns" addr add "$cidr" dev eth0
  ipc "$name" -n "$ns" link set eth0 up
  trap - EXIT
}

undo_host() {
  ipq netns del "sr$ID-$UNDO_NAME"
  local h i c tmp
  tmp=$(mktemp "$STATE/hosts.XXXXXX") || return 0
  while read -r h i c; do
    [[ $h == "$UNDO_NAME" ]] || printf '%s %s %s\n' "$h" "$i" "$c"
  done <"$STATE/hosts" >"$tmp"
  mv -f -- "$tmp" "$STATE/hosts"
}

# The command line that runs "$@" in host NAME's netns with its own UTS namespace.
# No string evaluation of the command: sh receives it as "$@".
# shellcheck disable=SC2016  # $0/$@ are for the inner sh
ns_argv() { # ns_argv NS NAME CMD... -> sets NS_ARGV
  NS_ARGV=(nsenter "--net=/run/netns/$1" -- unshare --uts --
    sh -c 'printf "%s\n" "$0" >/proc/sys/kernel/hostname && exec "$@"' "$2" "${@:3}")
}

cmd_exec() {
  ERR_STATUS=$EXEC_ERROR
  (($# >= 2)) || usage_die "exec" "expects STATE NAME [--timeout S] -- CMD [ARG]..."
  local state=$1 name=$2 tmo=""
  shift 2
  while (($#)); do
    case $1 in
      --timeout) (($# >= 2)) || usage_die "--timeout" "missing value"; tmo=$2; shift 2 ;;
      --) shift; break ;;
      *) usage_die "$1" "expected -- before the command" ;;
    esac
  done
  (($#)) || usage_die "CMD" "missing after --"
  if [[ -n $tmo ]]; then
    [[ $tmo =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--timeout" "'$tmo' is not a number of seconds"
  fi
  load_state "$state"
  need_host "$name"
  ns_argv "$NS_HOST" "$name" "$@"
  if [[ -n $tmo ]]; then
    exec timeout -k 2 "$tmo" "${NS_ARGV[@]}"
  fi
  exec "${NS_ARGV[@]}"
}

cmd_spawn() {
  (($# >= 5)) || usage_die "spawn" "expects STATE NAME LOGFILE -- CMD [ARG]..."
  local state=$1 name=$2 log=$3
  [[ $4 == -- ]] || usage_die "$4" "expected -- before the command"
  shift 4
  load_state "$state"
  need_host "$name"
  local logdir
  logdir=$(dirname -- "$log")
  [[ -d $logdir ]] || die "$log" "directory $logdir does not exist"
  : >>"$log" || die "$log" "cannot open for appending"
  ns_argv "$NS_HOST" "$name" "$@"
  # bash's background child is not a process-group leader, so setsid(1) calls setsid()
  # without forking and $! is the PID of the command itself (nsenter/unshare/sh all exec).
  setsid "${NS_ARGV[@]}" </dev/null >>"$log" 2>&1 9>&- &
  local pid=$! start=0 deadline
  deadline=$(($(now_ms) + 1000 * SPAWN_SETTLE))
  while :; do
    if ! running "$pid"; then break; fi # exited already: its log tells why
    start=$P_START
    [[ $P_SID != "$pid" ]] || break
    (($(now_ms) < deadline)) || die "spawn" "process $pid did not become a session leader"
    sleep 0.01
  done
  lock_state
  printf '%s %s\n' "$pid" "$start" >>"$STATE/pids"
  unlock_state
  printf '%s\n' "$pid"
}

cmd_kill() {
  (($# == 2 || $# == 3)) || usage_die "kill" "expects STATE PID [SIGNAL]"
  local pid=$2 sig=${3:-}
  load_state "$1"
  valid_pid "$pid" || die "$pid" "not a PID"
  local p s start="" found=0
  while read -r p s; do
    if [[ $p == "$pid" ]]; then found=1; start=$s; fi
  done <"$STATE/pids"
  if [[ -n $sig ]]; then
    if ! [[ $sig =~ ^([0-9]{1,2}|(SIG)?[A-Z][A-Z0-9+-]*)$ ]] || ! kill -l "${sig#SIG}" >/dev/null 2>&1; then
      die "$sig" "not a signal name or number"
    fi
  fi
  ((found)) || die "$pid" "not spawned by rig $ID (STATE $STATE)"
  if [[ -n $sig ]]; then
    running "$pid" "$start" || die "$pid" "has exited"
    local err
    if [[ $sig =~ ^[0-9]+$ ]]; then
      err=$(kill -n "$sig" -- "$pid" 2>&1) || die "$sig" "kill failed: $err"
    else
      err=$(kill -s "${sig#SIG}" -- "$pid" 2>&1) || die "$sig" "kill failed: $err"
    fi
    return 0
  fi
  stop_groups "$pid $start" || die "$pid" "process group survived SIGKILL"
  lock_state
  local tmp
  tmp=$(mktemp "$STATE/pids.XXXXXX")
  while read -r p s; do
    [[ $p == "$pid" ]] || printf '%s %s\n' "$p" "$s"
  done <"$STATE/pids" >"$tmp"
  mv -f -- "$tmp" "$STATE/pids"
  unlock_state
}

cmd_down() {
  (($# == 1)) || usage_die "down" "expects STATE"
  local state=$1
  [[ -e $state ]] || return 0
  [[ -d $state ]] || die "$state" "not a directory"
  STATE=$(cd -- "$state" && pwd -P)
  if [[ ! -f $STATE/id ]]; then
    remove_state_files
    return 0
  fi
  ID=$(<"$STATE/id")
  valid_id "$ID" || die "$STATE/id" "corrupt rig id '$ID'; refusing to guess what to delete"
  NS_SW="sr$ID-sw"
  exec 9>>"$STATE/lock" || true
  flock -w "$LOCK_TIMEOUT" 9 || warn "$STATE/lock: still locked after ${LOCK_TIMEOUT}s; tearing down anyway"

  local rc=0
  # 1. Every recorded process group.
  local -a entries=()
  if [[ -f $STATE/pids ]]; then mapfile -t entries <"$STATE/pids"; fi
  stop_groups ${entries[@]+"${entries[@]}"} || rc=1

  # 2. Anything still inside one of our namespaces (e.g. a daemon that made its own session).
  local ns pid
  local -a nss=() strays=()
  for ns in /run/netns/sr"$ID"-*; do [[ -e $ns ]] && nss+=("${ns#/run/netns/}"); done
  for ns in ${nss[@]+"${nss[@]}"}; do
    while read -r pid; do
      [[ -n $pid ]] && strays+=("$pid")
    done < <(timeout -k 2 "$IP_TIMEOUT" ip netns pids "$ns" 2>/dev/null || true)
  done
  if ((${#strays[@]})); then
    warn "down: killing processes left in rig $ID's namespaces: ${strays[*]}"
    kill -KILL -- "${strays[@]}" 2>/dev/null || true
    local deadline
    deadline=$(($(now_ms) + 1000 * KILL_TIMEOUT))
    for pid in "${strays[@]}"; do
      while running "$pid" && (($(now_ms) < deadline)); do sleep 0.05; done
    done
  fi

  # 3. Namespaces: hosts first, then the switch. Deleting a netns deletes its veth ends.
  for ns in ${nss[@]+"${nss[@]}"}; do
    [[ $ns == "$NS_SW" ]] || ipq netns del "$ns"
  done
  ipq netns del "$NS_SW"
  for ns in /run/netns/sr"$ID"-*; do
    if [[ -e $ns ]]; then
      warn "down: could not delete netns ${ns#/run/netns/}"
      rc=1
    fi
  done
  if ((rc)); then
    die "down" "rig $ID not fully torn down; state kept in $STATE"
  fi
  exec 9>&-
  remove_state_files
}

remove_state_files() {
  local f
  for f in "${RIG_FILES[@]}"; do rm -f -- "${STATE:?}/$f"; done
  rmdir -- "$STATE" 2>/dev/null || true
}

cmd_sweep() {
  (($# == 1)) || usage_die "sweep" "expects ROOT"
  local root=$1
  [[ -e $root ]] || return 0
  [[ -d $root ]] || die "$root" "not a directory"
  local owner mode
  read -r owner mode < <(stat -Lc '%u %a' -- "$root")
  [[ $owner == "$EUID" ]] || die "$root" "owned by uid $owner, not by us; refusing to act on it"
  (((8#$mode & 8#022) == 0)) || die "$root" "writable by group or others (mode $mode); refusing"
  local dir opid ostart rc=0
  for dir in "$root"/*/; do
    [[ -f $dir/id ]] || continue
    opid=$(cat -- "$dir/owner_pid" 2>/dev/null || true)
    ostart=$(cat -- "$dir/owner_start" 2>/dev/null || true)
    if valid_pid "$opid" && running "$opid" "$ostart"; then continue; fi
    warn "sweep: owner ${opid:-?} of rig $(<"$dir/id") is gone; tearing down ${dir%/}"
    (cmd_down "${dir%/}") || rc=1
  done
  return "$rc"
}

cmd_ip() {
  (($# == 2)) || usage_die "ip" "expects STATE NAME"
  load_state "$1"
  local line n i c
  line=$(host_line "$2") || die "$2" "no such host in rig $ID"
  read -r n i c <<<"$line"
  printf '%s\n' "${c%/*}"
}

cmd_netns() {
  (($# == 2)) || usage_die "netns" "expects STATE NAME"
  load_state "$1"
  if [[ $2 == sw ]]; then printf '%s\n' "$NS_SW"; return; fi
  host_line "$2" >/dev/null || die "$2" "no such host in rig $ID"
  printf 'sr%s-%s\n' "$ID" "$2"
}

main() {
  (($#)) || { usage >&2; exit 2; }
  local cmd=$1
  shift
  [[ $EUID == 0 || $cmd == help || $cmd == -h || $cmd == --help ]] ||
    die "$cmd" "must run as root (network namespaces)"
  case $cmd in
    up) cmd_up "$@" ;;
    host) cmd_host "$@" ;;
    exec) cmd_exec "$@" ;;
    spawn) cmd_spawn "$@" ;;
    kill) cmd_kill "$@" ;;
    down) cmd_down "$@" ;;
    sweep) cmd_sweep "$@" ;;
    ip) cmd_ip "$@" ;;
    netns) cmd_netns "$@" ;;
    help | -h | --help) usage ;;
    *) usage_die "$cmd" "unknown command (up host exec spawn kill down sweep ip netns help)" ;;
  esac
}

main "$@"
