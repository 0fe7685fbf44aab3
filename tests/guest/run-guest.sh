#!/usr/bin/env bash
# run-guest.sh: runs one command inside a qemu TCG guest booted with Debian's generic kernel, the host's root file
# system read-only over 9p (with a tmpfs overlay on top, so the guest can write anywhere without touching the host)
# and a busybox initramfs. This host's kernel lacks device-mapper/dm-crypt; Debian's kernel has them as modules.
# See shared notes/guest.md for the measurements behind each choice.
#
#   run-guest.sh [--timeout SECONDS] [--modules "MOD..."] -- CMD [ARG]...
#
# The command runs as root in the guest, chrooted into the overlaid host root (the host's /tmp stays visible, so a
# build tree under /tmp works), with a fresh /run tmpfs, cgroup2 mounted and the modules dm-crypt, loop, ext4, overlay,
# 9p and the kernel's default RNG (drbg) loaded (plus --modules, e.g. "openvswitch veth bridge nf_conntrack_netlink":
# the guest has no module autoloading).
# The overlay's upper dir (every file the guest wrote to its root) is at /run/guest-upper, read-only.
# Its exit status becomes ours; its output (merged stdout and stderr) comes back over the serial console. Nothing is
# left behind but the kernel cache:
#   $STRONGROOM_GUEST_CACHE (default /var/cache/strongroom/guest): the linux-image .deb, the extracted vmlinux and
#   modules (downloaded once with `apt-get download`, kept across runs).
set -euo pipefail

readonly PROG=run-guest.sh
CACHE=${STRONGROOM_GUEST_CACHE:-/var/cache/strongroom/guest}
TIMEOUT=600
# The emulated CPU; STRONGROOM_GUEST_CPU overrides it for measurements (e.g. "max,-avx,-avx2" to see what TCG's AVX
# emulation costs kernel crypto).
CPU=${STRONGROOM_GUEST_CPU:-max}
# sha512_generic + drbg: the kernel's default RNG ("stdrng"). Debian builds DRBG as a module, and without module
# autoloading nothing provides stdrng, so every IV generator (seqiv, echainiv) fails to initialise: kernel ESP then
# refuses any SA with a real cipher ("Kernel was unable to initialize cryptographic operations", ENOENT to charon).
# sha512_generic first, because DRBG's preferred instance (drbg_nopr_hmac_sha512) self-tests with it.
MODULES=(virtio_pci virtio_rng 9pnet_virtio 9p overlay loop dm-crypt ext4 xts aesni-intel sha256_generic
  sha512_generic drbg)

die() { printf '%s: %s\n' "$PROG" "$*" >&2; exit 125; }
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

while (($#)); do
  case $1 in
    --timeout) TIMEOUT=$2; shift 2 ;;
    --modules) read -r -a extra <<<"$2"; MODULES+=("${extra[@]}"); shift 2 ;;
    --) shift; break ;;
    *) die "usage: $PROG [--timeout S] [--modules \"MOD...\"] -- CMD [ARG]..." ;;
  esac
