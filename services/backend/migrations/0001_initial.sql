-- 0001: global jobs, their workloads, their timeline (state transitions and events) and the audit chain.
-- Times are bigint microseconds since the Unix epoch (UTC): exact, so audit hashes survive a round trip.

CREATE TABLE job_states (
  state smallint PRIMARY KEY,          -- strongroom.v1.JobState number
  name text NOT NULL UNIQUE,
  terminal boolean NOT NULL
);
INSERT INTO job_states VALUES
  (1, 'SUBMITTING', false), (2, 'QUEUED', false), (3, 'STARTING', false), (4, 'PROVISIONING', false),
  (5, 'RUNNING', false), (6, 'RELEASING', false), (7, 'CANCELLING', false), (8, 'COMPLETED', true),
  (9, 'FAILED', true), (10, 'CANCELLED', true);

-- The allowed state transitions. backend refuses to start unless its own table (job_state.cc) is identical, and
-- the trigger below refuses every other change of jobs.state, whoever makes it.
CREATE TABLE job_state_transitions (
  from_state smallint NOT NULL REFERENCES job_states,
  to_state smallint NOT NULL REFERENCES job_states,
  PRIMARY KEY (from_state, to_state)
);
INSERT INTO job_state_transitions VALUES
  (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 8), (7, 10),
  (1, 7), (2, 7), (3, 7), (4, 7), (5, 7), (6, 7),
  (1, 9), (2, 9), (3, 9), (4, 9), (5, 9), (6, 9);

CREATE TABLE jobs (
  global_job_id text PRIMARY KEY,
  workload_id text NOT NULL UNIQUE,
  local_cluster text NOT NULL,
  local_job_id bigint NOT NULL,
  token text NOT NULL,
  user_name text NOT NULL,
  user_uid bigint NOT NULL,
  user_gid bigint NOT NULL,
  project text NOT NULL,
  nodes integer NOT NULL,
  cpus integer NOT NULL,
  memory_bytes bigint NOT NULL,
  gpus integer NOT NULL,
  time_limit_seconds bigint NOT NULL,
  exclusive boolean NOT NULL,
  state smallint NOT NULL REFERENCES job_states,
  end_reason smallint NOT NULL DEFAULT 0,  -- strongroom.v1.JobEndReason
  failure jsonb,                           -- strongroom.v1.FailureInfo
  local_end jsonb,                         -- strongroom.v1.LocalJobEnd
  global_slurm_job_id bigint,
  slurm_state text NOT NULL DEFAULT '',    -- last state squeue reported
  submit_attempts integer NOT NULL DEFAULT 0,
  allocated_cpus integer NOT NULL DEFAULT 0,
  allocated_nodes integer NOT NULL DEFAULT 0,
  local_submit_us bigint NOT NULL,
  created_us bigint NOT NULL,
  updated_us bigint NOT NULL,
  start_us bigint,
  end_us bigint,
  -- Side effects still owed (scancel, host-agent StopWorkload, vm-controller ProvisionWorkload): a restart
  -- resumes them from here. effect_after_us delays the next try after a transient failure.
  need_scancel boolean NOT NULL DEFAULT false,
  need_stop_workload boolean NOT NULL DEFAULT false,
  need_provision boolean NOT NULL DEFAULT false,
  effect_attempts integer NOT NULL DEFAULT 0,
  effect_after_us bigint NOT NULL DEFAULT 0,
  effect_since_us bigint NOT NULL DEFAULT 0,
  request bytea NOT NULL,                  -- the CreateGlobalJobRequest, for idempotent repeats
  UNIQUE (local_cluster, local_job_id)
);
CREATE INDEX jobs_newest ON jobs (created_us DESC, global_job_id DESC);
CREATE INDEX jobs_active ON jobs (state) WHERE state < 8;
CREATE INDEX jobs_global_slurm_job_id ON jobs (global_slurm_job_id);
CREATE INDEX jobs_project_start ON jobs (project, start_us);
CREATE INDEX jobs_token ON jobs (local_cluster, token);

