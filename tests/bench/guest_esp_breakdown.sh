#!/usr/bin/env bash
# guest_esp_breakdown.sh: where kernel ESP's time goes in the qemu TCG guest (docs/PERFORMANCE.md "Issue 14 in the
# guest"). Two network namespaces joined by a veth pair, TCP (tests/bench/tcp_throughput.py, MIB MiB) from one to
# the other, ROUNDS times each:
#   plain            veth with its offloads (TCP hands 64 KB GSO packets to the stack)
#   plain-no-offload TSO/GSO/GRO off: one packet per MSS, what TCP over an XFRM route gets anyway
#   esp-null         ESP tunnel mode with the null cipher: the per-packet cost of the ESP path without crypto
#   esp-aes-gcm      ESP tunnel mode with rfc4106(gcm(aes)) 256 bit, the tunnel's cipher
# SAs are set by hand (no charon, no UDP encapsulation: that needs charon's encap socket); the full tunnel is
# ipsec_guest_bench. Not run by ctest. In the guest only:
#   tests/guest/run-guest.sh --timeout 900 --modules "esp4 xfrm_user gcm ghash-generic ctr seqiv veth crypto_null
#     authenc" -- tests/bench/guest_esp_breakdown.sh [ROUNDS] [MIB]
set -euo pipefail
ROUNDS=${1:-3}
MIB=${2:-32}
here=$(cd "$(dirname "$0")" && pwd)
TP=$here/tcp_throughput.py
A=srb-a-$$
B=srb-b-$$
cleanup() { ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip link add va netns "$A" type veth peer name vb netns "$B"
ip -n "$A" addr add 192.0.2.10/24 dev va
ip -n "$B" addr add 192.0.2.1/24 dev vb
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set va up
ip -n "$B" link set vb up

# one_run: MB/s of one transfer A -> B.
one_run() {
  local log
  log=$(mktemp)
  timeout 300 ip netns exec "$B" python3 "$TP" sink 5001 >"$log" 2>&1 &
  local sink=$!
  for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
  timeout 300 ip netns exec "$A" python3 "$TP" send 192.0.2.1 5001 "$MIB"
  wait "$sink"
  tail -1 "$log" | awk '{printf "%.1f\n", $1 / $2 / 1e6}'
  rm -f "$log"
}

measure() { # label
  local -a v=()
  for _ in $(seq "$ROUNDS"); do v+=("$(one_run)"); done
  printf '%-17s MB/s: %s (median %s)\n' "$1" "${v[*]}" "$(printf '%s\n' "${v[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
}

offloads() { # on|off
  ip netns exec "$A" ethtool -K va tso "$1" gso "$1" gro "$1" >/dev/null
  ip netns exec "$B" ethtool -K vb tso "$1" gso "$1" gro "$1" >/dev/null
}

esp() { # ALGO-ARGS...: states and policies for both directions, in both namespaces
  local ns src dst spi
  for ns in "$A" "$B"; do
    ip -n "$ns" xfrm state flush
    ip -n "$ns" xfrm policy flush
    for pair in "192.0.2.10 192.0.2.1 0x100" "192.0.2.1 192.0.2.10 0x200"; do
      read -r src dst spi <<<"$pair"
      ip -n "$ns" xfrm state add src "$src" dst "$dst" proto esp spi "$spi" reqid 1 mode tunnel "$@"
    done
  done
  policy() { # NS SRC DST DIR
    ip -n "$1" xfrm policy add src "$2/32" dst "$3/32" dir "$4" tmpl src "$2" dst "$3" proto esp reqid 1 mode tunnel
  }
  policy "$A" 192.0.2.10 192.0.2.1 out
  policy "$A" 192.0.2.1 192.0.2.10 in
  policy "$B" 192.0.2.1 192.0.2.10 out
  policy "$B" 192.0.2.10 192.0.2.1 in
}

echo "kernel $(uname -r), cpu flags: $(grep -o -w -E 'aes|avx|avx2|vaes|pclmulqdq' /proc/cpuinfo | sort -u | tr '\n' ' ')"
measure plain
offloads off
measure plain-no-offload
offloads on
esp enc 'ecb(cipher_null)' '' auth digest_null ''
measure esp-null
esp aead 'rfc4106(gcm(aes))' 0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324 128
measure esp-aes-gcm
echo "driver: $(grep -A1 -E '^name +: rfc4106\(gcm\(aes\)\)' /proc/crypto | awk '/driver/{print $3; exit}')"
