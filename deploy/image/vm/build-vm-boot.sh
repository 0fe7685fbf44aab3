#!/usr/bin/env bash
# build-vm-boot.sh IMAGE_ROOT NAME: the boot files of VM image NAME next to its root file system in host-agent's
# catalog: IMAGE_ROOT/NAME.vmlinux (Debian's kernel, uncompressed: ~4 s less of in-guest decompression under TCG)
# and IMAGE_ROOT/NAME.initrd (busybox, dmsetup with its libraries, the virtio, squashfs, overlay, dm-crypt, 9p,
# power-button and kernel ESP / TUN modules, and deploy/image/vm/init). IMAGE_ROOT/NAME.squashfs is the image's root (build-rootfs.sh --squashfs, or
# any squashfs whose entrypoint is named in SR_ENTRYPOINT). The kernel comes from tests/guest/run-guest.sh's cache
# ($STRONGROOM_GUEST_CACHE, default /var/cache/strongroom/guest), which is filled on first use.
set -euo pipefail
root=${1:?usage: build-vm-boot.sh IMAGE_ROOT NAME}
name=${2:?usage: build-vm-boot.sh IMAGE_ROOT NAME}
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${STRONGROOM_GUEST_CACHE:-/var/cache/strongroom/guest}
pick() { ls -1d "$CACHE"/linux-image-*-amd64_*/ 2>/dev/null | grep -v -e -rt- -e -cloud- | sort -V | tail -1 || true; }
kdir=$(pick)
if [[ -z $kdir || ! -f $kdir/ready ]]; then
  "$here/../../../tests/guest/run-guest.sh" --timeout 300 -- /bin/true >/dev/null 2>&1 || true
  kdir=$(pick)
fi
kdir=${kdir%/}
[[ -n $kdir && -f $kdir/ready ]] || { echo "build-vm-boot.sh: no kernel in $CACHE" >&2; exit 1; }
kver=$(<"$kdir/kver")
work=$(mktemp -d /tmp/sr-vm-boot-XXXXXX)
trap 'rm -rf -- "$work"' EXIT
mkdir -p "$work/bin" "$work/sbin" "$work/mods" "$work/lib64" "$work/lib/x86_64-linux-gnu"
cp /bin/busybox "$work/bin/busybox"
cp /sbin/dmsetup "$work/sbin/dmsetup"
for lib in $(ldd /sbin/dmsetup | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
  cp -L "$lib" "$work$lib" 2>/dev/null || cp -L "$lib" "$work/lib/x86_64-linux-gnu/"
done
# The secure data path's kernel ESP (docs/IPSEC.md "Kernel ESP in the qemu guest"): the guest has no module
# autoloading, so esp4 and XFRM's netlink interface, AES-GCM's templates and the IV generator's RNG (drbg, after
# sha512_generic for its self-test) are loaded by init; tun for the kernel-libipsec fallback; nfsv4: a VM mounts the share itself.
ipsec_modules="sha512_generic drbg esp4 xfrm_user gcm ghash-generic ctr seqiv tun nfsv4"
: >"$work/mods/order"
while read -r kind path _; do
  [[ $kind == insmod ]] || continue
  m=$(basename "$path")
  [[ -f $work/mods/$m ]] && continue
  cp "$path" "$work/mods/$m"
  echo "$m" >>"$work/mods/order"
done < <(modprobe -d "$kdir/x" -S "$kver" --show-depends -a virtio_pci virtio_net virtio_blk virtio_rng squashfs \
  overlay dm-crypt xts aesni-intel ext4 9pnet_virtio 9p button evdev $ipsec_modules 2>/dev/null)
cp "$here/init" "$work/init"
chmod 755 "$work/init"
(cd "$work" && find . | busybox cpio -o -H newc >"$root/$name.initrd.tmp" 2>/dev/null)
mv "$root/$name.initrd.tmp" "$root/$name.initrd"
cp "$kdir/vmlinux" "$root/$name.vmlinux.tmp"
mv "$root/$name.vmlinux.tmp" "$root/$name.vmlinux"
