--- llmchat.batch: the provider's Batch API (/v1/files + /v1/batches) on the public call path.
--
--   local h = client:batch{ requests = {...} | "in.jsonl", endpoint = "/v1/chat/completions",
--     completion_window = "24h", metadata = {...}, on_progress = fn, interval = s }
--   h:wait{ timeout = 3600 }
--   for i, res in assert(h:each()) do ... end      -- or h:results(): input order
--
-- Every HTTP exchange is a client:request, so uploads, polls, cancels and downloads get
-- the retries, timeouts, errors and coroutine behaviour of every call. See docs/batch.md.
--
-- Input order across processes: generated custom_ids are "<n>-<token>" (n the input
-- position) and the batch's metadata carries "llmchat_order" = "seq:<token>:<count>";
-- when the caller gave custom_ids of their own it is "input:<count>" and the order is read
-- back from the batch's input file. A batch made by another tool is read the same way.
local core = require("llmchat.core")
local result = require("llmchat.result")
local errors = require("llmchat.errors")
local json = require("llmchat.json")
local loop = require("llmchat.loop")
local input = require("llmchat.batch.input")
local output = require("llmchat.batch.output")

local M = {}

M.LIMITS = input.LIMITS
M.ORDER_KEY = "llmchat_order"

local TERMINAL = { completed = true, expired = true, cancelled = true, failed = true }
M.TERMINAL = TERMINAL

-- errors of a refresh that polling again will not cure
local PERMANENT = { auth = true, permission = true, not_found = true, bad_request = true,
  insufficient_credits = true, protocol = true }

-- the default poll interval grows from MIN to MAX while nothing changes
local MIN_INTERVAL, MAX_INTERVAL = 1, 30

--- Where temporary files go (the JSONL before its upload, downloads being read): a
-- function returning a fresh path; os.tmpname by default.
M.tmpname = os.tmpname

local Batch = {}
Batch.__index = Batch
Batch.__name = "llmchat.batch"
M.Batch = Batch

function Batch.__tostring(h)
  local c = h.request_counts or {}
  return ("llmchat.batch (%s, %s, %s/%s done, %s failed)"):format(h.id, tostring(h.status),
    tostring(c.completed or 0), tostring(c.total or "?"), tostring(c.failed or 0))
end