done
(($#)) || die "no command given"
if [[ $1 == */* && -e $1 ]]; then
  cmd0=$(realpath -- "$1")
  shift
  set -- "$cmd0" "$@"
fi
[[ $EUID == 0 ]] || die "must run as root"
for tool in qemu-system-x86_64 busybox dpkg-deb depmod xz; do
  command -v "$tool" >/dev/null || die "$tool is missing (deploy/install-deps.sh installs it)"
done

# retry N CMD...: 2, 4, 8... s apart (the package registry is sometimes unreachable for a minute).
retry() {
  local n=1 max=$1 delay=2
  shift
  until "$@"; do
    ((n >= max)) && return 1
    log "try $n failed: $*; again in ${delay}s"
    sleep "$delay"
    n=$((n + 1)) delay=$((delay * 2 > 60 ? 60 : delay * 2))
  done
}

# 1. The kernel: the generic flavour of the current Debian 12 kernel (it has 9p; the cloud flavour does not).
mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"
flock -w 900 8 || die "$CACHE/.lock is held by another run for 15 minutes"
deb=$(ls -1 "$CACHE"/linux-image-*-amd64_*.deb 2>/dev/null | grep -v -e -rt- -e -cloud- | sort -V | tail -1 || true)
if [[ -z $deb ]]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [[ -z $pkg ]]; then
    retry 5 apt-get update -q >/dev/null
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  [[ -n $pkg ]] || die "cannot find Debian's generic kernel package"
  log "downloading $pkg into $CACHE (once)"
  (cd "$CACHE" && retry 6 apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) ||
    die "apt-get download $pkg failed"
  deb=$(ls -1 "$CACHE"/linux-image-*-amd64_*.deb | sort -V | tail -1)
fi
kdir="$CACHE/$(basename "$deb" .deb)"
if [[ ! -f $kdir/ready ]]; then
  log "extracting $(basename "$deb")"
  rm -rf "$kdir"
  mkdir -p "$kdir/x"
  dpkg-deb -x "$deb" "$kdir/x"
  kver=$(ls "$kdir/x/lib/modules")
  depmod -b "$kdir/x" "$kver"
  # An uncompressed ELF vmlinux saves ~4 s of in-guest decompression under TCG: find the xz stream in the bzImage.
  bz="$kdir/x/boot/vmlinuz-$kver"
  off=$(grep -abo $'\xfd7zXZ\x00' "$bz" | head -1 | cut -d: -f1)
  [[ -n $off ]] || die "no xz stream in $bz"
  tail -c +"$((off + 1))" "$bz" | xz -dc >"$kdir/vmlinux" 2>/dev/null || true
  [[ $(head -c 4 "$kdir/vmlinux" | od -An -c | tr -d ' ') == 177ELF ]] || die "could not extract vmlinux from $bz"
  echo "$kver" >"$kdir/kver"
  touch "$kdir/ready"
fi
kver=$(<"$kdir/kver")
flock -u 8

# 2. A per-run work dir: initramfs, the shared results dir, the command.
work=$(mktemp -d /tmp/sr-guest-XXXXXX)
qpid=""
cleanup() {
  if [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then kill -KILL "$qpid" 2>/dev/null || true; wait "$qpid" 2>/dev/null || true; fi
  rm -rf -- "$work"
}
trap cleanup EXIT
mkdir -p "$work/initrd/bin" "$work/initrd/mods" "$work/results"
cp /bin/busybox "$work/initrd/bin/busybox"
: >"$work/initrd/mods/order"
while read -r kind path _; do
  [[ $kind == insmod ]] || continue
  name=$(basename "$path")
  [[ -f $work/initrd/mods/$name ]] && continue
  cp "$path" "$work/initrd/mods/$name"
  echo "$name" >>"$work/initrd/mods/order"
done < <(modprobe -d "$kdir/x" -S "$kver" --show-depends -a "${MODULES[@]}" 2>/dev/null)

cat >"$work/initrd/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc 2>/dev/null || { mkdir -p /proc; mount -t proc proc /proc; }
mkdir -p /sys /dev /host /rw /newroot /results
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /results
mount -t tmpfs -o size=1500m tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts && mount -t devpts devpts /newroot/dev/pts
# devtmpfs has no /dev/fd (bash process substitution needs it) nor the std* links.
ln -sf /proc/self/fd /newroot/dev/fd
ln -sf /proc/self/fd/0 /newroot/dev/stdin; ln -sf /proc/self/fd/1 /newroot/dev/stdout; ln -sf /proc/self/fd/2 /newroot/dev/stderr
mount -t tmpfs tmpfs /newroot/run
# Every file the guest writes to its root lands in the overlay's upper dir: shown read-only at /run/guest-upper, so
# a test can scan all of them (e.g. for a secret that must not reach the compute host's disk).
mkdir -p /newroot/run/guest-upper && mount --bind /rw/upper /newroot/run/guest-upper &&
  mount -o remount,bind,ro /newroot/run/guest-upper
mkdir -p /newroot/results && mount --bind /results /newroot/results
# switch_root, not chroot: the kernel refuses user namespaces (fakeroot) to a chrooted process.
exec switch_root /newroot /bin/sh -c '/bin/sh /results/cmd.sh; echo $? > /results/exit; sync; /bin/busybox poweroff -f'
INIT
chmod 755 "$work/initrd/init"
(cd "$work/initrd" && find . | busybox cpio -o -H newc >"$work/initrd.cpio" 2>/dev/null)

{
  echo 'cd /'
  printf 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n'
  printf 'exec'
  printf ' %q' "$@"
  printf ' 2>&1\n'
} >"$work/results/cmd.sh"

# 3. Boot. no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can fail and panic.
# One vCPU is faster than two on a 2-core host under TCG.
log "booting $kver under TCG (timeout ${TIMEOUT}s)"
start=$(date +%s%N)
qemu-system-x86_64 -accel tcg -cpu "$CPU" -m 2048 -smp 1 -nodefaults -no-user-config -display none \
  -serial stdio -no-reboot -device virtio-rng-pci \
  -kernel "$kdir/vmlinux" -initrd "$work/initrd.cpio" -append "console=ttyS0 panic=-1 quiet loglevel=3 no_timer_check" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap" \
  -virtfs "local,path=$work/results,mount_tag=results,security_model=passthrough,multidevs=remap" \
  </dev/null &
qpid=$!
deadline=$(($(date +%s) + TIMEOUT))
while kill -0 "$qpid" 2>/dev/null; do
  if (($(date +%s) > deadline)); then
    log "guest did not finish within ${TIMEOUT}s; killing qemu"
    kill -KILL "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    qpid=""
    exit 124
  fi
  sleep 0.2
done
wait "$qpid" || true
qpid=""
log "guest ran for $((($(date +%s%N) - start) / 1000000)) ms (boot included)"
[[ -f $work/results/exit ]] || die "the guest wrote no exit status (kernel or init failed; see the console above)"
exit "$(<"$work/results/exit")"
