#!/usr/bin/env bash
# build-test-guest.sh OUT_DIR: the VM driver test's guest: Debian's kernel (the uncompressed vmlinux that
# tests/guest/run-guest.sh extracts into its cache) and a busybox initramfs whose /init loads the virtio modules,
# prints what the test checks on the serial console (its kernel, hostname and br-secure address), configures eth0
# from the kernel command line as a guest configures netd's attachment (sr_ip=A.B.C.D/P sr_gw=G sr_hostname=H),
# tries each sr_probe=HOST:PORT,... with a TCP echo, and then stays up (a running workload) until it is destroyed.
#   OUT_DIR/vmlinux (a symlink into the cache), OUT_DIR/initrd.cpio
set -euo pipefail
out=${1:?usage: build-test-guest.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${STRONGROOM_GUEST_CACHE:-/var/cache/strongroom/guest}
kdir=$(ls -1d "$CACHE"/linux-image-*-amd64_*/ 2>/dev/null | grep -v -e -rt- -e -cloud- | sort -V | tail -1 || true)
if [[ -z $kdir || ! -f $kdir/ready ]]; then
  # run-guest.sh downloads and extracts the kernel once (and boots it once, for nothing).
  "$here/../../guest/run-guest.sh" --timeout 300 -- /bin/true >/dev/null 2>&1 || true
  kdir=$(ls -1d "$CACHE"/linux-image-*-amd64_*/ | grep -v -e -rt- -e -cloud- | sort -V | tail -1)
fi
kdir=${kdir%/}
[[ -f $kdir/ready ]] || { echo "build-test-guest.sh: no kernel in $CACHE" >&2; exit 1; }
kver=$(<"$kdir/kver")
mkdir -p "$out/initrd/bin" "$out/initrd/mods"
cp /bin/busybox "$out/initrd/bin/busybox"
: >"$out/initrd/mods/order"
while read -r kind path _; do
  [[ $kind == insmod ]] || continue
  name=$(basename "$path")
  [[ -f $out/initrd/mods/$name ]] && continue
  cp "$path" "$out/initrd/mods/$name"
  echo "$name" >>"$out/initrd/mods/order"
done < <(modprobe -d "$kdir/x" -S "$kver" --show-depends -a virtio_pci virtio_net virtio_blk virtio_rng 2>/dev/null)
cat >"$out/initrd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null; done
hostname "${sr_hostname:-vm}"
echo "STRONGROOM-VM-UP kernel=$(uname -r) hostname=$(hostname)"
ip link set lo up
ip link set eth0 up
ip addr add "$sr_ip" dev eth0
ip route add default via "$sr_gw"
echo "STRONGROOM-VM-NET $(ip -4 -o addr show dev eth0 | awk '{print $4}') mac=$(cat /sys/class/net/eth0/address)"
for t in $(echo "$sr_probe" | tr , ' '); do
  if echo strongroom-probe | timeout 6 nc -w 4 "${t%:*}" "${t#*:}" 2>/dev/null | grep -q strongroom-probe; then
    echo "STRONGROOM-VM-REACHED $t"
  else
    echo "STRONGROOM-VM-UNREACHABLE $t"
  fi
done
echo "STRONGROOM-VM-READY"
while :; do sleep 3600; done
INIT
chmod 755 "$out/initrd/init"
(cd "$out/initrd" && find . | busybox cpio -o -H newc >"$out/initrd.cpio" 2>/dev/null)
rm -rf "$out/initrd"
ln -sf "$kdir/vmlinux" "$out/vmlinux"
