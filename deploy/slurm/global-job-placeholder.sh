#!/bin/sh
# PLACEHOLDER for the global job script (the real one arrives with the host-agent issue, in this folder).
#
# backend submits this script with sbatch for every global job, exporting only:
#   SR_GLOBAL_JOB_ID   the global job id (gj-...)
#   SR_WORKLOAD_ID     the workload id (wl-...)
#   SR_WORKLOAD_SPEC   base64 of the serialized strongroom.v1.WorkloadSpec to pass to host-agent StartWorkload
# The real script calls the node's host-agent StartWorkload with that spec, blocks until the workload ends, and calls
# StopWorkload on SIGTERM. This placeholder cannot start a workload: it says so on stderr (the job's --output) and
# holds its allocation (the whole node for a container's --exclusive job, the VM's CPUs and memory otherwise) until
# the job is cancelled, so that backend's readiness deadline fails the job honestly (READY_DEADLINE_EXCEEDED),
# scancels it and asks host-agent to stop the workload. Like global-job.sh it has no #SBATCH line: backend's
# options alone decide whether the job takes the whole node.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
echo "strongroom global job ${SR_GLOBAL_JOB_ID:-?} (workload ${SR_WORKLOAD_ID:-?}) on $(hostname):" \
  "this placeholder script cannot start a workload yet; holding the node until cancelled" >&2
trap 'echo "strongroom global job ${SR_GLOBAL_JOB_ID:-?}: SIGTERM, exiting" >&2; exit 0' TERM INT
while :; do
  sleep 3600 &
  wait $!
done
