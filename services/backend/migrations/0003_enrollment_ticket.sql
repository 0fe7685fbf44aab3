-- 0003: the SHA-256 (hex) of each workload's one-time enrollment ticket, as host-agent reported it in WorkloadReady
-- and backend forwards it in ProvisionWorkload (docs/IPSEC.md "Enrollment"). Only the hash: the ticket itself never
-- leaves the compute node and the workload. Empty until the workload is ready (and for one without a bundle).
ALTER TABLE workloads ADD COLUMN enrollment_ticket_sha256 text NOT NULL DEFAULT ''
  CHECK (enrollment_ticket_sha256 = '' OR enrollment_ticket_sha256 ~ '^[0-9a-f]{64}$');
