#!/usr/bin/env bash
# The data-path logic of deploy/image/entrypoint (docs/IPSEC.md "The client") with stubbed binaries: charon,
# strongroom-enroll, munged (through runuser), slurmd, squeue. Each case runs the real entrypoint in a mount and
# network namespace of its own (a tmpfs on /run as in the container, a copy of /etc/hosts, slurmd's path bound to
# the stub, a tmpfs on /etc/munge), so nothing of the host changes. Checks the exit codes 70 (enrollment), 71 (tunnel), 72 (share), the
# NFS request, munged's key and slurmd's --conf-server on success, that the stop ends charon and removes the
# data path's files, and that a bundle without ipsecDataPath runs exactly as before (no enrollment).
#   entrypoint_datapath_test.sh ENTRYPOINT
set -euo pipefail
entrypoint=$(realpath "$1")
[[ $EUID == 0 ]] || { echo "SKIP: needs root (namespaces)"; exit 0; }
t=$(mktemp -d /tmp/sr-entrypoint-test-XXXXXX)
trap 'rm -rf -- "$t"' EXIT
chmod 0755 "$t"
mkdir -p "$t/bin" "$t/log"
chmod 0777 "$t/log"

stub() {  # NAME BODY: an executable stub in $t/bin
  printf '#!/bin/sh\n%s\n' "$2" >"$t/bin/$1"
  chmod 0755 "$t/bin/$1"
}
stub charon "echo \"\$\$ \$STRONGSWAN_CONF\" >$t/log/charon; trap 'echo stopped >>$t/log/charon-stopped; exit 0' TERM; while :; do sleep 0.1; done"
stub strongroom-enroll "echo \"\$*\" >>$t/log/enroll.args
case \$1 in
  --prepare-charon)
    d=\$2; mkdir -p \"\$d\"
    printf 'IPSEC_BACKEND=kernel-libipsec\nSTRONGSWAN_CONF=%s/strongswan.conf\nVICI_SOCKET=%s/charon.vici\nCHARON_LOG=%s/charon.log\n' \"\$d\" \"\$d\" \"\$d\" >\"\$d/charon.env\"
    cat \"\$d/charon.env\"; exit \${STUB_PREPARE_RC:-0} ;;
