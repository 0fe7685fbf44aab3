-- 0002: where each backend's local audit spool stands. backend writes its own records to a spool on its disk before
-- it queues them (services/backend/audit_writer.h); each batch that appends some of them stores the highest spool
-- position it holds here, in the same transaction, so a restart replays exactly the spooled records the chain lacks.
CREATE TABLE audit_spool_positions (
  recorded_by text PRIMARY KEY,            -- backend's SPIFFE id
  acknowledged bigint NOT NULL CHECK (acknowledged >= 0)
);