local function pct(s)
  return (s:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function check_id(id, what, level)
  if type(id) ~= "string" or id == "" or id:find("[%s%c/?#]") then
    error(("llmchat.batch: %s must be an id string, got %s"):format(what, tostring(id)), level + 1)
  end
end

local function same_counts(a, b)
  a, b = a or {}, b or {}
  return a.total == b.total and a.completed == b.completed and a.failed == b.failed
end

-- Takes a batch object from the API into the handle; fires the progress callbacks when
-- the status or the counts changed.
local function update(h, obj)
  if type(obj) ~= "table" then return end
  local changed = obj.status ~= h.status or not same_counts(obj.request_counts, h.request_counts)
  h.object = obj
  h.status = obj.status
  h.request_counts = obj.request_counts or h.request_counts or {}
  h.endpoint = obj.endpoint or h.endpoint
  h.input_file_id = obj.input_file_id
  h.output_file_id = obj.output_file_id
  h.error_file_id = obj.error_file_id
  h.errors = obj.errors
  h.metadata = obj.metadata
  h.done = TERMINAL[obj.status] == true
  if changed then
    h._unchanged = 0
    if h.on_progress then h.on_progress(h.status, h.request_counts, h) end
    if h._wait_progress then h._wait_progress(h.status, h.request_counts, h) end
  else
    h._unchanged = (h._unchanged or 0) + 1
  end
end

-- seconds until the next refresh is due
local function interval_of(h)
  if h.interval then return h.interval end
  return math.min(MAX_INTERVAL, MIN_INTERVAL * 1.5 ^ (h._unchanged or 0))
end

local function check_handle_opts(o)
  if o.on_progress ~= nil and type(o.on_progress) ~= "function" then
    error("llmchat.batch: 'on_progress' must be a function", 4)
  end
  if o.interval ~= nil and (type(o.interval) ~= "number" or o.interval < 0) then
    error("llmchat.batch: 'interval' must be a number of seconds", 4)
  end
  if o.headers ~= nil and type(o.headers) ~= "table" then
    error("llmchat.batch: 'headers' must be a table", 4)
  end
  for _, k in ipairs({ "max_retries", "timeout", "connect_timeout" }) do
    if o[k] ~= nil and (type(o[k]) ~= "number" or o[k] < 0) then
      error(("llmchat.batch: '%s' must be a number"):format(k), 4)
    end
  end
end

-- the key of a handle's client, for scrubbing errors: never a field of the handle (the
-- caller's object: pairs() on it must not reach the key)
local secrets = setmetatable({}, { __mode = "k" })

local function new_handle(client, secret, obj, o)
  o = o or {}
  local h = setmetatable({
    id = obj.id, client = client, on_progress = o.on_progress, interval = o.interval,
    request_opts = { headers = o.headers, max_retries = o.max_retries, timeout = o.timeout,
      connect_timeout = o.connect_timeout },
    _last_refresh = core.now(),
  }, Batch)
  secrets[h] = secret
  h.on_progress = nil  -- not for the object the handle is made from
  update(h, obj)
  h.on_progress = o.on_progress
  return h
end

-- A JSON request whose answer keeps its own `status` field: client:request's JSON results
-- put the HTTP status in res.status (a batch's "in_progress" would be lost), so the answer
-- is taken raw and decoded here. The decoded object gets http_status and headers.
local function decode_answer(res, err, secret, what, is_batch)
  if not res then return nil, err end
  local obj, derr = json.decode(res.body or "")
  if type(obj) ~= "table" then
    return nil, errors.new({ kind = "protocol", status = res.http_status, headers = res.headers,
      body = res.body, message = what .. ": the answer is not a JSON object ("
        .. tostring(derr or "not an object") .. ")" }, secret)
  end
  if obj.error ~= nil or is_batch and (type(obj.id) ~= "string" or type(obj.status) ~= "string") then
    local e = result.http_error(res.http_status or 200, res.headers or {},
      res.body or "", secret)
    if obj.error == nil then
      e.kind, e.message = "protocol", what .. ": the answer is not a batch object (no id or status)"
    elseif e.kind == "protocol" then
      e.kind = "server"
    end
    return nil, e
  end
  obj.http_status, obj.headers = res.http_status, res.headers
  return obj
end

-- a blocking JSON request (yields inside llmchat.run): the decoded object or nil, err
local function call_json(client, params, secret, is_batch)
  params.raw = true
  local res, err = client:request(params)
  return decode_answer(res, err, secret, params.method .. " " .. params.path, is_batch)
end

-- the options every HTTP request of a batch takes from the caller's
local REQUEST_OPTS = { "headers", "max_retries", "timeout", "connect_timeout" }

local function with_opts(params, o)
  for _, k in ipairs(REQUEST_OPTS) do
    if params[k] == nil then params[k] = o[k] end
  end
  return params
end

local function req(h, params)
  return h.client:request(with_opts(params, h.request_opts))
end

---------------------------------------------------------------------------
-- polling

-- Starts a GET of the batch unless one is in flight; returns that call.
local function start_refresh(h)
  if h._call then return h._call end
  local call
  local path = "/batches/" .. pct(h.id)
  call = h.client:request(with_opts({ method = "GET", path = path, wait = false, raw = true,
    on_done = function(res, err)
      if h._call == call then h._call = nil end
      h._last_refresh = core.now()
      res, err = decode_answer(res, err, secrets[h], "GET " .. path, true)
      call.res, call.err = res, err
      if res then
        h.last_error = nil
        update(h, res)
      else
        h.last_error = err
      end
    end }, h.request_opts))
  h._call = call
  return call
end

--- Refreshes the handle without blocking: starts a GET of the batch when none is in
-- flight and `interval` has passed since the last one (the first poll always does), and
-- returns the last known status (and the last refresh's error, if it failed). The GET
-- completes, and on_progress fires, from llmchat.poll (or llmchat.run).
function Batch:poll()
  if not self.done and not self._call
    and (not self._polled or core.now() - self._last_refresh >= interval_of(self)) then
    self._polled = true
    start_refresh(self)
  end
  return self.status, self.last_error
end

--- Refreshes the handle now: blocks (yields inside llmchat.run). Returns the status, or
-- nil and the error.
function Batch:refresh()
  local call = start_refresh(self)
  loop.wait(call)
  if call.err then return nil, call.err end
  return self.status
end

--- Waits until the batch is completed, expired, cancelled or failed: blocks, or yields in
-- a coroutine of llmchat.run. opts: timeout (seconds; default none), interval (seconds
-- between polls; default the handle's), on_progress(status, request_counts, handle).
-- Returns the final status, or nil and an error (kind "timeout" when the timeout passed
-- first; a refresh that failed for good, e.g. auth or not_found). Network errors, timeouts,
-- 5xx and 429 of single refreshes do not end the wait: it polls again.
function Batch:wait(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("llmchat.batch: wait expects a table of options", 2) end
  local timeout, interval = opts.timeout, opts.interval
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("llmchat.batch: 'timeout' must be a number of seconds", 2)
  end
  if interval ~= nil and (type(interval) ~= "number" or interval < 0) then
    error("llmchat.batch: 'interval' must be a number of seconds", 2)
  end
  if opts.on_progress ~= nil and type(opts.on_progress) ~= "function" then
    error("llmchat.batch: 'on_progress' must be a function", 2)
  end
  local deadline = timeout and core.now() + timeout
  -- no pcall around the loop: Lua 5.1 cannot yield across one; a wait that raised leaves
  -- its callback behind until the next wait replaces it
  self._wait_progress = opts.on_progress
  local status, err
  while true do
    local st, rerr = self:refresh()
    if st and self.done then status = st; break end
    if not st and PERMANENT[rerr.kind] then err = rerr; break end
    local pause = interval or interval_of(self)
    if deadline then
      local left = deadline - core.now()
      if left <= 0 then
        err = errors.new({ kind = "timeout", timeout = "wait", batch_status = self.status,
          message = ("batch %s is still %s after %g s"):format(self.id, tostring(self.status), timeout),
          last_error = rerr }, secrets[self])
        break
      end
      if pause > left then pause = left end
    end
    loop.sleep(pause)
  end
  self._wait_progress = nil
  return status, err
end

--- Cancels the batch (POST /batches/ID/cancel): blocks, or yields in a coroutine. Returns
-- the new status ("cancelling", later "cancelled"), or nil and an error. A batch that is
-- already completed, expired, cancelled or failed cannot be cancelled.
function Batch:cancel()
  if self.done then
    return nil, errors.new({ kind = "bad_request", batch_status = self.status,
      message = ("batch %s is already %s: nothing to cancel"):format(self.id, self.status) }, secrets[self])
  end
  local res, err = call_json(self.client, with_opts({ method = "POST",
    path = "/batches/" .. pct(self.id) .. "/cancel", body = {} }, self.request_opts), secrets[self], true)
  if not res then return nil, err end
  update(self, res)
  return self.status
end

---------------------------------------------------------------------------
-- results

-- Downloads a file's content to a temporary path; returns the path (nil for no file) or
-- nil, err.
local function download(h, file_id)
  if type(file_id) ~= "string" then return false end
  local path = M.tmpname()
  local res, err = req(h, { method = "GET", path = "/files/" .. pct(file_id) .. "/content",
    raw = true, download = path, max_response_size = 2 ^ 50 })
  if not res then
    os.remove(path)
    return nil, err
  end
  return path
end

-- The custom_id <-> position order of this batch.
local function order_of(h)
  if h._order then return h._order end
  local meta = type(h.metadata) == "table" and h.metadata[M.ORDER_KEY]
  if type(meta) == "string" then
    local token, count = meta:match("^seq:([%w]+):(%d+)$")
    if token then
      h._order = output.seq_order(token, tonumber(count))
      return h._order
    end
  end
  -- the caller's own custom_ids, or a batch not made by llmchat: the input file says
  if type(h.input_file_id) ~= "string" then
    return nil, errors.new({ kind = "protocol", message = "batch " .. h.id
      .. ": no input_file_id, so the input order cannot be recovered" }, secrets[h])
  end
  local path, err = download(h, h.input_file_id)
  if not path then
    return nil, errors.new({ kind = err.kind, status = err.status, cause = err,
      message = "cannot read the batch's input file " .. h.input_file_id
        .. " to recover the input order: " .. tostring(err.message) }, secrets[h])
  end
  h._order = output.file_order(path)
  os.remove(path)
  return h._order
end

-- Everything results() and each() need: refreshed status, order, downloaded files.
local function prepare(h)
  if not h.done then
    local st, err = h:refresh()
    if not st then return nil, err end
  end
  if not h.done then
    return nil, errors.new({ kind = "not_ready", batch_status = h.status,
      message = ("batch %s is %s: its results come once it is completed, expired, cancelled or failed"):format(
        h.id, tostring(h.status)) }, secrets[h])
  end
  if h.status == "failed" and type(h.output_file_id) ~= "string" and type(h.error_file_id) ~= "string" then
    local list = type(h.errors) == "table" and h.errors.data or {}
    local first = list[1]
    local msg = "batch " .. h.id .. " failed"
    if type(first) == "table" then
      msg = msg .. ": " .. tostring(first.message or first.code)
        .. (type(first.line) == "number" and (" (line " .. first.line .. ")") or "")
      if #list > 1 then msg = msg .. (" and %d more error(s)"):format(#list - 1) end
    end
    return nil, errors.new({ kind = "batch_failed", message = msg, errors = list,
      batch_status = "failed" }, secrets[h])
  end
  local order, oerr = order_of(h)
  if not order then return nil, oerr end
  local out, err = download(h, h.output_file_id)
  if out == nil then return nil, err end
  local errf
  errf, err = download(h, h.error_file_id)
  if errf == nil then
    if out then os.remove(out) end
    return nil, err
  end
  return { order = order, ep = input.ENDPOINTS[h.endpoint], secret = secrets[h],
    status = h.status, files = { out or nil, errf or nil } }
end

local function cleanup(o)
  for i = 1, 2 do
    if o.files[i] then os.remove(o.files[i]) end
  end
end

--- Every request's result in input order, each the single call's result (a chat result as
-- client:chat returns it, a Responses result, embeddings) or an error: an error object of
-- the HTTP status's kind for a failed line, kind "expired" / "cancelled" for a request the
-- batch never ran because it expired or was cancelled. Refreshes first when not done.
-- Returns nil, err when the batch is not finished (kind not_ready), failed validation
-- (kind batch_failed, err.errors the provider's list) or a download failed.
-- h.unmatched lists the custom_ids of output lines that matched no request.
function Batch:results()
  local o, err = prepare(self)
  if not o then return nil, err end
  local ok, out, extra = pcall(output.read_all, o)
  cleanup(o)
  if not ok then error(out, 0) end
  self.unmatched = extra
  return out
end

--- Iterates the results in input order without holding them all:
--   for i, res_or_err in assert(h:each()) do ... end
-- The files are downloaded to temporary files first and indexed (positions only); each
-- step reads one line. The files are removed when the loop ends; after a `break`, call
-- it:close() (Lua 5.4 closes it by itself). Returns nil, err as results() does.
function Batch:each()
  local o, err = prepare(self)
  if not o then return nil, err end
  o.on_close = function() cleanup(o) end
  local ok, it = pcall(output.iterate, o)
  if not ok then
    cleanup(o)
    error(it, 0)
  end
  self.unmatched = it.extra
  setmetatable(it, {
    __call = function() return it.next() end,
    __close = function() it.close() end,
    __gc = function() it.close() end,
  })
  return it, nil, nil, it
end

---------------------------------------------------------------------------
-- creating, resuming, listing

--- client:batch{...}: builds the JSONL, uploads it, creates the batch; returns a handle or
-- nil, err. Blocks (yields inside llmchat.run) for the upload and the creation.
function M.create(client, opts, secret)
  if type(opts) ~= "table" then error("llmchat.batch: expected a table of options", 3) end
  local requests = opts.requests
  if type(requests) ~= "table" and type(requests) ~= "string" then
    error("llmchat.batch: 'requests' must be an array of requests or the path of a JSONL file", 3)
  end
  local endpoint = input.endpoint_path(opts.endpoint, 3)
  local window = opts.completion_window or "24h"
  if type(window) ~= "string" then error("llmchat.batch: 'completion_window' must be a string", 3) end
  local metadata = opts.metadata
  if metadata ~= nil and type(metadata) ~= "table" then
    error("llmchat.batch: 'metadata' must be a table of strings", 3)
  end
  local limits = {}
  for k, v in pairs(input.LIMITS) do limits[k] = v end
  if opts.limits ~= nil then
    if type(opts.limits) ~= "table" then error("llmchat.batch: 'limits' must be a table", 3) end
    for k, v in pairs(opts.limits) do
      if input.LIMITS[k] == nil then error("llmchat.batch: unknown limit '" .. tostring(k) .. "'", 3) end
      if type(v) ~= "number" or v < 0 then error("llmchat.batch: limit '" .. k .. "' must be a number", 3) end
      limits[k] = v
    end
  end
  -- a handle needs these; checked before anything is sent
  check_handle_opts(opts)

  local token = input.token()
  local path = M.tmpname()
  local w, err = input.build(requests, { path = path, endpoint = endpoint, client = client,
    limits = limits, token = token })
  if not w then return nil, err end

  local filename = type(requests) == "string" and requests:match("([^/]+)$") or ("batch-" .. token .. ".jsonl")
  local file
  file, err = client:request(with_opts({ method = "POST", path = "/files",
    multipart = { { name = "purpose", data = "batch" },
      { name = "file", file = path, filename = filename, type = "application/jsonl" } } }, opts))
  os.remove(path)
  if not file then return nil, err end
  if type(file.id) ~= "string" then
    return nil, errors.new({ kind = "protocol", message = "batch: the upload's answer has no file id" }, secret)
  end

  local meta = {}
  local nkeys = 0
  for k, v in pairs(metadata or {}) do meta[k] = v; nkeys = nkeys + 1 end
  local all_generated = w.generated == w.n
  if meta[M.ORDER_KEY] == nil and nkeys < 16 then
    meta[M.ORDER_KEY] = all_generated and ("seq:%s:%d"):format(token, w.n) or ("input:%d"):format(w.n)
  end
  local obj
  obj, err = call_json(client, with_opts({ method = "POST", path = "/batches",
    body = { input_file_id = file.id, endpoint = endpoint, completion_window = window, metadata = meta } },
    opts), secret, true)
  if not obj then
    -- the upload is of no use without its batch (best effort)
    client:request{ method = "DELETE", path = "/files/" .. pct(file.id), headers = opts.headers,
      max_retries = 0 }
    return nil, err
  end
  if type(obj.id) ~= "string" then
    return nil, errors.new({ kind = "protocol", message = "batch: the answer to POST /batches has no id" }, secret)
  end
  local h = new_handle(client, secret, obj, opts)
  h.endpoint = h.endpoint or endpoint
  h.file = file
  -- this process knows the order without reading anything back
  h._order = all_generated and output.seq_order(token, w.n)
    or output.map_order(w.seen, w.ids, token, w.n)
  return h
end

--- client:batch_resume(id, opts): a handle on an existing batch (GET /batches/ID).
function M.resume(client, id, opts, secret)
  check_id(id, "the batch id", 3)
  if opts ~= nil and type(opts) ~= "table" then error("llmchat.batch: expected a table of options", 3) end
  opts = opts or {}
  check_handle_opts(opts)
  local obj, err = call_json(client, with_opts({ method = "GET", path = "/batches/" .. pct(id) }, opts),
    secret, true)
  if not obj then return nil, err end
  return new_handle(client, secret, obj, opts)
end

--- client:batches{ limit =, after = }: one page of the batches, newest first:
-- { data = { handle, ... }, has_more, first_id, last_id } or nil, err.
function M.list(client, opts, secret)
  opts = opts or {}
  if type(opts) ~= "table" then error("llmchat.batches: expected a table of options", 3) end
  check_handle_opts(opts)
  local q = {}
  if opts.limit ~= nil then
    if type(opts.limit) ~= "number" or opts.limit < 1 then error("llmchat.batches: 'limit' must be a number >= 1", 3) end
    q[#q + 1] = ("limit=%d"):format(math.floor(opts.limit))
  end
  if opts.after ~= nil then
    check_id(opts.after, "'after'", 3)
    q[#q + 1] = "after=" .. pct(opts.after)
  end
  local res, err = call_json(client, with_opts({ method = "GET",
    path = "/batches" .. (#q > 0 and ("?" .. table.concat(q, "&")) or "") }, opts), secret)
  if not res then return nil, err end
  local data = {}
  for _, obj in ipairs(type(res.data) == "table" and res.data or {}) do
    if type(obj) == "table" and type(obj.id) == "string" then
      data[#data + 1] = new_handle(client, secret, obj, opts)
    else
      data[#data + 1] = obj
    end
  end
  res.data = data
  return res
end

return M
