--- llmchat.call: the one path every request takes, whatever its endpoint.
--
-- A call runs attempts of one C request (core.request) until one succeeds or the retry
-- policy says stop; each attempt's outcome is shaped by the call's endpoint
-- (llmchat.endpoints). Retries, timeouts, logging, start/poll, blocking waits, coroutines
-- and cancellation live here once, so chat, the Responses API, embeddings, models and the
-- Batch API's files and batches all get the same behaviour.
local core = require("llmchat.core")
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local result = require("llmchat.result")
local loop = require("llmchat.loop")
local logmod = require("llmchat.log")

local M = {}

local Call = {}
Call.__index = Call
Call.__name = "llmchat.call"
M.Call = Call

-- What a call must not show in any field (the handle is the caller's: pairs() on it must
-- never reach the API key): the key, for scrubbing errors, and the header lines (they carry
-- Authorization), for the debug log.
local private = setmetatable({}, { __mode = "k" })

--- The API key of a call, for errors.new's scrub (nil without one).
function M.secret_of(call)
  local p = private[call]
  return p and p.secret
end
local secret_of = M.secret_of

-- what a stream had delivered when it ended early (or nil)
local function partial_of(call)
  local req = call.req
  if not req or req:state() == "closed" then return nil end
  if call.endpoint.partial then return call.endpoint.partial(call, req) end
  return nil
end
M.partial_of = partial_of

local function finish(call, res, err)
  if call.done then return end
  call.done = true
  call.res, call.err = res, err
  local log = call.log
  if log then
    if err then log(("%s %s failed: %s"):format(call.method, call.url, tostring(err)))
    else log(("%s %s done"):format(call.method, call.url)) end
  end
  -- the C request (its buffers, its easy handle back to the pool) is done with
  if call.req then call.req:close() end
  loop.call_finished(call)  -- wakes whatever waits on it
  if call.on_done then call.on_done(res, err) end
end
M.finish = finish

local function kind_for_curl(code, msg)
  -- CURLE_OPERATION_TIMEDOUT
  if code == 28 then return "timeout" end
  -- CURLE_WEIRD_SERVER_REPLY; CURLE_UNSUPPORTED_PROTOCOL for a server that answers
  -- something that is not HTTP ("Received HTTP/0.9 when not allowed"): the server's fault
  if code == 8 or (code == 1 and msg:find("HTTP/0.9", 1, true)) then return "protocol" end
  -- CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT: the caller's URL
  if code == 1 or code == 3 then return "bad_request" end
  return "network"
end

-- The error of an attempt that did not end in a 2xx response (cancelled, timed out, cut
-- off, refused, an HTTP error status); else nil, status, headers.
local function transfer_error(call)
  local req = call.req
  local secret = private[call].secret
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
      message = ("response exceeds max_response_size (%d bytes%s)"):format(call.max_response_size,
        req:stream_state() and " of streamed text, reasoning and arguments" or " of decoded body")
    elseif reason == "headers" then message = "response headers exceed 256 KiB or 4096 lines"
    elseif reason == "nomem" then message = "out of memory while receiving the response"
    else message = msg end
    return errors.new({ kind = "protocol", status = status ~= 0 and status or nil, message = message,
      headers = headers, partial = partial_of(call) }, secret)
  end
  if code ~= 0 then
    local kind = kind_for_curl(code, msg)
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
M.transfer_error = transfer_error

-- A 2xx body that should be JSON: the decoded table, or nil and a protocol error.
local function decode_body(call, status, headers)
  local body = call.req:body()
  local decoded, derr = json.decode(body)
  if type(decoded) == "table" then return decoded end
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
    body = body, headers = headers }, secret_of(call))
end

-- The outcome of one attempt: res, or nil and err.
local function outcome(call)
  local req = call.req
  local ep = call.endpoint
  local err, status, headers = transfer_error(call)
  if err then return nil, err end
  local res
  local sse, done_marker, finished, events = req:stream_state()
  if sse then
    res, err = ep.stream_result(call, req, status, headers, done_marker, finished, events)
    if not res then return nil, err end
  elseif ep.raw then
    res = { body = req:body() }
  else
    local decoded
    decoded, err = decode_body(call, status, headers)
    if not decoded then return nil, err end
    -- an error object under a 2xx status (OpenRouter does this)
    if decoded.error ~= nil and (not ep.error_under_2xx or ep.error_under_2xx(decoded)) then
      local e = result.http_error(status, headers, req:body(), secret_of(call))
      local ecode = type(decoded.error) == "table" and tonumber(decoded.error.code)
      e.kind = ecode and ecode >= 400 and ecode <= 599 and errors.kind_for_status(ecode) or "server"
      return nil, e
    end
    res, err = ep.result(decoded, call)
    if not res then return nil, err end
  end
  if ep.status_field then res.http_status = status
  else res.status = status; res.http_status = status end
  res.headers = headers
  return res