CREATE TABLE workloads (
  workload_id text PRIMARY KEY,
  global_job_id text NOT NULL UNIQUE REFERENCES jobs,
  kind smallint NOT NULL,                  -- strongroom.v1.WorkloadKind
  state smallint NOT NULL DEFAULT 0,       -- strongroom.v1.WorkloadState, as host-agent last reported
  node text NOT NULL DEFAULT '',
  addresses text[] NOT NULL DEFAULT '{}',
  identity jsonb,                          -- strongroom.v1.Identity
  local_node_name text NOT NULL,
  ready_us bigint,
  provisioned_us bigint,
  release_us bigint,
  stopped_us bigint,
  exit jsonb,                              -- strongroom.v1.ExitStatus
  scrub jsonb,                             -- strongroom.v1.ScrubReport
  failure jsonb,                           -- strongroom.v1.FailureInfo
  spec jsonb NOT NULL                      -- strongroom.v1.WorkloadSpec handed to the global job
);

-- Every state transition (to_state set) and event (event set) of every job, in order. It is also the outbox of
-- the audit chain: the chain writer appends each row as an audit record and stores its sequence here, so a
-- transition committed just before a crash is still chained after the restart.
CREATE TABLE job_timeline (
  id bigserial PRIMARY KEY,
  global_job_id text NOT NULL REFERENCES jobs,
  time_us bigint NOT NULL,
  from_state smallint REFERENCES job_states,
  to_state smallint REFERENCES job_states,
  event text,
  actor text NOT NULL,
  outcome smallint NOT NULL,               -- strongroom.v1.AuditOutcome
  status_code integer NOT NULL DEFAULT 0,
  message text NOT NULL DEFAULT '',
  details jsonb NOT NULL DEFAULT '{}',
  audit_sequence bigint,
  CHECK ((to_state IS NULL) <> (event IS NULL))
);
CREATE INDEX job_timeline_job ON job_timeline (global_job_id, id);
CREATE INDEX job_timeline_unchained ON job_timeline (id) WHERE audit_sequence IS NULL;

CREATE FUNCTION jobs_check_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.state <> 1 THEN
      RAISE EXCEPTION 'job %: a new job starts in SUBMITTING, not %', NEW.global_job_id,
        (SELECT name FROM job_states WHERE state = NEW.state) USING ERRCODE = 'check_violation';
    END IF;
  ELSIF NEW.state <> OLD.state AND NOT EXISTS (
      SELECT 1 FROM job_state_transitions t WHERE t.from_state = OLD.state AND t.to_state = NEW.state) THEN
    RAISE EXCEPTION 'job %: illegal state transition % -> %', NEW.global_job_id,
      (SELECT name FROM job_states WHERE state = OLD.state), (SELECT name FROM job_states WHERE state = NEW.state)
      USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER jobs_state_guard BEFORE INSERT OR UPDATE OF state ON jobs
  FOR EACH ROW EXECUTE FUNCTION jobs_check_state();

-- The audit chain: one row per record, hash-chained (docs/AUDIT.md). Append-only: the triggers refuse UPDATE,
-- DELETE and TRUNCATE; the hash chain detects what a superuser does anyway.
CREATE TABLE audit_records (
  sequence bigint PRIMARY KEY CHECK (sequence >= 1),
  time_us bigint NOT NULL,
  actor text NOT NULL,
  action text NOT NULL,
  object text NOT NULL,
  outcome smallint NOT NULL,
  status_code integer NOT NULL,
  details jsonb NOT NULL,
  prev_hash bytea NOT NULL,
  hash bytea NOT NULL,
  recorded_by text NOT NULL,
  source_sequence bigint NOT NULL,
  received_us bigint NOT NULL,
  UNIQUE (recorded_by, source_sequence)
);
CREATE INDEX audit_records_actor ON audit_records (actor text_pattern_ops, sequence);
CREATE INDEX audit_records_object ON audit_records (object text_pattern_ops, sequence);
CREATE INDEX audit_records_time ON audit_records (time_us);

CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_records is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON audit_records
  FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
  FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();

-- For operators reading the chain with psql.
CREATE VIEW audit_log AS
  SELECT sequence, to_timestamp(time_us / 1e6) AS time, actor, action, object,
         (ARRAY['SUCCESS', 'FAILURE', 'DENIED'])[outcome] AS outcome, status_code, details, recorded_by,
         source_sequence, encode(hash, 'hex') AS hash
  FROM audit_records;
