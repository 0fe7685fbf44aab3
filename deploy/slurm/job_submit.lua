-- Strongroom's job_submit plugin for a project's Local Slurm (JobSubmitPlugins=lua; this file sits next to
-- slurm.conf). docs/VM_CONTROLLER.md ("Submission shapes", "Pinning") explains every decision below.
--
-- At submit, for every job it:
--   * refuses, with a message saying what to do instead, every shape the enclave cannot run: srun/salloc outside a
--     batch job, job arrays, heterogeneous jobs, multi-node jobs, jobs of root, and the options that choose nodes
--     (--nodelist, --constraint, --reservation, another partition);
--   * tells vm-controller whether the job is whole-node exclusive (--exclusive: a bare-metal container) or not
--     (no --exclusive, --exclusive=user, --exclusive=mcs, --oversubscribe: a secure VM of the job's size);
--   * runs strongroom-submit-check (static, about 3 ms), which applies the field rules every Strongroom service
--     uses and this site's limits, and picks the account (-A, else the user's default Slurm account, else the
--     site's default); a refusal is shown to the user as is;
--   * puts the job into the wait partition, which has no nodes: nothing can start it until vm-controller, as a
--     Slurm operator, moves it to the batch partition with a constraint on its own workload's token feature.
--     A user's own --hold stays a user hold (vm-controller waits for the release);
--   * tags the comment "strongroom:<token>[ the user's comment]" and starts strongroom-slurm-hook in the
--     background to tell vm-controller (sbatch never waits on the network).
-- On update (slurm_job_modify), it refuses every change by a non-operator that could move a Strongroom job
-- (partition, features, nodes, reservation, comment, account, size, time) and allows hold/release only while
-- the job is still in the wait partition.
--
-- Settings: strongroom-hook.conf next to this file, "key=value" lines:
--   hook=/path/to/strongroom-slurm-hook      config=/path/to/slurm-hook.textproto
--   check=/path/to/strongroom-submit-check   accounts=proj1,proj2   default_account=proj1 (optional)
--   max_cpus=N max_memory_mb=M max_time_minutes=T (optional: what the enclave's nodes can meet)
--   vm_memory_overhead_mb=M (optional, default 384: backend's setting of the same name, the memory a VM's guest
--     OS adds to a non-exclusive job's own on its Global node)
--   operators=UID[,UID...] (optional; root is always one)  wait_partition=wait  partition=batch

local NO_VAL = 4294967294
local NO_VAL16 = 65534
-- job_desc.shared for plain --exclusive (JOB_SHARED_NONE). --exclusive=user is 2, =mcs 3, --oversubscribe 1,
-- none of them NO_VAL16: all of those share a node in Slurm's terms, so they take the VM path.
local JOB_SHARED_NONE = 0

local function this_dir()
  local conf = os.getenv("SLURM_CONF") or "/etc/slurm/slurm.conf"
  return conf:match("^(.*)/[^/]*$") or "."
end

local function read_settings()
  local settings = {}
  local f = io.open(this_dir() .. "/strongroom-hook.conf", "r")
  if f == nil then return nil end
  for line in f:lines() do
    local key, value = line:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
    if key ~= nil then settings[key] = value end
  end
  f:close()
  if settings.hook == nil or settings.config == nil or settings.check == nil or settings.accounts == nil then
    return nil
  end
  settings.wait_partition = settings.wait_partition or "wait"
  settings.partition = settings.partition or "batch"
  return settings
end

-- Single-quotes a value for /bin/sh: the only way os.execute and io.popen can start a program.
local function quote(value)
  return "'" .. string.gsub(tostring(value), "'", "'\\''") .. "'"
end

local function command(args)
  local quoted = {}
  for i, value in ipairs(args) do quoted[i] = quote(value) end
  return table.concat(quoted, " ")
end

-- math.random is unseeded in slurmctld; the kernel's UUID is unique and unguessable.
local function new_token()
  local f = io.open("/proc/sys/kernel/random/uuid", "r")
  if f == nil then return nil end
  local token = f:read("*l")
  f:close()
  return token
end

local function is_set(value)
  return value ~= nil and value ~= NO_VAL and value < NO_VAL
end

local function number_or_zero(value)
  if not is_set(value) then return 0 end
  return value
end

local function is_operator(settings, uid)
  if uid == 0 then return true end
  if settings == nil or settings.operators == nil then return false end
  for op in string.gmatch(settings.operators, "[^,%s]+") do
    if tonumber(op) == uid then return true end
  end
  return false
end

-- A user's value as a message may quote it: anything but [A-Za-z0-9._-] as \xNN (no control or bidi bytes).
local function quoted(value)
  return (string.gsub(tostring(value), "[^%w%._-]", function(c) return string.format("\\x%02x", c:byte()) end))
end

local function refuse(message)
  slurm.log_user("strongroom: " .. message)
  return slurm.ERROR
end

local function text(value)
  return value ~= nil and value ~= ""
end

-- A number as the submit check reads it; nil (a field this Slurm does not have) as "not set".
local function num(value)
  if value == nil then return "" end
  return tostring(value)
end

function slurm_job_submit(job_desc, part_list, submit_uid)
  -- Shapes first: each refusal says what to do instead.
  if job_desc.script == nil then
    if is_set(job_desc.het_job_offset) and job_desc.het_job_offset > 0 then
      return refuse("heterogeneous jobs are not supported: submit each component as its own sbatch job " ..
                    "(chain them with --dependency=afterok:<jobid> if one needs the other)")
    end
    return refuse("srun and salloc outside a batch job cannot run in a secure workload: put the commands in a " ..
                  "script and submit it with sbatch (srun inside that script works)")
  end
  if is_set(job_desc.het_job_offset) then
    return refuse("heterogeneous jobs are not supported: submit each component as its own sbatch job " ..
                  "(chain them with --dependency=afterok:<jobid> if one needs the other)")
  end
  if text(job_desc.array_inx) then
    return refuse("job arrays are not supported: each task needs its own secure workload. Submit one " ..
                  "sbatch job per task instead (e.g. for i in 1 2 3; do sbatch " ..
                  "--export=ALL,TASK=$i job.sh; done)")
  end
  -- Whole-node exclusive: a bare-metal container. Anything else: a secure VM with the job's CPUs and memory.
  local exclusive = job_desc.shared == JOB_SHARED_NONE
  local nodes = number_or_zero(job_desc.min_nodes)
  if nodes > 1 then
    return refuse("jobs run on one node for now; this job asks for " .. nodes ..
                  " nodes. Multi-node jobs are not supported yet.")
  end
  if job_desc.user_id == 0 then return refuse("jobs of root are not run in secure workloads") end
  if text(job_desc.req_nodes) then
    return refuse("--nodelist/-w is not allowed: every job runs on its own secure workload's node, which " ..
                  "Strongroom chooses. Resubmit without --nodelist")
  end
  if text(job_desc.features) or text(job_desc.cluster_features) then
    return refuse("--constraint/-C is not allowed: every job runs on its own secure workload's node. " ..
                  "Resubmit without --constraint")
  end
  if text(job_desc.tres_per_node) or text(job_desc.tres_per_job) or text(job_desc.tres_per_task) or
     text(job_desc.tres_per_socket) then
    return refuse("GPUs and other generic resources (--gres, --gpus) are not supported in secure workloads yet. " ..
                  "Resubmit without them")
  end
  if job_desc.requeue == 1 then
    return refuse("--requeue is not supported: a job's secure workload ends with it, so a requeued job would " ..
                  "have nowhere to run. Resubmit without --requeue")
  end
  if text(job_desc.reservation) then
    return refuse("--reservation is not allowed: every job runs on its own secure workload's node. " ..
                  "Resubmit without --reservation")
  end
  local settings = read_settings()
  local token = new_token()
  if settings == nil or token == nil then
    return refuse("the secure-enclave submit hook is not configured on this cluster (strongroom-hook.conf); " ..
                  "please contact your administrator")
  end
  if text(job_desc.partition) and job_desc.partition ~= settings.partition then
    return refuse("partition \"" .. quoted(job_desc.partition) .. "\" is not allowed: secure-enclave jobs run in " ..
                  "partition " .. settings.partition .. ". Resubmit without -p")
  end

  -- Field rules and site limits: one definition (common/field_rules.h), in strongroom-submit-check.
  local check = {
    settings.check,
    "--uid", number_or_zero(job_desc.user_id),
    "--account", job_desc.account or "",
    "--default-account", job_desc.default_account or "",
    "--site-default-account", settings.default_account or "",
    "--accounts", settings.accounts,
    "--cpus", num(job_desc.min_cpus),
    "--mem-per-node-mb", num(job_desc.min_mem_per_node),
    "--mem-per-cpu-mb", num(job_desc.min_mem_per_cpu),
    "--time-min", num(job_desc.time_limit),
    "--max-cpus", settings.max_cpus or "",
    "--max-memory-mb", settings.max_memory_mb or "",
    "--max-time-min", settings.max_time_minutes or "",
    "--exclusive", exclusive and "1" or "0",
    "--vm-memory-overhead-mb", settings.vm_memory_overhead_mb or "",
  }
  local pipe = io.popen(command(check) .. " 2>&1; echo \"exit=$?\"", "r")
  if pipe == nil then return refuse("the submit check could not run; please contact your administrator") end
  local output = pipe:read("*a") or ""
  pipe:close()
  local verdict = output:match("exit=(%d+)%s*$")
  local account = output:match("^account=([%w_-]+)\n")
  if verdict ~= "0" or account == nil then
    local message = output:gsub("\n?exit=%d+%s*$", ""):gsub("^strongroom: ", "")
    if verdict ~= "1" then
      slurm.log_error("strongroom: submit check failed (%s): %s", tostring(verdict), message)
      message = "the submit check failed; please contact your administrator"
    end
    return refuse(message)
  end

  local user_comment = job_desc.comment
  job_desc.comment = "strongroom:" .. token
  if text(user_comment) then job_desc.comment = job_desc.comment .. " " .. user_comment end
  job_desc.account = account
  -- The hold that only operators lift: no node is in this partition.
  job_desc.partition = settings.wait_partition

  local args = {
    settings.hook, "--config", settings.config, "convert",
    "--token", token,
    "--uid", number_or_zero(job_desc.user_id),
    "--gid", number_or_zero(job_desc.group_id),
    "--user", job_desc.user_name or "",
    "--account", account,
    "--nodes", nodes,
    "--cpus", number_or_zero(job_desc.min_cpus),
    "--time-min", number_or_zero(job_desc.time_limit),
    "--exclusive", exclusive and "1" or "0",
    "--script", job_desc.script_path or "",
    "--workdir", job_desc.work_dir or "",
    "--submit-time", os.time(),
  }
  os.execute("setsid " .. command(args) .. " </dev/null >/dev/null 2>&1 &")
  slurm.log_info("strongroom: job of uid %d tagged %s, account %s, %s, in partition %s until its workload is ready",
                 job_desc.user_id, token, account, exclusive and "exclusive (container)" or "non-exclusive (VM)",
                 settings.wait_partition)
  return slurm.SUCCESS
end

-- What a non-operator may never change on a Strongroom job: each could move it off its own workload's node or
-- out of step with its global job.
local PINNED_FIELDS = {
  { "partition", "partition" }, { "features", "features/constraint" }, { "cluster_features", "cluster features" },
  { "req_nodes", "nodelist" }, { "exc_nodes", "excluded nodes" }, { "reservation", "reservation" },
  { "comment", "comment" }, { "account", "account" }, { "array_inx", "array" },
  { "tres_per_node", "GRES" }, { "tres_per_job", "TRES" }, { "tres_per_task", "TRES" },
}
local PINNED_NUMBERS = {
  { "min_nodes", "node count" }, { "max_nodes", "node count" }, { "min_cpus", "CPU count" },
  { "time_limit", "time limit" }, { "time_min", "time limit" },
}

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  local settings = read_settings()
  if is_operator(settings, modify_uid) then return slurm.SUCCESS end
  local comment = job_rec.comment or ""
  if comment:sub(1, 11) ~= "strongroom:" then return slurm.SUCCESS end
  for _, field in ipairs(PINNED_FIELDS) do
    if job_desc[field[1]] ~= nil then
      return refuse("you cannot change the " .. field[2] .. " of a secure-enclave job: it is pinned to its own " ..
                    "workload. Cancel it (scancel) and resubmit instead")
    end
  end
  for _, field in ipairs(PINNED_NUMBERS) do
    if is_set(job_desc[field[1]]) then
      return refuse("you cannot change the " .. field[2] .. " of a secure-enclave job: it is pinned to its own " ..
                    "workload. Cancel it (scancel) and resubmit instead")
    end
  end
  if job_desc.pn_min_memory ~= nil and job_desc.pn_min_memory < 1.8e19 then
    return refuse("you cannot change the memory of a secure-enclave job: it is pinned to its own workload. " ..
                  "Cancel it (scancel) and resubmit instead")
  end
  if job_desc.shared ~= nil and job_desc.shared ~= NO_VAL16 then
    return refuse("you cannot change --exclusive of a secure-enclave job. Cancel it and resubmit instead")
  end
  local wait = settings ~= nil and settings.wait_partition or "wait"
  if job_desc.priority ~= nil and job_desc.priority ~= NO_VAL and job_rec.partition ~= wait then
    return refuse("this job is already on its way to its secure workload; it can no longer be held or " ..
                  "released. Cancel it (scancel) instead")
  end
  return slurm.SUCCESS
end

return slurm.SUCCESS
