--- llmchat.client: presets, requests, retries, blocking / streaming /
-- non-blocking calls. Policy lives here; bytes live in the C core.
local core = require("llmchat.core")
local secret_of = require("llmchat.call").secret_of
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local providers = require("llmchat.providers")
local loop = require("llmchat.loop")
local logmod = require("llmchat.log")
local callmod = require("llmchat.call")
local endpoints = require("llmchat.endpoints")
local schema = require("llmchat.schema")

local M = {}

local VERSION = core.version
local USER_AGENT = "llmchat/" .. VERSION .. " (Lua; libcurl " .. core.curl_version .. ")"

-- API keys are kept out of the client table (printing a client never shows one), and so
-- are the header lists built from them
local secrets = setmetatable({}, { __mode = "k" })
local header_lists = setmetatable({}, { __mode = "k" })

-- Request fields that belong to llmchat and are never sent in the body.
local OWN = endpoints.OWN
M.OWN = OWN

local CLIENT_OPTS = {
  provider = "string", base_url = "string", api_key = "string", model = "string",
  headers = "table", timeout = "number", connect_timeout = "number", idle_timeout = "number",
  max_retries = "number", proxy = "string", ca_file = "string", verify = "boolean",
  log = "function", max_response_size = "number", retry_base_delay = "number",
  retry_max_delay = "number", max_retry_after = "number", referer = "string",
  http_referer = "string", title = "string", x_title = "string", stream_usage = "boolean",
  max_line = "number", accept_encoding = "boolean",
}

