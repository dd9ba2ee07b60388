--- llmchat.client: presets, requests, retries, blocking / streaming /
-- non-blocking calls. Policy lives here; bytes live in the C core.
local core = require("llmchat.core")
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local providers = require("llmchat.providers")
local result = require("llmchat.result")
local loop = require("llmchat.loop")
local logmod = require("llmchat.log")

local M = {}

local VERSION = core.version
local USER_AGENT = "llmchat/" .. VERSION .. " (Lua; libcurl " .. core.curl_version .. ")"

-- API keys are kept out of the client table (printing a client never shows one)
local secrets = setmetatable({}, { __mode = "k" })

-- Request fields that belong to llmchat and are never sent in the body.
local OWN = {
  on_delta = true, on_done = true, headers = true, timeout = true, connect_timeout = true,
  idle_timeout = true, max_retries = true, schema = true, schema_name = true,
  max_response_size = true, retry_base_delay = true, retry_max_delay = true,
  max_retry_after = true, decode_chunks = true, extra_body = true, _batch = true,
  _on_retry = true,
}
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
  if type(opts) ~= "table" then error("llmchat.client: expected a table of options", 2) end
  for k, v in pairs(opts) do
    local want = CLIENT_OPTS[k]
    if want and type(v) ~= want then
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
  self._headers = hdrs
  local function with_accept(accept)
    local l = {}
    for i, h in ipairs(hdrs) do l[i] = h end
    l[#l + 1] = accept
    return l
  end
  self._headers_json = with_accept("Accept: application/json")
  self._headers_sse = with_accept("Accept: text/event-stream")
  return self
end

---------------------------------------------------------------------------
-- calls

local Call = {}
Call.__index = Call
Call.__name = "llmchat.call"
M.Call = Call

local function partial_of(call)
  local req = call.req
  if not req or req:state() == "closed" then return nil end
  if req:stream_state() then
    return result.from_assembled(req:result())
  end
  return nil
end

local function finish(call, res, err)
  if call.done then return end
  call.done = true
  call.res, call.err = res, err
  loop.call_finished()
  local log = call.client._log
  if log then
    if err then log(("%s %s failed: %s"):format(call.method, call.url, tostring(err)))
    else log(("%s %s done: %s"):format(call.method, call.url, tostring(res.finish_reason))) end
  end
  -- the C request (its buffers, its easy handle back to the pool) is done with
  if call.req then call.req:close() end
  if call.waiter then loop.wake(call.waiter) end
  if call.on_done then call.on_done(res, err) end
end

local function kind_for_curl(code)
  -- CURLE_OPERATION_TIMEDOUT
  if code == 28 then return "timeout" end
  -- CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT
  if code == 1 or code == 3 then return "bad_request" end
  return "network"
end

-- The error of an attempt that did not end in a 2xx response (cancelled,
-- timed out, cut off, refused, an HTTP error status); else nil, status, headers.
-- Shared by every endpoint.
local function transfer_error(call)
  local req = call.req
  local secret = secrets[call.client]
  local reason, code, msg = req:outcome()
  if reason == "cancelled" then
    return errors.new({ kind = "cancelled", message = "cancelled by the caller",
      partial = partial_of(call) }, secret)
  end
  local status = req:status()
  local headers = req:headers()
  if reason == "idle" then
    return errors.new({ kind = "timeout", timeout = "idle", status = status ~= 0 and status or nil,
      message = ("no data received for %g s (idle_timeout)"):format(call.idle_timeout),
      headers = status ~= 0 and headers or nil, partial = partial_of(call) }, secret)
  end
  if reason ~= "ok" then
    local message
    if reason == "too_large" then
      message = ("response body exceeds max_response_size (%d bytes)"):format(call.max_response_size)
    elseif reason == "headers" then message = "response headers exceed 256 KiB"
    elseif reason == "nomem" then message = "out of memory while receiving the response"
    else message = msg end
    return errors.new({ kind = "protocol", status = status, message = message,
      headers = headers, partial = partial_of(call) }, secret)
  end
  if code ~= 0 then
    local kind = kind_for_curl(code)
    local what
    if kind == "timeout" then
      what = msg:lower():find("connect", 1, true) and not msg:find("bytes received", 1, true)
        and "connect" or "total"
    end
    return errors.new({ kind = kind, status = status ~= 0 and status or nil, message = msg,
      curl_code = code, timeout = what, headers = status ~= 0 and headers or nil,
      partial = partial_of(call) }, secret)
  end
  if status < 200 or status >= 300 then
    return result.http_error(status, headers, req:body(), secret)
  end
  return nil, status, headers
end

-- The outcome of one attempt: res, or nil and err.
local function outcome(call)
  local req = call.req
  local secret = secrets[call.client]
  local err, status, headers = transfer_error(call)
  if err then return nil, err end
  local sse, done_marker, finished, events = req:stream_state()
  local res
  if sse then
    local assembled = req:result()
    local partial = result.from_assembled(assembled)
    local ej = req:error_json()
    if ej then
      local e = json.decode(ej)
      if type(e) ~= "table" then e = { message = ej } end
      local code_ = e.code
      return nil, errors.new({ kind = "stream_error", status = status, message = tostring(e.message or ej),
        code = (type(code_) == "string" or type(code_) == "number") and code_ or nil,
        error = e, headers = headers, partial = partial }, secret)
    end
    if not (done_marker or finished) then
      return nil, errors.new({ kind = "protocol", status = status, headers = headers,
        message = ("stream ended before a finish_reason or [DONE] (%d events)"):format(events),
        partial = partial }, secret)
    end
    res = partial
  else
    local body = req:body()
    local decoded, derr = json.decode(body)
    if type(decoded) ~= "table" then
      local ct = headers["content-type"] or "none"
      local message
      if body:find("^%s*<") then
        local t = result.html_title(body)
        message = ("expected JSON, got an HTML page%s (content-type %s)"):format(
          t and (" (" .. t .. ")") or "", ct)
      elseif body == "" then
        message = "empty response body (content-type " .. ct .. ")"
      else
        message = ("response is not JSON (content-type %s): %s"):format(ct, derr or "not an object")
      end
      return nil, errors.new({ kind = "protocol", status = status, message = message,
        body = body, headers = headers }, secret)
    end
    if decoded.choices == nil and decoded.error ~= nil then
      local e = result.http_error(status, headers, body, secret)
      local ecode = type(decoded.error) == "table" and tonumber(decoded.error.code)
      e.kind = ecode and ecode >= 400 and ecode <= 599 and errors.kind_for_status(ecode) or "server"
      return nil, e
    end
    res = result.from_completion(decoded)
  end
  res.status = status
  res.headers = headers
  return res
end

local function retry_delay(call, err)
  if call.attempt > call.max_retries then return nil end
  local kind = err.kind
  if kind == "cancelled" or kind == "protocol" or kind == "stream_error" then return nil end
  if call.req then
    local sse, _, _, events = call.req:stream_state()
    if sse and events > 0 then return nil end  -- data was already delivered
  end
  local h = err.headers
  local should = h and h["x-should-retry"]
  if should == "false" then return nil end
  if should ~= "true" then
    local st = err.status
    if st == 429 and err.code == "insufficient_quota" then return nil end
    local retryable = kind == "network" or kind == "timeout" or
      st == 408 or st == 409 or st == 429 or (st and st >= 500)
    if not retryable then return nil end
    if kind == "bad_request" and not st then return nil end
  end
  local ra = err.retry_after
  if ra and ra >= 0 and ra <= call.client.max_retry_after then return ra end
  local n = call.attempt - 1
  local d = math.min(call.client.retry_base_delay * 2 ^ n, call.client.retry_max_delay)
  return d * (1 - 0.25 * math.random())
end

local function begin_attempt(call)
  call.attempt = call.attempt + 1
  call.timer = nil
  local log = call.client._log
  if log then
    log(("%s %s (attempt %d of %d%s)"):format(call.method, call.url, call.attempt,
      call.max_retries + 1, call.stream and ", stream" or ""))
    for _, h in ipairs(call.header_lines) do
      local name, value = h:match("^([^:]+):%s*(.*)$")
      if name and value ~= "" then log("> " .. logmod.header_line(name, value)) end
    end
  end
  call.t0 = core.now()
  local ok, err = call.req:start()
  if not ok then
    finish(call, nil, errors.new({ kind = "network", message = err }))
  end
end

local function complete(call)
  if call.done then return end
  local res, err = outcome(call)
  local log = call.client._log
  if log then
    local st = call.req:status()
    log(("%s %s -> %s in %.1f ms"):format(call.method, call.url, st ~= 0 and st or "no response",
      (core.now() - call.t0) * 1000))
    for k, v in pairs(call.req:headers()) do log("< " .. logmod.header_line(k, v)) end
  end
  if err then
    if call.batch and err.kind == "rate_limit" then call.batch.slow_down(err.retry_after) end
    local delay = retry_delay(call, err)
    if delay then
      if log then log(("retrying in %.2f s: %s"):format(delay, tostring(err))) end
      call.last_err = err
      call.timer = loop.after(delay, function() begin_attempt(call) end, call)
      return
    end
  end
  if res and call.schema then
    local data, derr = json.decode(type(res.content) == "string" and res.content or "")
    if data == nil then
      err = errors.new({ kind = "protocol", status = res.status, headers = res.headers,
        message = "the answer is not the JSON the schema asks for: " .. tostring(derr),
        body = res.content, raw = res.content, partial = res }, secrets[call.client])
      res = nil
    else
      res.data = data
    end
  end
  finish(call, res, err)
end

--- Stops the call at once; its result becomes nil, err (kind cancelled).
function Call:cancel()
  if self.done then return end
  if self.timer then
    self.timer.cancelled = true
    self.timer = nil
    finish(self, nil, errors.new({ kind = "cancelled", message = "cancelled by the caller",
      partial = nil }))
    return
  end
  if self.req then
    self.req:cancel()
    complete(self)
  end
end
Call.close = Call.cancel

--- res, err once done; nil, nil while in flight.
function Call:result()
  return self.res, self.err
end

--- Blocks (or yields, in a coroutine of llmchat.run) until done.
function Call:wait()
  loop.wait(self)
  return self.res, self.err
end

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

--- Builds the HTTP request of a chat call: spec for core.request, or nil, err.
function Client:_prepare(params, force_stream)
  if type(params) ~= "table" then error("llmchat: expected a table of request fields", 3) end
  if params.messages ~= nil and type(params.messages) ~= "table" then
    error("llmchat: 'messages' must be a table (an array of messages)", 3)
  end
  if params.on_delta ~= nil and type(params.on_delta) ~= "function" then
    error("llmchat: 'on_delta' must be a function", 3)
  end
  if params.on_done ~= nil and type(params.on_done) ~= "function" then
    error("llmchat: 'on_done' must be a function", 3)
  end
  if params.headers ~= nil and type(params.headers) ~= "table" then
    error("llmchat: 'headers' must be a table", 3)
  end
  local body = {}
  for k, v in pairs(params) do
    if not OWN[k] then body[k] = v end
  end
  if type(params.extra_body) == "table" then
    for k, v in pairs(params.extra_body) do body[k] = v end
  end
  if body.model == nil then body.model = self.model end
  local stream = force_stream or params.stream == true or params.on_delta ~= nil
  if stream then
    body.stream = true
    if self.stream_usage and body.stream_options == nil then
      body.stream_options = { include_usage = true }
    end
  end
  if params.schema ~= nil and body.response_format == nil then
    if type(params.schema) ~= "table" then error("llmchat: 'schema' must be a table (a JSON schema)", 3) end
    body.response_format = { type = "json_schema", json_schema = {
      name = params.schema_name or "response", schema = params.schema, strict = true } }
  end
  local url = self.base_url .. "/chat/completions"
  if self._preset.model_in_path then
    local model = body.model
    if type(model) ~= "string" or model == "" then
      error("llmchat: this provider takes the model in the URL path: give model", 3)
    end
    url = self.base_url .. "/" .. model:gsub("[^%w%-._~]", function(c)
      return ("%%%02X"):format(c:byte())
    end)
    body.model = nil
  end
  local text, eerr = json.encode(body)
  -- the client's own list with the Accept line, built once (core.request copies it);
  -- a copy only when the call adds headers of its own
  local hdrs = stream and self._headers_sse or self._headers_json
  if params.headers then
    local own = hdrs
    hdrs = {}
    for i, h in ipairs(own) do hdrs[i] = h end
    for _, h in ipairs(header_list(params.headers, "llmchat")) do hdrs[#hdrs + 1] = h end
  end
  if not text then
    return nil, errors.new({ kind = "bad_request", message = "request body: " .. tostring(eerr) })
  end
  return {
    url = url, method = "POST", body = text, headers = hdrs, stream = stream,
    timeout = params.timeout or self.timeout,
    connect_timeout = params.connect_timeout or self.connect_timeout,
    idle_timeout = params.idle_timeout or self.idle_timeout,
    proxy = self.proxy, ca_file = self.ca_file, verify = self.verify,
    max_response_size = params.max_response_size or self.max_response_size,
    max_line = self.max_line, accept_encoding = self.accept_encoding,
  }
end

local function new_call(self, spec, params)
  local call = setmetatable({
    client = self, done = false, attempt = 0,
    max_retries = params.max_retries or self.max_retries,
    on_done = params.on_done, schema = params.schema, batch = params._batch,
    idle_timeout = spec and spec.idle_timeout,
    max_response_size = spec and spec.max_response_size or self.max_response_size,
  }, Call)
  loop.call_started()
  return call
end

--- Starts a request and returns at once (nothing blocks). Callbacks fire
-- from llmchat.poll (or a blocking wait on this call).
function Client:start(params, force_stream, on_delta, batch)
  local spec, perr = self:_prepare(params, force_stream)
  local call = new_call(self, spec, params)
  if not spec then
    call.timer = loop.after(0, function() finish(call, nil, perr) end, call)
    return call
  end
  call.stream = spec.stream
  call.url = spec.url
  call.method = spec.method
  call.header_lines = spec.headers
  call.req = core.request(spec)
  call.req:handlers(on_delta or params.on_delta, function() complete(call) end, event_mt, batch)
  begin_attempt(call)
  return call
end

--- Blocking chat (yields inside llmchat.run coroutines).
function Client:chat(params)
  local call = self:start(params)
  loop.wait(call)
  return call.res, call.err
end

--- for ev in client:stream{...} do ... end
-- Yields each delta event (ev.kind, ev.delta, ev.choice, ...) and, last, an
-- event { kind = "done", result = res } or { kind = "error", error = err }.
function Client:stream(params)
  if type(params) ~= "table" then error("llmchat: expected a table of request fields", 2) end
  local head, tail, queue = 1, 0, {}
  local call
  local user = params.on_delta
  local on_delta, batch
  if user then
    -- the caller's on_delta sees every event as it is dispatched, one call each
    on_delta = function(text, ev)
      ev.delta = text
      tail = tail + 1
      queue[tail] = ev
      if call.waiter then loop.wake(call.waiter) end
      return user(text, ev)
    end
  else
    -- one call per dispatch with every event of it (ev.delta set in C): the queue
    -- becomes that array, or grows by it when the last one is not drained yet
    batch = true
    on_delta = function(events, n)
      if head > tail then
        queue, head, tail = events, 1, n
      else
        for i = 1, n do tail = tail + 1; queue[tail] = events[i] end
      end
      if call.waiter then loop.wake(call.waiter) end
    end
  end
  call = self:start(params, true, on_delta, batch)
  local ended = false
  local it = {}
  function it.close()
    if not call.done then call:cancel() end
  end
  it.call = call
  setmetatable(it, {
    __call = function()
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
        if call.done then
          if ended then return nil end
          ended = true
          if call.err then return { kind = "error", error = call.err, partial = call.err.partial } end
          return { kind = "done", result = call.res }
        end
        loop.wait(call, function() return call.done or head <= tail end)
      end
    end,
    __close = function() it.close() end,
    __gc = nil,
  })
  return it, nil, nil, it
end

--- Runs many chats with at most `concurrency` in flight; results in input
-- order, each a result or an error (never lost). A 429 with a retry-after
-- slows the whole batch down.
function Client:map(list, opts)
  if type(list) ~= "table" then error("llmchat: map expects an array of requests", 2) end
  opts = opts or {}
  local conc = opts.concurrency or 8
  if type(conc) ~= "number" or conc < 1 then error("llmchat: concurrency must be >= 1", 2) end
  local n = #list
  local results, left, nexti, inflight = {}, n, 1, 0
  local pause_until = 0
  local call_cap = self.max_retry_after  -- a batch never pauses longer than a retry would wait
  local batch = {}
  function batch.slow_down(secs)
    local d = math.min(secs or 1, call_cap)
    local t = core.now() + d
    if t > pause_until then pause_until = t end
  end
  local waiter = { done = false }
  local function launch(i)
    local p = {}
    for k, v in pairs(list[i]) do p[k] = v end
    p._batch = batch
    local user_done = p.on_done
    p.on_done = function(res, err)
      results[i] = res or err
      inflight = inflight - 1
      left = left - 1
      if user_done then user_done(res, err) end
      if opts.on_result then opts.on_result(i, res, err) end
      if waiter.waiter then loop.wake(waiter.waiter) end
    end
    inflight = inflight + 1
    self:start(p)
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
  while left > 0 do
    fill()
    if left == 0 then break end
    if task then
      waiter.waiter = task
      if inflight == 0 then loop.sleep(math.max(0, pause_until - core.now())) else coroutine.yield() end
    else
      local wait = 0.05
      if inflight == 0 then wait = math.max(0.001, math.min(1, pause_until - core.now())) end
      loop.poll(wait)
    end
  end
  return results
end

--- GET /models
function Client:models()
  local hdrs = {}
  for i, h in ipairs(self._headers) do hdrs[i] = h end
  local call = new_call(self, nil, {})
  call.url = self.base_url .. "/models"
  call.method = "GET"
  call.header_lines = hdrs
  call.req = core.request({ url = call.url, method = "GET", headers = hdrs,
    timeout = self.timeout, connect_timeout = self.connect_timeout, proxy = self.proxy,
    ca_file = self.ca_file, verify = self.verify, max_response_size = self.max_response_size })
  call.req:handlers(nil, function()
    if call.done then return end
    local req = call.req
    local err, status = transfer_error(call)
    if err then
      finish(call, nil, err)
    else
      local d, derr = json.decode(req:body())
      if type(d) ~= "table" then
        finish(call, nil, errors.new({ kind = "protocol", message = "models: " .. tostring(derr), body = req:body() }))
      else
        d.status, d.headers = status, req:headers()
        finish(call, d)
      end
    end
  end, nil)
  call.t0 = core.now()
  call.attempt = 1
  call.req:start()
  loop.wait(call)
  return call.res, call.err
end

M.Client = Client
return M
