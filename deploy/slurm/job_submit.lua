-- Strongroom's job_submit plugin for a project's Local Slurm (JobSubmitPlugins=lua; this file sits next to
-- slurm.conf). For every job it:
--   * refuses, with a message to the user, what the enclave cannot run yet (non-exclusive or multi-node jobs,
--     jobs of root);
--   * tags the job with a fresh token in its comment ("strongroom:<token>[ the user's comment]") and holds it
--     (priority 0) until its secure workload is ready;
--   * starts strongroom-slurm-hook in the background to tell vm-controller. sbatch never waits on the network: the
--     only cost on the submit path is one fork (about 20 ms).
-- Settings come from strongroom-hook.conf next to this file:  hook=/path/to/strongroom-slurm-hook
--                                                             config=/path/to/slurm-hook.textproto

local NO_VAL = 4294967294

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
  if settings.hook == nil or settings.config == nil then return nil end
  return settings
end

-- Single-quotes a value for /bin/sh: the only way os.execute can start the hook.
local function quote(value)
  return "'" .. string.gsub(tostring(value), "'", "'\\''") .. "'"
end

-- math.random is unseeded in slurmctld; the kernel's UUID is unique and unguessable.
local function new_token()
  local f = io.open("/proc/sys/kernel/random/uuid", "r")
  if f == nil then return nil end
  local token = f:read("*l")
  f:close()
  return token
end

local function number_or_zero(value)
  if value == nil or value == NO_VAL or value >= NO_VAL then return 0 end
  return value
end

function slurm_job_submit(job_desc, part_list, submit_uid)
  if job_desc.shared ~= 0 then
    slurm.log_user("strongroom: this enclave runs only --exclusive jobs for now. Non-exclusive jobs need the " ..
                   "secure-VM path, which is not available yet. Resubmit with: sbatch --exclusive ...")
    return slurm.ERROR
  end
  local nodes = number_or_zero(job_desc.min_nodes)
  if nodes > 1 then
    slurm.log_user("strongroom: --exclusive jobs run on one node for now; this job asks for " .. nodes ..
                   " nodes. Multi-node jobs are not supported yet.")
    return slurm.ERROR
  end
  if job_desc.user_id == 0 then
    slurm.log_user("strongroom: jobs of root are not run in secure workloads")
    return slurm.ERROR
  end
  local settings = read_settings()
  local token = new_token()
  if settings == nil or token == nil then
    slurm.log_user("strongroom: the secure-enclave submit hook is not configured on this cluster " ..
                   "(strongroom-hook.conf); please contact your administrator")
    return slurm.ERROR
  end

  local user_comment = job_desc.comment
  job_desc.comment = "strongroom:" .. token
  if user_comment ~= nil and user_comment ~= "" then job_desc.comment = job_desc.comment .. " " .. user_comment end
  job_desc.priority = 0

  local args = {
    settings.hook, "--config", settings.config, "convert",
    "--token", token,
    "--uid", number_or_zero(job_desc.user_id),
    "--gid", number_or_zero(job_desc.group_id),
    "--user", job_desc.user_name or "",
    "--account", job_desc.account or "",
    "--nodes", nodes,
    "--cpus", number_or_zero(job_desc.min_cpus),
    "--time-min", number_or_zero(job_desc.time_limit),
    "--exclusive", "1",
    "--script", job_desc.script_path or "",
    "--workdir", job_desc.work_dir or "",
    "--submit-time", os.time(),
  }
  local quoted = {}
  for i, value in ipairs(args) do quoted[i] = quote(value) end
  os.execute("setsid " .. table.concat(quoted, " ") .. " </dev/null >/dev/null 2>&1 &")
  slurm.log_info("strongroom: job of uid %d tagged %s and held for its secure workload",
                 job_desc.user_id, token)
  return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  return slurm.SUCCESS
end

return slurm.SUCCESS