end

local function retry_delay(call, err)
  if call.attempt > call.max_retries then return nil end
  local kind = err.kind
  if kind == "cancelled" or kind == "protocol" or kind == "stream_error" then return nil end
  if call.req and call.req:state() ~= "closed" then
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
  if ra and ra >= 0 then
    -- the server said "not before then": beyond what the caller accepts to wait, give up
    -- (the error keeps retry_after) rather than retry earlier than asked
    if ra > call.client.max_retry_after then return nil end
    return ra
  end
  local n = call.attempt - 1
  local d = math.min(call.client.retry_base_delay * 2 ^ n, call.client.retry_max_delay)
  return d * (1 - 0.25 * math.random())
end

local function begin_attempt(call)
  call.attempt = call.attempt + 1
  call.timer = nil
  local log = call.log
  if log then
    log(("%s %s (attempt %d of %d%s)"):format(call.method, call.url, call.attempt,
      call.max_retries + 1, call.stream and ", stream" or ""))
    for _, h in ipairs(private[call].headers) do
      local name, value = h:match("^([^:]+):%s*(.*)$")
      if name and value ~= "" then log("> " .. logmod.header_line(name, value)) end
    end
  end
  if call.on_attempt then call.on_attempt(call) end
  call.t0 = core.now()
  local ok, err = call.req:start()
  if not ok then
    finish(call, nil, errors.new({ kind = "network", message = err }))
  end
end

local function complete(call)
  if call.done then return end
  local res, err = outcome(call)
  local log = call.log
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
  if res and call.after then res, err = call.after(res, call) end
  finish(call, res, err)
end

--- Stops the call at once; its result becomes nil, err (kind cancelled).
function Call:cancel()
  if self.done then return end
  if self.timer then
    self.timer.cancelled = true
    self.timer = nil
    finish(self, nil, errors.new({ kind = "cancelled", message = "cancelled by the caller",
      partial = self.last_err and self.last_err.partial or nil }, secret_of(self)))
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

--- The C request this call is waiting on (nil before it has one, or when it failed
-- before sending): what a blocking wait dispatches.
function Call:request()
  return self.req or nil
end

--- Blocks (or yields, in a coroutine of llmchat.run) until done.
function Call:wait()
  loop.wait(self)
  return self.res, self.err
end

--- Starts a call. spec: the core.request options plus
--   endpoint    the endpoint description (llmchat.endpoints)
--   handlers    { on_delta =, on_event =, batch = } for the C dispatch
--   on_done, after (res, call -> res, err), batch (map's rate limiter), max_retries
-- or `failure` (an error found before anything was sent): the call ends with it from the
-- next poll (or at once in a blocking wait), without touching the network.
function M.start(client, spec, secret, log)
  local call = setmetatable({
    client = client, done = false, attempt = 0, log = log,
    endpoint = spec.endpoint,
    max_retries = spec.max_retries or client.max_retries,
    on_done = spec.on_done, after = spec.after, batch = spec.batch,
    idle_timeout = spec.idle_timeout, max_response_size = spec.max_response_size,
    stream = spec.stream, url = spec.url, method = spec.method or "POST",
    state = spec.state, on_attempt = spec.on_attempt or nil,
    -- set later; here so that the table is built at its final size
    req = false, t0 = 0, timer = false,
  }, Call)
  -- the spec (it holds the header lines) is the call's private part: no table more
  spec.secret = secret
  private[call] = spec
  loop.call_started(call)
  if spec.failure then
    call.timer = loop.after(0, function() finish(call, nil, spec.failure) end, call)
    return call
  end
  call.req = core.request(spec)
  call.req:handlers(spec.on_delta, function() complete(call) end, spec.event_mt, spec.batch_events,
    spec.on_event)
  begin_attempt(call)
  return call
end

return M