esac
rc=\$(cat $t/enroll-rc)
if [ \"\$rc\" != 0 ]; then echo 'stub: refused' >&2; exit \"\$rc\"; fi
while [ \$# -gt 0 ]; do if [ \"\$1\" = --out ]; then out=\$2; fi; shift; done
printf 'MUNGEKEY' >\"\$out/munge.key\"; chmod 0400 \"\$out/munge.key\"
printf 'NFS_SERVER=198.51.100.40\nNFS_EXPORT=/export/proj-a\nNFS_MOUNT_POINT=$t/mnt/proj-a\n' >\"\$out/nfs.env\"
printf 'TUNNEL_NAME=wl-1\nTUNNEL_LOCAL=198.51.100.41\nTUNNEL_REMOTE=198.51.100.40\nIPSEC_BACKEND=kernel-libipsec\n' >\"\$out/tunnel.env\""
stub runuser "while [ \"\$1\" != -- ]; do shift; done; shift; echo \"\$*\" >>$t/log/munged.args; cat \"\$(echo \"\$*\" | sed 's/.*--key-file //')\" >$t/log/munged.key"
stub squeue "exit 0"
stub slurmd "echo \"\$*\" >$t/log/slurmd.args; exec sleep 1000"

fails=0
check() {  # DESCRIPTION COMMAND...
  if "${@:2}"; then echo "ok: $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi
}

# Runs the entrypoint with bundle JSON $1 (rest: env assignments) in fresh namespaces; "hostagent" in the env
# list emulates host-agent's mount on the NFS request; "term" sends SIGTERM once slurmd started.
run_case() {
  local json=$1
  shift
  rm -rf -- "$t/log"/* "$t/mnt" "$t/state"
  mkdir -p "$t/mnt" "$t/state"
  printf '%s\n' "$json" >"$t/bundle.json"
  cp /etc/hosts "$t/hosts"
  local hostagent=0 term=0 envs=()
  for a in "$@"; do
    case $a in
      hostagent) hostagent=1 ;;
      term) term=1 ;;
      *) envs+=("$a") ;;
    esac
  done
  set +e
  unshare --mount --net --propagation private -- /bin/bash -c '
    t=$1 ep=$2 hostagent=$3 term=$4; shift 4
    mount -t tmpfs -o mode=0755 test-run /run
    mount --bind "$t/hosts" /etc/hosts
    mount -t tmpfs -o mode=0755 test-munge /etc/munge   # the entrypoint installs a key there (no data path)
    mount --bind "$t/bin/slurmd" /usr/sbin/slurmd
    mkdir -p /run/strongroom
    cp "$t/bundle.json" /run/strongroom/provisioning.json
    printf "DEVKEY" >/run/strongroom/slurm-auth
    if [ "$hostagent" = 1 ]; then
      ( for i in $(seq 100); do
          if [ -e /run/strongroom/nfs-request ]; then
            cp /run/strongroom/nfs-request "$t/log/nfs-request"
            mp=$(sed -n "s/^mountpoint=//p" /run/strongroom/nfs-request)
            mount -t tmpfs -o size=1m test-share "$mp"; exit 0
          fi; sleep 0.1; done ) &
    fi
    env PATH="$t/bin:$PATH" STRONGROOM_LIBEXEC="$t/bin" STRONGROOM_CHARON="$t/bin/charon" \
      STRONGROOM_WORKLOAD_ID=wl-1 STRONGROOM_PROVISIONING=/run/strongroom/provisioning.json "$@" "$ep" \
      >"$t/log/entrypoint.out" 2>&1 &
    ep_pid=$!
    if [ "$term" = 1 ]; then
      for i in $(seq 100); do [ -e "$t/log/slurmd.args" ] && break; sleep 0.1; done
      ls -a /run >"$t/log/run-while-up"
      kill -TERM $ep_pid
    fi
    wait $ep_pid; rc=$?
    [ -e /run/strongroom/nfs-request ] && cp /run/strongroom/nfs-request "$t/log/nfs-request"
    ls -a /run >"$t/log/run-after"
    exit $rc
  ' _ "$t" "$entrypoint" "$hostagent" "$term" "${envs[@]}"
  rc=$?
  set -e
  return 0
}

charon_stopped() {  # the stub charon got SIGTERM and is gone
  local pid
  pid=$(cut -d' ' -f1 "$t/log/charon")
  [[ -e $t/log/charon-stopped ]] && ! kill -0 "$pid" 2>/dev/null
}
no_datapath_files() { ! grep -qx -e strongroom-datapath -e strongroom-munge "$t/log/run-after"; }

dp='{"nodeName":"wl-1","slurmctldAddresses":["198.51.100.40:6817"],"ipsecDataPath":true,"enrollmentTicket":"x"}'

echo 1 >"$t/enroll-rc"
run_case "$dp"
check "enrollment refused -> 70" test "$rc" = 70
check "  reason logged" grep -q "enrollment failed (strongroom-enroll exit 1)" "$t/log/entrypoint.out"
check "  charon was started with the prepared conf and is stopped" charon_stopped
check "  charon's STRONGSWAN_CONF" grep -q " /run/strongroom-datapath/charon/strongswan.conf$" "$t/log/charon"
check "  the data path's files are removed" no_datapath_files
check "  no munged, no slurmd" test ! -e "$t/log/munged.args" -a ! -e "$t/log/slurmd.args"
check "  enroll ran in tunnel mode with charon's socket" \
  grep -q -- "--tunnel --vici /run/strongroom-datapath/charon/charon.vici --backend kernel-libipsec --bundle /run/strongroom/provisioning.json --out /run/strongroom-datapath/enrolled" "$t/log/enroll.args"

echo 2 >"$t/enroll-rc"
run_case "$dp"
check "bad enrollment options -> 70" test "$rc" = 70

echo 3 >"$t/enroll-rc"
run_case "$dp"
check "tunnel failed -> 71" test "$rc" = 71
check "  reason logged" grep -q "tunnel could not come up" "$t/log/entrypoint.out"
check "  charon stopped" charon_stopped
check "  the data path's files are removed" no_datapath_files

echo 0 >"$t/enroll-rc"
run_case "$dp" STUB_PREPARE_RC=3
check "charon could not be prepared -> 71" test "$rc" = 71

run_case "$dp" STRONGROOM_NFS_WAIT=1
check "share not mounted in time -> 72" test "$rc" = 72
check "  the request names server, export, mount point" \
  test "$(cat "$t/log/nfs-request" 2>/dev/null)" = "$(printf 'server=198.51.100.40\nexport=/export/proj-a\nmountpoint=%s/mnt/proj-a' "$t")"
check "  reason logged" grep -q "project share could not be mounted" "$t/log/entrypoint.out"
check "  charon stopped" charon_stopped
check "  no slurmd" test ! -e "$t/log/slurmd.args"

run_case "$dp" hostagent term
check "data path up, share mounted, stopped -> 0" test "$rc" = 0
check "  munged got the enrolled key" test "$(cat "$t/log/munged.key" 2>/dev/null)" = MUNGEKEY
check "  munged's key file is on /run" grep -q -- "--key-file /run/strongroom-munge/munge.key" "$t/log/munged.args"
check "  slurmd's conf server is the bundle's slurmctld" grep -q -- "--conf-server 198.51.100.40:6817" "$t/log/slurmd.args"
check "  the files were there while up" grep -qx strongroom-datapath "$t/log/run-while-up"
check "  charon stopped on SIGTERM" charon_stopped
check "  the data path's files are removed" no_datapath_files

run_case "$dp" STRONGROOM_PROJECT_SHARE=/data term
check "development-mode share: no NFS request" test ! -e "$t/log/nfs-request" -a "$rc" = 0
check "  slurmd started" test -e "$t/log/slurmd.args"

run_case '{"nodeName":"wl-1","slurmctldAddresses":["198.51.100.40:6817"]}' term
check "without ipsecDataPath: no enrollment, no charon" test ! -e "$t/log/enroll.args" -a ! -e "$t/log/charon"
check "  munged uses host-agent's slurm-auth" test "$(cat "$t/log/munged.key" 2>/dev/null)" = DEVKEY
check "  slurmd started, stop -> 0" test -e "$t/log/slurmd.args" -a "$rc" = 0

if ((fails)); then
  echo "--- last entrypoint output:"; cat "$t/log/entrypoint.out"
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
