#!/usr/bin/env bash
# build-rootfs.sh: builds the Strongroom workload image (the same as strongroom-workload.def) as an OCI rootfs for
# host-agent's catalog: debootstrap of Debian 12 (minbase) with slurmd, the Slurm client tools, munge, jq, charon
# with kernel-libipsec (the secure data path's tunnel, docs/IPSEC.md), the runtime libraries of strongroom-enroll,
# and our files: the provisioning agent (deploy/image/entrypoint) and strongroom-enroll (from the build tree);
# then every file's uid/gid is shifted by UID_BASE (container root = host uid UID_BASE, as host-agent maps it),
# and optionally packed as squashfs for VMs (unshifted: a VM has no user namespace; its boot files come from
# deploy/image/vm/build-vm-boot.sh).
#
#   build-rootfs.sh OUT_DIR --enroll-bin PATH [--uid-base N] [--squashfs] [--mirror URL]
#
# OUT_DIR/<name> is a catalog entry (host-agent image_root = OUT_DIR, image name "strongroom-workload"); with
# --squashfs, OUT_DIR/strongroom-workload.squashfs too (unshifted: the VM's root). --enroll-bin is the built
# strongroom-enroll (build/services/workload_enroll/strongroom-enroll), installed as
# /usr/libexec/strongroom/strongroom-enroll. Two caches: downloaded .debs in
# ${STRONGROOM_DEB_CACHE:-/var/cache/strongroom/debootstrap} (a rebuild needs no network), and the debootstrapped
# base itself in ${STRONGROOM_BASE_CACHE:-/var/cache/strongroom/base}/<hash of suite and package list>, so a
# rebuild after a change of our files only copies the base and adds them (no debootstrap). Needs root.
set -euo pipefail

readonly NAME=strongroom-workload
readonly SUITE=bookworm
# charon: strongswan-charon (the daemon), strongswan-libcharon (socket-default), libstrongswan (random nonce pem
# pkcs1 pkcs8 x509 revocation constraints pubkey aes sha2 hmac kdf kernel-netlink), libstrongswan-standard-plugins
# (openssl gcm), libcharon-extra-plugins (kernel-libipsec), strongswan-swanctl (the vici plugin): every plugin
# CharonConf (common/ipsec_tunnel.cc) loads. strongroom-enroll: libgrpc++1.51, libprotobuf32, libssl3 (their
# dependencies, libgrpc29, libabsl20220623, libre2-9, libc-ares2, come with them). netbase: /etc/protocols, without
# which `ip rule add ... ipproto udp` (the bypass rules) fails with 'Invalid "ipproto" value'.
readonly PACKAGES=slurmd,slurm-client,munge,jq,iproute2,procps,ca-certificates,netbase,strongswan-charon,strongswan-libcharon,libstrongswan,libstrongswan-standard-plugins,libcharon-extra-plugins,strongswan-swanctl,libgrpc++1.51,libprotobuf32,libssl3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="" uid_base=100000 squash=0 mirror="" enroll_bin=""
while (($#)); do
  case $1 in
    --uid-base) uid_base=$2; shift 2 ;;
    --squashfs) squash=1; shift ;;
    --mirror) mirror=$2; shift 2 ;;
    --enroll-bin) enroll_bin=$2; shift 2 ;;
    -*) echo "build-rootfs.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
usage="usage: build-rootfs.sh OUT_DIR --enroll-bin PATH [--uid-base N] [--squashfs] [--mirror URL]"
[[ -n $out ]] || { echo "$usage" >&2; exit 2; }
[[ -n $enroll_bin ]] || { echo "build-rootfs.sh: --enroll-bin (the built strongroom-enroll) required; $usage" >&2; exit 2; }
[[ -f $enroll_bin && -x $enroll_bin ]] || { echo "build-rootfs.sh: --enroll-bin $enroll_bin: not an executable file" >&2; exit 2; }
[[ $EUID == 0 ]] || { echo "build-rootfs.sh: must run as root" >&2; exit 1; }
if [[ -z $mirror ]]; then
  # The mirror this host's apt uses, else Debian's.
  mirror=$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian/?$' | head -1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi
cache=${STRONGROOM_DEB_CACHE:-/var/cache/strongroom/debootstrap}
mkdir -p "$cache" "$out"
root="$out/$NAME"
tmp="$out/.$NAME.building"
rm -rf -- "$tmp"
start=$(date +%s)

# 1. The base: debootstrap (retried: the registry is sometimes unreachable for a minute), cached by suite and
# package list (and this step's own text), so only a change of those runs it again.
base_cache=${STRONGROOM_BASE_CACHE:-/var/cache/strongroom/base}
base_key=$(printf '%s\n%s\n%s\n' "$SUITE" "$PACKAGES" "$mirror" | sha256sum | cut -c1-16)
base="$base_cache/$base_key"
if [[ ! -e $base/.complete ]]; then
  mkdir -p "$base_cache"
  rm -rf -- "$base.building"
  n=0
  until debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$cache" "$SUITE" "$base.building" "$mirror" \
    >"$out/.debootstrap.log" 2>&1; do
    n=$((n + 1))
    if ((n >= 4)); then
      tail -20 "$out/.debootstrap.log" >&2
      echo "build-rootfs.sh: debootstrap failed $n times" >&2
      exit 1
    fi
    echo "build-rootfs.sh: debootstrap failed; retrying in $((n * 10))s" >&2
    rm -rf -- "$base.building"
    sleep $((n * 10))
  done
  rm -rf "$base.building"/var/cache/apt/archives/*.deb "$base.building"/var/lib/apt/lists/* \
    "$base.building"/usr/share/doc/* "$base.building"/usr/share/man/*
  rm -rf -- "$base"
  mv -- "$base.building" "$base"
  touch "$base/.complete"
  echo "build-rootfs.sh: base $base debootstrapped in $(($(date +%s) - start)) s" >&2
fi
cp -a -- "$base" "$tmp"
rm -f -- "$tmp/.complete"

# 2. Our files: the provisioning agent and strongroom-enroll (checked to start in the image: its libraries are
# there). charon's compiled-in pid file /var/run/charon.pid lands on the container's /run (Debian's /var/run ->
# /run link).
install -D -m 0755 "$here/entrypoint" "$tmp/usr/libexec/strongroom/entrypoint"
install -D -m 0755 "$enroll_bin" "$tmp/usr/libexec/strongroom/strongroom-enroll"
[[ -x $tmp/usr/lib/ipsec/charon ]] || { echo "build-rootfs.sh: the base has no /usr/lib/ipsec/charon" >&2; exit 1; }
[[ -L $tmp/var/run ]] || { echo "build-rootfs.sh: the base's /var/run is not a link to /run" >&2; exit 1; }
if ! chroot "$tmp" /usr/libexec/strongroom/strongroom-enroll --help >/dev/null 2>"$out/.enroll-check.log"; then
  cat "$out/.enroll-check.log" >&2
  echo "build-rootfs.sh: strongroom-enroll does not start in the image (a missing library?)" >&2
  exit 1
fi
rm -f -- "$out/.enroll-check.log"
echo "$NAME built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $SUITE; strongroom-enroll $(sha256sum "$enroll_bin" | cut -c1-16)" \
  >"$tmp/etc/strongroom-image"

# 3. The VM image's root, before the shift: a VM has no user namespace, so its files keep their own uids.
if ((squash)); then
  rm -f -- "$out/.$NAME.squashfs.building"
  mksquashfs "$tmp" "$out/.$NAME.squashfs.building" -noappend -comp zstd -quiet >/dev/null
fi

# 4. Shift ownership: container uid U is host uid UID_BASE+U (one chown pass per distinct owner).
while IFS=: read -r u g; do
  chown -R -h --from="$u:$g" "$((uid_base + u)):$((uid_base + g))" "$tmp"
done < <(find "$tmp" -xdev -printf '%U:%G\n' | sort -u -t: -k1,1n -k2,2n)

rm -rf -- "$root"
mv -- "$tmp" "$root"
if ((squash)); then
  mv -- "$out/.$NAME.squashfs.building" "$out/$NAME.squashfs"
fi
echo "build-rootfs.sh: $root ready in $(($(date +%s) - start)) s ($(du -sh "$root" | cut -f1))" >&2