-- the closest known name to a misspelled one (edit distance), for the error message
local function closest(name, known)
  local best, bestd
  for k in pairs(known) do
    local a, b = name, k
    local prev = {}
    for j = 0, #b do prev[j] = j end
    for i = 1, #a do
      local cur = { [0] = i }
      for j = 1, #b do
        local cost = a:byte(i) == b:byte(j) and 0 or 1
        cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      end
      prev = cur
    end
    local d = prev[#b]
    if not bestd or d < bestd or (d == bestd and k < best) then best, bestd = k, d end
  end
  return best, bestd
end
M.closest = closest

local function check_header(name, value, where)
  if type(name) ~= "string" or name == "" or name:find("[%c:]") and not name:find("^[%w%-_]+$") then
    error(("%s: invalid header name %q"):format(where, tostring(name)), 4)
  end
  if not name:find("^[%w!#$%%&'*+%-.^_`|~]+$") then
    error(("%s: invalid header name %q"):format(where, name), 4)
  end
  value = tostring(value)
  if value:find("[\r\n%z]") then
    error(("%s: header %s contains CR, LF or NUL (header injection refused)"):format(where, name), 4)
  end
  return name .. ": " .. value
end

local function header_list(tbl, where)
  local names = {}
  for k in pairs(tbl) do
    if type(k) ~= "string" then error(where .. ": header names must be strings", 3) end
    names[#names + 1] = k
  end
  table.sort(names)
  local out = {}
  for _, k in ipairs(names) do out[#out + 1] = check_header(k, tbl[k], where) end
  return out
end

local Client = {}
Client.__index = Client
Client.__name = "llmchat.client"
function Client.__tostring(c)
  return ("llmchat.client (%s, %s)"):format(c.provider or "custom", c.base_url)
end

--- llmchat.client{...}
function M.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error(("llmchat.client: bad argument #1 'opts' (a table of options expected, got %s)"):format(type(opts)), 2)
  end
  for k, v in pairs(opts) do
    local want = CLIENT_OPTS[k]
    if not want then
      if type(k) ~= "string" then error("llmchat.client: option names must be strings", 2) end
      local near = closest(k, CLIENT_OPTS)
      error(("llmchat.client: unknown option '%s' (did you mean '%s'?)"):format(k, near), 2)
    end
    if type(v) ~= want then
      error(("llmchat.client: option '%s' must be a %s, got %s"):format(k, want, type(v)), 2)
    end
  end
  local preset = providers.get(opts.provider)
  local base_url = opts.base_url or preset.base_url
  if not base_url then
    error("llmchat.client: give a provider or a base_url", 2)
  end
  base_url = base_url:gsub("/+$", "")
  if not (base_url:find("^https?://[^/]")) then
    error("llmchat.client: base_url must be an http:// or https:// URL, got " .. base_url, 2)
  end
  if base_url:find("[%s%c]") then error("llmchat.client: base_url contains spaces or control characters", 2) end

  local key = opts.api_key
  if key == nil and preset.env then key = os.getenv(preset.env) end
  if key == "" then key = nil end
  if key and key:find("[\r\n%z]") then error("llmchat.client: api_key contains CR, LF or NUL", 2) end
  if not key and preset.needs_key ~= false and opts.provider then
    error(("llmchat.client: provider '%s' needs an API key: pass api_key or set %s"):format(
      opts.provider, preset.env), 2)
  end

  local self = setmetatable({
    provider = opts.provider, base_url = base_url, model = opts.model,
    timeout = opts.timeout or 600, connect_timeout = opts.connect_timeout or 10,
    idle_timeout = opts.idle_timeout or 60,
    max_retries = opts.max_retries or 2, proxy = opts.proxy, ca_file = opts.ca_file,
    verify = opts.verify ~= false,
    max_response_size = opts.max_response_size or 64 * 1024 * 1024,
    max_line = opts.max_line,
    retry_base_delay = opts.retry_base_delay or 0.5,
    retry_max_delay = opts.retry_max_delay or 8,
    max_retry_after = opts.max_retry_after or 60,
    accept_encoding = opts.accept_encoding,
    _preset = preset,
  }, Client)
  if opts.stream_usage ~= nil then self.stream_usage = opts.stream_usage
  else self.stream_usage = preset.stream_usage or false end
  if self.max_retries < 0 then error("llmchat.client: max_retries must be >= 0", 2) end
  secrets[self] = key
  self._log = logmod.for_client(opts.log, key)

  local hdrs = {
    "Content-Type: application/json",
    "User-Agent: " .. USER_AGENT,
    "Expect:",  -- no 100-continue round trip for large bodies
  }
  if key then
    if preset.auth == "x-api-key" then hdrs[#hdrs + 1] = "x-api-key: " .. key
    elseif preset.auth ~= "none" then hdrs[#hdrs + 1] = "Authorization: Bearer " .. key end
  end
  if preset.option_headers then
    for opt, name in pairs(preset.option_headers) do
      if opts[opt] then hdrs[#hdrs + 1] = check_header(name, opts[opt], "llmchat.client") end
    end
  end
  if opts.headers then
    for _, h in ipairs(header_list(opts.headers, "llmchat.client")) do hdrs[#hdrs + 1] = h end
  end
  local function with_accept(accept)
    local l = {}
    for i, h in ipairs(hdrs) do l[i] = h end
    l[#l + 1] = accept
    return l
  end
  -- the header lists carry the key (Authorization / x-api-key): kept out of the client
  -- table, beside the key itself
  local lists = { json = with_accept("Accept: application/json"),
    sse = with_accept("Accept: text/event-stream") }
  header_lists[self] = lists
  -- multipart uploads: libcurl writes the Content-Type with the boundary
  local mp = {}
  for _, h in ipairs(lists.json) do
    if not h:find("^Content%-Type:") then mp[#mp + 1] = h end
  end
  lists.multipart = mp
  return self
end


---------------------------------------------------------------------------
-- calls: every public method below goes through Client:_call and llmchat.call

local event_mt = {
  __index = function(ev, k)
    if k == "chunk" then
      local c = json.decode(rawget(ev, "raw") or "")
      rawset(ev, "chunk", c)
      return c
    end
  end,
}
M.event_mt = event_mt

local CALLBACKS = { "on_delta", "on_event", "on_done" }

local function check_params(params, level)
  if type(params) ~= "table" then
    error(("llmchat: bad argument #1 'params' (a table of request fields expected, got %s)"):format(type(params)), level + 1)
  end
  if params.messages ~= nil and type(params.messages) ~= "table" then
    error("llmchat: 'messages' must be a table (an array of messages)", level + 1)
  end
  for i = 1, 3 do
    local k = CALLBACKS[i]
    if params[k] ~= nil and type(params[k]) ~= "function" then
      error(("llmchat: '%s' must be a function"):format(k), level + 1)
    end
  end
  if params.headers ~= nil and type(params.headers) ~= "table" then
    error("llmchat: 'headers' must be a table", level + 1)
  end
end

local APIS = { chat = endpoints.chat, responses = endpoints.responses }

-- The endpoint a call to start/stream/map goes to: params.api ("chat" or "responses").
local function api_of(params, level)
  local api = params.api
  if api == nil then return endpoints.chat end
  local ep = APIS[api]
  if not ep then error(("llmchat: unknown api '%s' (chat or responses)"):format(tostring(api)), level + 1) end
  return ep
end

--- The one way a call starts. ep: the endpoint; params: the caller's fields; o:
--   stream     ask for SSE
--   on_delta, on_event, batch   the C dispatch's handlers (see core r:handlers)
--   body       the body table (default: ep.body(self, params, stream))
--   multipart  parts for an upload (no JSON body)
--   path       the path under base_url (default ep.path)
function Client:_call(ep, params, o)
  o = o or {}
  local stream = o.stream
  local spec_body, text, failure
  local method = ep.method or "POST"
  if o.multipart == nil and method ~= "GET" and method ~= "DELETE" then
    spec_body = o.body or (ep.body and ep.body(self, params, stream)) or {}
  end
  local url = self.base_url .. (o.path or ep.path(self, spec_body or {}))
  if spec_body ~= nil then
    local eerr
    text, eerr = json.encode(spec_body)
    if not text then
      failure = errors.new({ kind = "bad_request", message = "request body: " .. tostring(eerr) })
    end
  end
  -- the client's own list with the Accept line, built once (core.request copies it);
  -- a copy only when the call adds headers of its own
  local lists = header_lists[self]
  local hdrs = o.multipart and lists.multipart or stream and lists.sse or lists.json
  if params.headers then
    local own = hdrs
    hdrs = {}
    for i, h in ipairs(own) do hdrs[i] = h end
    for _, h in ipairs(header_list(params.headers, "llmchat")) do hdrs[#hdrs + 1] = h end
  end
  local after = o.after
  if not after and (params.schema ~= nil or params.response_format ~= nil or params.text ~= nil) then
    after = function(res, call) return schema.decode(res, params, secret_of(call)) end
  end
  -- built whole (a field added later would grow, and rehash, a table of ~30): the fields
  -- llmchat.call adds are here too
  local spec = {
    secret = secrets[self], on_attempt = false,
    endpoint = ep, url = url, method = method, body = text, multipart = o.multipart,
    headers = hdrs, stream = stream, consumer = ep.consumer,
    timeout = params.timeout or self.timeout,
    connect_timeout = params.connect_timeout or self.connect_timeout,
    idle_timeout = params.idle_timeout or self.idle_timeout,
    proxy = self.proxy, ca_file = self.ca_file, verify = self.verify,
    max_response_size = params.max_response_size or self.max_response_size,
    max_line = self.max_line, accept_encoding = self.accept_encoding,
    max_retries = params.max_retries, on_done = params.on_done, after = after,
    download = o.download,
    batch = o.rate_limiter, failure = failure,
    on_delta = o.on_delta, on_event = o.on_event, batch_events = o.batch, event_mt = event_mt,
  }
  if ep.assembler and stream then
    -- an events stream assembled in Lua: every raw event goes through the assembler, and
    -- the public events it makes go to the caller's handlers
    local on_delta, on_event, sink = o.on_delta, o.on_event, o.sink
    local state
    spec.on_attempt = function(call)
      state = ep.assembler(call)
      call.state = state
    end
    spec.on_delta, spec.batch_events = nil, nil
    spec.on_event = function(raw)
      local ev = state:feed(raw)
      if not ev then return end
      setmetatable(ev, nil)
      local r1, r2, r3
      if on_delta and ev.kind == "content" then r1 = on_delta(ev.delta, ev) end
      if on_event then r2 = on_event(ev) end
      if sink then r3 = sink(ev) end
      if r1 == false or r2 == false or r3 == false then return false end
    end
  end
  return callmod.start(self, spec, secrets[self], self._log)
end

local function wants_stream(params)
  return params.stream == true or params.on_delta ~= nil or params.on_event ~= nil
end

--- Starts a request and returns at once (nothing blocks). Callbacks fire from
-- llmchat.poll (or a blocking wait on this call). params.api = "responses" for the
-- Responses API.
-- map's rate limiter for the params it starts (no private field in the caller's table)
local limiters = setmetatable({}, { __mode = "k" })

function Client:start(params)
  check_params(params, 2)
  local ep = api_of(params, 2)
  local stream = wants_stream(params)
  return self:_call(ep, params, { stream = stream, on_delta = params.on_delta,
    on_event = params.on_event, rate_limiter = limiters[params] })
end

--- Blocking chat (yields inside llmchat.run coroutines).
function Client:chat(params)
  check_params(params, 2)
  local ep = api_of(params, 2)
  local call = self:_call(ep, params, { stream = wants_stream(params),
    on_delta = params.on_delta, on_event = params.on_event })
  loop.wait(call)
  return call.res, call.err
end

--- The Responses API (blocking; yields inside llmchat.run coroutines):
-- client:respond{ input =, instructions =, tools =, previous_response_id =, stream =,
-- on_delta =, on_event = }.
function Client:respond(params)
  check_params(params, 2)
  local call = self:_call(endpoints.responses, params, { stream = wants_stream(params),
    on_delta = params.on_delta, on_event = params.on_event })
  loop.wait(call)
  return call.res, call.err
end

--- Embeddings: client:embed{ input = "..." | {...}, dimensions =, encoding_format = }
-- -> { vectors = { {numbers}, ... } in input order, vector = vectors[1], usage, model, data }
function Client:embed(params)
  if type(params) == "string" then params = { input = params } end
  check_params(params, 2)
  if params.input == nil then error("llmchat: embed needs 'input' (a string or an array)", 2) end
  local call = self:_call(endpoints.embeddings, params, {})
  loop.wait(call)
  return call.res, call.err
end

--- GET /models: { data = { { id = ... }, ... }, status, headers }, retried like every call.
function Client:models(params)
  params = params or {}
  check_params(params, 2)
  local call = self:_call(endpoints.models, params, {})
  loop.wait(call)
  return call.res, call.err
end

--- Any JSON endpoint under base_url, through the same call path (retries, timeouts,
-- errors, coroutines): client:request{ method = "GET", path = "/batches/x", body = {...}
-- | multipart = {...}, raw = true (res.body undecoded), download = path (a 2xx body is
-- written to that file as it arrives; use with raw), headers =, timeout =,
-- max_response_size =, wait = false (return the call, not its result) }
function Client:request(params)
  check_params(params, 2)
  local method = params.method or "GET"
  if type(method) ~= "string" or not method:find("^%u+$") then error("llmchat: 'method' must be an HTTP method", 2) end
  local path = params.path
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" or path:find("[%s%c]") then
    error("llmchat: 'path' must be a path starting with /", 2)
  end
  local ep = params.raw and endpoints.raw(method, path) or endpoints.json(method, path)
  if params.download ~= nil and type(params.download) ~= "string" then
    error("llmchat: 'download' must be a file path", 2)
  end
  local call = self:_call(ep, params, { body = params.body, multipart = params.multipart,
    path = path, stream = false, download = params.download })
  if params.wait == false then return call end
  loop.wait(call)
  return call.res, call.err
end

--- for ev in client:stream{...} do ... end
-- Yields every event (ev.kind content | reasoning | refusal | tool_call, and for the
-- Responses API its other typed events as kind "event") and, last, an event
-- { kind = "done", result = res } or { kind = "error", error = err }.
-- On a Lua without to-be-closed variables, call it:close() after a break (or let it be
-- collected): the request is cancelled either way.
-- an iterator holds (stops taking) its request's events beyond this many undelivered
local ITER_QUEUE_MAX = 256

function Client:stream(params)
  check_params(params, 2)
  local ep = api_of(params, 2)
  local head, tail, queue = 1, 0, {}
  local call
  local held = false
  local user_delta, user_event = params.on_delta, params.on_event
  -- a full queue (a loop that stopped taking, or left with break) holds the request: its
  -- records wait in C and flow control pauses the transfer, so memory stays bounded
  local function added()
    if call then loop.notify(call) end
    if not held and tail - head + 1 >= ITER_QUEUE_MAX and call and call.req then
      held = true
      call.req:hold(true)
    end
  end
  local o = { stream = true }
  if ep.assembler then
    o.on_delta, o.on_event = user_delta, user_event
    o.sink = function(ev)
      tail = tail + 1
      queue[tail] = ev
      added()
    end
  elseif user_delta or user_event then
    -- the caller's callbacks see every event as it is dispatched, one call each
    o.on_delta = user_delta
    o.on_event = function(ev)
      tail = tail + 1
      queue[tail] = ev
      added()
      if user_event then return user_event(ev) end
    end
  else
    -- one call per dispatch with every event of it (ev.delta set in C): the queue
    -- becomes that array, or grows by it when the last one is not drained yet
    o.batch = true
    o.on_delta = function(events, n)
      if head > tail then
        queue, head, tail = events, 1, n
      else
        for i = 1, n do tail = tail + 1; queue[tail] = events[i] end
      end
      added()
    end
  end
  call = self:_call(ep, params, o)
  local ended = false
  local it = { call = call }
  --- Cancels the request (if still going) and drops what is queued. The portable way to
  -- leave the loop early on a Lua without to-be-closed variables.
  function it.close()
    if not call.done then call:cancel() end
    head, tail, queue = 1, 0, {}
  end
  local function step()
    while true do
      if head <= tail then
        local ev = queue[head]
        queue[head] = nil
        if head == tail then
          head, tail = 1, 0  -- drained: start again at 1, so the queue stays an array
        else
          head = head + 1
        end
        return ev
      end
      if held then
        held = false
        if call.req and not call.done then call.req:hold(false) end
      end
      if call.done then
        if ended then return nil end
        ended = true
        if call.err then return { kind = "error", error = call.err, partial = call.err.partial } end
        return { kind = "done", result = call.res }
      end
      -- called by a generic for: on Lua 5.1 no yield may cross it (loop.wait_in_iterator
      -- keeps the other coroutines going instead)
      loop.wait_in_iterator(call, function() return call.done or head <= tail end)
    end
  end
  it.next = step
  -- collected without close (5.1 - 5.3 have no to-be-closed variables; a break leaves the
  -- iterator to the collector): the request is cancelled
  it.guard = loop.on_collect(function() if not call.done then loop.abandon(call) end end)
  setmetatable(it, {
    __call = function() return step() end,
    __close = function() it.close() end,
  })
  return it, nil, nil, it
end

--- Runs many calls with at most `concurrency` in flight; results in input order, each a
-- result or an error (never lost). A 429 with a retry-after slows the whole batch down.
-- opts.api = "responses" sends every item to the Responses API (an item's own api wins).
function Client:map(list, opts)
  if type(list) ~= "table" then
    error(("llmchat: map: bad argument #1 'list' (an array of requests expected, got %s)"):format(type(list)), 2)
  end
  opts = opts or {}
  local conc = opts.concurrency or 8
  if type(conc) ~= "number" or conc < 1 then error("llmchat: map: 'concurrency' must be a number >= 1", 2) end
  if opts.on_result ~= nil and type(opts.on_result) ~= "function" then
    error("llmchat: map: 'on_result' must be a function", 2)
  end
  local n = #list
  local results, left, nexti, inflight = {}, n, 1, 0
  local pause_until = 0
  local call_cap = self.max_retry_after  -- a batch never pauses longer than a retry would wait
  local limiter = {}
  function limiter.slow_down(secs)
    local d = math.min(secs or 1, call_cap)
    local t = core.now() + d
    if t > pause_until then pause_until = t end
  end
  local calls = {}
  -- what a coroutine running map waits on: the scheduler wakes it when a call finishes
  local finished = 0
  local waiter = { done = false }
  function waiter.cancel()
    for _, c in pairs(calls) do c:cancel() end
  end
  local function launch(i)
    local p = {}
    for k, v in pairs(list[i]) do p[k] = v end
    if p.api == nil then p.api = opts.api end
    local user_done = p.on_done
    p.on_done = function(res, err)
      results[i] = res or err
      calls[i] = nil
      inflight = inflight - 1
      left = left - 1
      if user_done then user_done(res, err) end
      if opts.on_result then opts.on_result(i, res, err) end
      finished = finished + 1
      loop.notify(waiter)
    end
    inflight = inflight + 1
    limiters[p] = limiter
    local ok, call = pcall(self.start, self, p)
    if not ok then
      inflight = inflight - 1
      left = left - 1
      results[i] = errors.new({ kind = "bad_request", message = "map: item " .. i .. ": " .. tostring(call) })
    else
      calls[i] = call
    end
  end
  local function fill()
    while inflight < conc and nexti <= n and core.now() >= pause_until do
      local i = nexti
      nexti = nexti + 1
      if type(list[i]) ~= "table" then
        results[i] = errors.new({ kind = "bad_request", message = "map: item " .. i .. " is not a table" })
        left = left - 1
      else
        launch(i)
      end
    end
  end
  local task = loop.current_task()
  local ok, err = loop.pcall(function()
    while left > 0 do
      fill()
      if left == 0 then break end
      if task then
        if inflight == 0 then
          loop.sleep(math.max(0, pause_until - core.now()))
        else
          local seen = finished
          loop.wait(waiter, function() return finished ~= seen end)
        end
      else
        local wait = 0.05
        if inflight == 0 then wait = math.max(0.001, math.min(1, pause_until - core.now())) end
        loop.poll(wait)
      end
    end
  end)
  if not ok then
    -- an error (a callback's, or the coroutine being closed): cancel what map started
    for _, c in pairs(calls) do c:cancel() end
    error(err, 0)
  end
  return results
end

--- The provider's Batch API (llmchat.batch, docs/batch.md): a handle on a new batch,
-- on an existing one by id, or a page of them.
function Client:batch(opts) return require("llmchat.batch").create(self, opts, secrets[self]) end
function Client:batch_resume(id, opts) return require("llmchat.batch").resume(self, id, opts, secrets[self]) end
function Client:batches(opts) return require("llmchat.batch").list(self, opts, secrets[self]) end

M.Client = Client
return M
