--- `llmchat batch ...`: the provider Batch API from the command line, on
-- client:batch / client:batch_resume / client:batches (public API only).
--
--   llmchat batch run IN.jsonl -o OUT.jsonl   submit, show progress, write results in input order
--   llmchat batch status ID                   one line: id, status, counts
--   llmchat batch results ID [-o OUT.jsonl]   the results of a finished batch
--   llmchat batch cancel ID
--   llmchat batch list
local llmchat = require("llmchat")
local term = require("llmchat.cli.term")

local M = {}

local FINISHED = { completed = true, failed = true, expired = true, cancelled = true }

local USAGE = "usage: llmchat batch run IN.jsonl [-o OUT.jsonl] | status ID | results ID [-o OUT.jsonl] | cancel ID | list"

local function counts_of(counts)
  counts = type(counts) == "table" and counts or {}
  local total = tonumber(counts.total) or 0
  local completed = tonumber(counts.completed) or 0
  local failed = tonumber(counts.failed) or 0
  return total, completed, failed
end

local function clock(seconds)
  seconds = math.floor(seconds + 0.5)
  local h, m, s = math.floor(seconds / 3600), math.floor(seconds / 60) % 60, seconds % 60
  if h > 0 then return ("%d:%02d:%02d"):format(h, m, s) end
  return ("%d:%02d"):format(m, s)
end

--- A progress reporter on stderr: a bar redrawn in place on a terminal,
-- a line per change otherwise. progress(status, counts); progress.done().
function M.progress(id, stream, is_tty, now)
  stream = stream or io.stderr
  now = now or os.time
  local t0 = now()
  local last, drawn = nil, false
  local width = 24
  local self = {}
  local function update(status, counts)
    local total, completed, failed = counts_of(counts)
    local done = completed + failed
    if is_tty then
      local frac = total > 0 and math.min(1, done / total) or 0
      local fill = math.floor(frac * width + 0.5)
      local line = ("batch %s [%s%s] %d/%d %s%s %s"):format(id, ("#"):rep(fill), ("-"):rep(width - fill),
        done, total, tostring(status), failed > 0 and (" (" .. failed .. " failed)") or "", clock(now() - t0))
      stream:write("\r", line, term.CLEAR_EOL)
      drawn = true
    else
      local key = ("%s %d %d %d"):format(tostring(status), total, completed, failed)
      if key == last then return end
      last = key
      stream:write(("batch %s: %s, %d/%d done%s\n"):format(id, tostring(status), done, total,
        failed > 0 and (", " .. failed .. " failed") or ""))
    end
    stream:flush()
  end
  function self.done()
    if drawn then stream:write("\n"); stream:flush(); drawn = false end
  end
  return setmetatable(self, { __call = function(_, status, counts) update(status, counts) end })
end

local function result_line(i, r)
  local id = type(r) == "table" and r.custom_id or nil
  if llmchat.is_error(r) or type(r) ~= "table" then
    local e = type(r) == "table" and r or { kind = "protocol", message = tostring(r) }
    return { index = i, custom_id = id, error = M.cli.error_table(e) }, false
  end
  local res = {}
  for k, v in pairs(r) do
    if k ~= "headers" then res[k] = v end
  end
  return { index = i, custom_id = id, result = res }, true
end

-- Writes the results (input order) as JSONL to path (temp file + rename) or
-- stdout ("-" or nil). Returns ok, failed, or nil and a message.
local function write_results(handle, path)
  local f, tmp
  if path == nil or path == "-" then
    f = io.stdout
  else
    tmp = ("%s.tmp-%d-%d"):format(path, os.time(), math.random(1, 1e9))
    local err
    f, err = io.open(tmp, "wb")
    if not f then return nil, "cannot write results: " .. tostring(err) end
  end
  local ok_n, failed = 0, 0
  local function put(i, r)
    local line, ok = result_line(i, r)
    if ok then ok_n = ok_n + 1 else failed = failed + 1 end
    f:write(assert(M.cli.to_json(line)), "\n")
  end
  if type(handle.each) == "function" then
    local it, err = handle:each()
    if not it then
      if tmp then f:close(); os.remove(tmp) end
      return nil, err
    end
    for i, r in it do put(i, r) end
  else
    local results, err = handle:results()
    if not results then
      if tmp then f:close(); os.remove(tmp) end
      return nil, err
    end
    for i = 1, #results do put(i, results[i]) end
  end
  if tmp then
    local wok, werr = f:close()
    if not wok then os.remove(tmp); return nil, "cannot write results: " .. tostring(werr) end
    local rok, rerr = os.rename(tmp, path)
    if not rok then os.remove(tmp); return nil, "cannot write " .. path .. ": " .. tostring(rerr) end
  else
    f:flush()
  end
  return ok_n, failed
