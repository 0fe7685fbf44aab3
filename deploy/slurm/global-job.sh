#!/bin/bash
# global-job.sh: the Global Slurm batch script of every Strongroom global job (DESIGN.md §3 step 4). backend submits
# it with `sbatch --account=<project> ...` plus, for a container, `--exclusive` (the whole node) or, for a VM,
# `--ntasks=1 --cpus-per-task=N --mem=<VM memory>M` (VMs share a node). This script has no #SBATCH line: one would
# apply to every global job (an `#SBATCH --exclusive` made VM jobs take whole nodes). It is run with:
#   SR_GLOBAL_JOB_ID   the global job id (gj-...)            (informational)
#   SR_WORKLOAD_ID     the workload id (wl-...)              (informational)
#   SR_WORKLOAD_SPEC   base64 of the serialized strongroom.v1.WorkloadSpec
# It execs strongroom-global-job, which calls this node's host-agent StartWorkload with its own node-local identity
# (role global-job, instance = this node's name), blocks until the workload ends (WatchWorkload), and calls
# StopWorkload on SIGTERM (scancel, time limit: Slurm signals the batch step) or when it has to give up. exec, so
# Slurm's signals reach the client directly. The job's exit status is the workload's (see the client's header).
#
# Node-local settings come from /etc/strongroom/global-job.conf (shell variables, root-owned, read here):
#   SR_AGENT=127.0.0.1:7443         host-agent's gRPC address on this node
#   SR_TRUST_DOMAIN=strongroom.example
#   SR_CA=/etc/strongroom/pki/ca.pem
#   SR_CERT=/etc/strongroom/pki/global-job.pem   role global-job, instance = this node (readable by the job's user)
#   SR_KEY=/etc/strongroom/pki/global-job.key
#   SR_NODE=<this node's Global Slurm name>      default: $SLURMD_NODENAME
#   SR_STOP_GRACE=30                seconds between SIGTERM and SIGKILL for the workload
#   SR_CLIENT=/usr/lib/strongroom/strongroom-global-job
# STRONGROOM_GLOBAL_JOB_CONF overrides the file's path (tests).
set -euo pipefail
conf=${STRONGROOM_GLOBAL_JOB_CONF:-/etc/strongroom/global-job.conf}
if [[ ! -r $conf ]]; then
  echo "global-job.sh: cannot read $conf" >&2
  exit 64
fi
# shellcheck source=/dev/null
. "$conf"
spec=${SR_WORKLOAD_SPEC:-${1:-}}
if [[ -z $spec ]]; then
  echo "global-job.sh: SR_WORKLOAD_SPEC is empty (backend exports it)" >&2
  exit 64
fi
echo "global-job.sh: global job ${SR_GLOBAL_JOB_ID:-?} workload ${SR_WORKLOAD_ID:-?} on ${SR_NODE:-${SLURMD_NODENAME:-$(hostname)}}" >&2
exec "${SR_CLIENT:-/usr/lib/strongroom/strongroom-global-job}" \
  --agent "${SR_AGENT:-127.0.0.1:7443}" --trust-domain "$SR_TRUST_DOMAIN" \
  --ca "$SR_CA" --cert "$SR_CERT" --key "$SR_KEY" \
  --node "${SR_NODE:-${SLURMD_NODENAME:-$(hostname)}}" \
  --grace "${SR_STOP_GRACE:-30}" --spec-b64 "$spec"
