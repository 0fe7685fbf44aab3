#!/usr/bin/env bash
# Installs everything Strongroom needs to build, test and run, from Debian 12 packages.
# Idempotent: packages already present are not touched. The package registry sometimes refuses
# connections for a minute or more, so every apt-get call is retried with back-off.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libssl-dev libgtest-dev libgmock-dev libsqlite3-dev
  # run and test: PKI, network namespaces ("hosts" of the test rig), JSON tools
  openssl iproute2 util-linux procps busybox-static
  # host-agent: encrypted scratch, OCI runtime, ext4, the qemu guest for dm-crypt tests, workload images
  libcryptsetup-dev runc e2fsprogs dmsetup qemu-system-x86 kmod xz-utils squashfs-tools debootstrap
  # netd: libopenvswitch built from its source (python3 runs OVS's IDL generator), OVS's daemons (tests and
  # nodes), rtnetlink, ethtool (tests check offloads)
  openvswitch-source openvswitch-switch python3 libmnl-dev ethtool
  # netd's node stack guard (nf_tables through libnftnl; nft for operators and tests), and the egress tests'
  # raw frame generator
  libnftnl-dev nftables python3-scapy
  # backend: PostgreSQL (server for tests and the quickstart, libpqxx client) and the Global Slurm cluster it
  # submits to (munge, slurmctld, slurmd, the client commands; basic plugins for the Local cluster's job_submit.lua)
  postgresql libpqxx-dev slurmctld slurmd slurm-client munge slurm-wlm-basic-plugins
  # secure data path (issue 14): the controlling VM's IPsec responder and the workload's initiator (charon, driven
  # over VICI; swanctl only for operators; kernel-libipsec for kernels without ESP is in libcharon-extra-plugins),
  # and the controlling VM's userspace NFSv4 server
  strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins
  nfs-ganesha nfs-ganesha-vfs
  # host-agent's VM driver: libvirt's C API, and virtqemud (the rig and the quickstart start it themselves)
  libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu
)

log() { printf 'install-deps: %s\n' "$*" >&2; }

# retry MAX_TRIES CMD ARGS...: 2, 4, 8, ... 60 s between tries.
retry() {
  local tries=$1 n=1 delay=2
  shift
  until "$@"; do
    if (( n >= tries )); then
      log "giving up after $n tries: $*"
      return 1
    fi
    log "try $n of $tries failed: $*; retrying in ${delay}s"
    sleep "$delay"
    n=$((n + 1))
    delay=$(( delay * 2 > 60 ? 60 : delay * 2 ))
  done
}

missing_packages() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || echo "$pkg"
  done
}

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root (apt-get install); missing: $(missing_packages | tr '\n' ' ')"
  exit 1
fi

mapfile -t missing < <(missing_packages)
if (( ${#missing[@]} > 0 )); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  retry 8 apt-get update -q
  retry 8 apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Node.js runs the independent reflection client in the tests (an npm package, not our code).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing nodejs and npm"
  export DEBIAN_FRONTEND=noninteractive
  retry 8 apt-get update -q
  retry 8 apt-get install -y -q --no-install-recommends nodejs npm
fi
# libvirtd (host-agent's VM driver) refuses to start without its default qemu user, which Debian's
# libvirt-daemon-system (not installed: it brings systemd units and polkit) would create; and the rig
# bind-mounts private directories over libvirt's own, which must exist as mount points. The VMs
# themselves run as root under the rig's qemu.conf (tests/rig/libvirt.sh).
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin -g libvirt-qemu libvirt-qemu
mkdir -p /etc/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /run/libvirt
log "all dependencies present"