end

local function fail(err)
  M.cli.warn(tostring(err))
  return M.cli.exit_code(err)
end

-- A field of the batch behind a handle: handle.name (or handle:name()), else the
-- batch object's (handle.batch / handle.data).
local function batch_field(handle, name)
  local v = handle[name]
  if type(v) == "function" then
    local ok, r = pcall(v, handle)
    v = ok and r or nil
  end
  for _, k in ipairs{ "batch", "data", "object" } do
    if v ~= nil then break end
    if type(handle[k]) == "table" then v = handle[k][name] end
  end
  return v
end

local function status_of(handle)
  local st = batch_field(handle, "status")
  return type(st) == "string" and st or nil
end

local function counts_field(handle)
  local c = batch_field(handle, "request_counts")
  return type(c) == "table" and c or nil
end

-- writes the results of a finished handle and says how it went
local function finish(handle, id, output)
  local ok_n, failed = write_results(handle, output)
  if not ok_n then return fail(failed) end
  local status = status_of(handle) or "finished"
  io.stderr:write(("batch %s: %s, %d ok, %d failed%s\n"):format(id, tostring(status), ok_n, failed,
    output and output ~= "-" and (", results in " .. output) or ""))
  if failed > 0 then return M.cli.EXIT.batch_incomplete end
  return M.cli.EXIT.ok
end

local function run(client, opts, input)
  local cli = M.cli
  if not input then cli.warn(USAGE); return cli.EXIT.usage end
  local f, oerr = io.open(input, "rb")
  if not f then cli.warn("cannot read " .. input .. ": " .. tostring(oerr)); return cli.EXIT.failure end
  f:close()
  if type(client.batch) ~= "function" then
    cli.warn("this llmchat has no Batch API (client:batch)")
    return cli.EXIT.failure
  end
  local metadata
  for _, kv in ipairs(opts.metadata or {}) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    if not k then cli.warn("option --metadata expects KEY=VALUE, got '" .. kv .. "'"); return cli.EXIT.usage end
    metadata = metadata or {}
    metadata[k] = v
  end
  local handle, err, interrupted = cli.run_guarded(function()
    return client:batch{ requests = input, endpoint = opts.endpoint or "/v1/chat/completions",
      metadata = metadata }
  end)
  if interrupted then cli.warn("interrupted before the batch was created"); return cli.EXIT.interrupted end
  if not handle then return fail(err) end
  local id = tostring(handle.id)
  io.stderr:write(("batch %s: submitted\n"):format(id))
  io.stderr:flush()
  local progress = M.progress(id, io.stderr, term.isatty(2))
  local st, werr
  st, werr, interrupted = cli.run_guarded(function()
    return handle:wait{ timeout = opts.timeout or 86400 + 3600, interval = opts.interval or 10,
      on_progress = function(status, counts) progress(status, counts) end }
  end)
  progress.done()
  if interrupted then
    cli.warn(("interrupted: batch %s goes on at the provider (llmchat batch status|results|cancel %s)"):format(id, id))
    return cli.EXIT.interrupted
  end
  if st == nil and werr ~= nil then
    if werr.kind == "timeout" then
      cli.warn(("%s; batch %s goes on at the provider (llmchat batch results %s later)"):format(
        tostring(werr), id, id))
      return cli.exit_code(werr)
    end
    return fail(werr)
  end
  return finish(handle, id, opts.output)
end

