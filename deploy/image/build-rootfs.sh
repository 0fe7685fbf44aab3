#!/usr/bin/env bash
# build-rootfs.sh: builds the Strongroom workload image (the same as strongroom-workload.def) as an OCI rootfs for
# host-agent's catalog: debootstrap of Debian 12 (minbase) with slurmd, the Slurm client tools, munge, jq and the
# provisioning agent; then every file's uid/gid is shifted by UID_BASE (container root = host uid UID_BASE, as
# host-agent maps it), and optionally packed as squashfs for VMs (unshifted: a VM has no user namespace; its boot
# files come from deploy/image/vm/build-vm-boot.sh).
#
#   build-rootfs.sh OUT_DIR [--uid-base N] [--squashfs] [--mirror URL]
#
# OUT_DIR/<name> is a catalog entry (host-agent image_root = OUT_DIR, image name "strongroom-workload"); with
# --squashfs, OUT_DIR/strongroom-workload.squashfs too (unshifted: the VM's root). Downloaded .debs are cached in
# ${STRONGROOM_DEB_CACHE:-/var/cache/strongroom/debootstrap}, so a rebuild needs no network. Needs root.
set -euo pipefail

readonly NAME=strongroom-workload
readonly SUITE=bookworm
readonly PACKAGES=slurmd,slurm-client,munge,jq,iproute2,procps,ca-certificates
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="" uid_base=100000 squash=0 mirror=""
while (($#)); do
  case $1 in
    --uid-base) uid_base=$2; shift 2 ;;
    --squashfs) squash=1; shift ;;
    --mirror) mirror=$2; shift 2 ;;
    -*) echo "build-rootfs.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[[ -n $out ]] || { echo "usage: build-rootfs.sh OUT_DIR [--uid-base N] [--squashfs] [--mirror URL]" >&2; exit 2; }
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

# 1. debootstrap (retried: the registry is sometimes unreachable for a minute).
n=0
until debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$cache" "$SUITE" "$tmp" "$mirror" \
  >"$out/.debootstrap.log" 2>&1; do
  n=$((n + 1))
  if ((n >= 4)); then
    tail -20 "$out/.debootstrap.log" >&2
    echo "build-rootfs.sh: debootstrap failed $n times" >&2
    exit 1
  fi
  echo "build-rootfs.sh: debootstrap failed; retrying in $((n * 10))s" >&2
  rm -rf -- "$tmp"
  sleep $((n * 10))
done

# 2. The provisioning agent, and a lean image.
install -D -m 0755 "$here/entrypoint" "$tmp/usr/libexec/strongroom/entrypoint"
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/*
echo "$NAME built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $SUITE" >"$tmp/etc/strongroom-image"

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