local function resume(client, id)
  if type(client.batch_resume) ~= "function" then
    return nil, "this llmchat has no Batch API (client:batch_resume)"
  end
  local handle, err, interrupted = M.cli.run_guarded(function() return client:batch_resume(id) end)
  if interrupted then return nil, "interrupted", true end
  if not handle then return nil, err end
  return handle
end

local function refresh(handle)
  local st, err, interrupted = M.cli.run_guarded(function()
    -- refresh() asks now; poll() (non-blocking) only starts a request
    if type(handle.refresh) == "function" then return handle:refresh() end
    return handle:poll()
  end)
  if interrupted then return nil, "interrupted", true end
  if st == nil and err ~= nil then return nil, err end
  return st or status_of(handle)
end

function M.main(cli, client, opts, words)
  M.cli = cli
  local sub, arg1 = words[2], words[3]
  if sub == nil or words[4] ~= nil then cli.warn(USAGE); return cli.EXIT.usage end
  if sub ~= "list" and sub ~= "run" and sub ~= "status" and sub ~= "results" and sub ~= "cancel" then
    cli.warn("unknown batch command '" .. tostring(sub) .. "'; " .. USAGE)
    return cli.EXIT.usage
  end
  if sub == "list" then
    if type(client.batches) ~= "function" then
      cli.warn("this llmchat has no Batch API (client:batch)")
      return cli.EXIT.failure
    end
  end
  if sub == "run" then return run(client, opts, arg1) end
  if sub == "list" then
    if arg1 then cli.warn(USAGE); return cli.EXIT.usage end
    local list, err, interrupted = cli.run_guarded(function() return client:batches() end)
    if interrupted then return cli.EXIT.interrupted end
    if not list then return fail(err) end
    local items = type(list.data) == "table" and list.data or list
    if opts.json then
      -- the provider's batch objects, not the handles (a handle holds its client)
      local objects = {}
      for i, b in ipairs(items) do objects[i] = type(b.object) == "table" and b.object or b end
      io.stdout:write(assert(cli.to_json(objects)), "\n")
      return cli.EXIT.ok
    end
    for _, b in ipairs(items) do
      local total, completed, failed = counts_of(b.request_counts)
      io.stdout:write(("%s %s %d/%d%s\n"):format(tostring(b.id), tostring(b.status), completed + failed, total,
        failed > 0 and (" (" .. failed .. " failed)") or ""))
    end
    return cli.EXIT.ok
  end

  if not arg1 then cli.warn(USAGE); return cli.EXIT.usage end
  local handle, err, interrupted = resume(client, arg1)
  if interrupted then return cli.EXIT.interrupted end
  if not handle then
    if type(err) == "string" then cli.warn(err); return cli.EXIT.failure end
    return fail(err)
  end
  local id = tostring(handle.id or arg1)

  if sub == "cancel" then
    local st, cerr
    st, cerr, interrupted = cli.run_guarded(function() return handle:cancel() end)
    if interrupted then return cli.EXIT.interrupted end
    if st == nil and cerr ~= nil then return fail(cerr) end
    io.stdout:write(("%s %s\n"):format(id, tostring(status_of(handle) or (type(st) == "string" and st) or "cancelling")))
    return cli.EXIT.ok
  end

  local status, perr
  status, perr, interrupted = refresh(handle)
  if interrupted then return cli.EXIT.interrupted end
  if not status then
    if type(perr) == "string" then cli.warn(perr); return cli.EXIT.failure end
    return fail(perr)
  end
  if sub == "status" then
    local counts = counts_field(handle)
    if opts.json then
      io.stdout:write(assert(cli.to_json({ id = id, status = status, request_counts = counts })), "\n")
    else
      local total, completed, failed = counts_of(counts)
      io.stdout:write(("%s %s %d/%d%s\n"):format(id, tostring(status), completed + failed, total,
        failed > 0 and (" (" .. failed .. " failed)") or ""))
    end
    return cli.EXIT.ok
  end
  -- results
  if not FINISHED[status] then
    cli.warn(("batch %s is %s: its results come when it has finished (llmchat batch status %s)"):format(
      id, tostring(status), id))
    return cli.EXIT.failure
  end
  return finish(handle, id, opts.output)
end

return M
