--- llmchat.testing.scenario: the mock language of the test server.
--
-- A request asks for a scenario with a `mock` object in its JSON body or an `x-mock` header
-- (see docs/server.md). This module merges them, counts keys for fail_times, draws the
-- random faults, and answers from the mock alone where it says so (errors, verbatim bodies,
-- drops, garbage, gzip bombs, echoed secrets). It adds these methods to the Exchange.
local json = require("llmchat.testing.json")
local http = require("llmchat.testing.http")
local util = require("llmchat.testing.util")
local Exchange = require("llmchat.testing.writers")

local floor = math.floor
local is_str, is_tab, num, status_of, merge = util.is_str, util.is_tab, util.num, util.status_of,
  util.merge
local NULL = json.null
local sleep = http.sleep

local M = {}

-- Fields that only apply to the failing requests of a fail_times series.
M.FAILURE_FIELDS = { "status", "error", "body", "html", "content_type", "headers", "drop",
  "reset", "delay", "stall", "stall_after", "slow_body", "stream_error", "truncate_after",
  "truncate_abrupt", "stream_status", "raw", "close", "auth",
  -- later controls
  "error_event", "failed", "incomplete", "echo_auth", "garbage", "gzip_bomb", "trailing",
  "dup_headers", "many_headers", "fault" }

-- Error shapes for a bare mock status
local STATUS_ERRORS = {
  [400] = { "invalid_request_error", NULL },
  [401] = { "invalid_request_error", "invalid_api_key" },
  [402] = { "insufficient_credits", "insufficient_credits" },
  [403] = { "permission_error", "permission_denied" },
  [404] = { "invalid_request_error", "model_not_found" },
  [406] = { "insufficient_credits", "insufficient_credits" },
  [429] = { "requests", "rate_limit_exceeded" },
}

--- The error object a bare mock status gives: {message, type, param, code}.
function M.status_error(status)
  local shape = STATUS_ERRORS[status] or { status >= 500 and "server_error" or "invalid_request_error", NULL }
  return { message = "mock error: HTTP " .. status, type = shape[1], param = NULL, code = shape[2] }
end

local function html_page(status)
  local title = status .. " " .. (http.REASONS[status] or "Error")
  return "<html>\r\n<head><title>" .. title .. "</title></head>\r\n<body>\r\n<center><h1>"
    .. title .. "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
end

--- An error object that carries the request's credentials (Authorization and x-api-key
-- header values) in its message and at several depths: what a careless proxy echoes.
function M.secret_error(req)
  local h = req.headers or {}
  local auth, key = h.authorization or "", h["x-api-key"] or ""
  local raw = json.encode{ request = { headers = { authorization = auth, ["x-api-key"] = key } } }
  return { message = "Upstream rejected the request (Authorization: " .. auth
      .. "; x-api-key: " .. key .. ")",
    type = "upstream_error", code = 502, param = NULL,
    metadata = { provider_name = "mock-upstream", raw = raw,
      headers = { authorization = auth, ["x-api-key"] = key },
      deep = json.array{ { nested = { authorization = auth, list = json.array{ auth, key } } } } } }
end

-- The random faults: name -> mock fields (for a stream / for a plain answer).
local FAULTS = {
  { "none" },
  { "reset_before_headers", { drop = "before_headers", reset = true } },
  { "reset_mid_body", { drop = "mid_body", reset = true } },
  { "reset_mid_stream", { truncate_after = 2, truncate_abrupt = true, reset = true },
    { drop = "mid_body" } },
  { "stall" },
  { "garbage", { garbage = true } },
  { "truncated", { truncate_after = 1 }, { drop = "mid_body" } },
  { "status_500", { status = 500 } },
  { "status_429", { status = 429, headers = { ["retry-after"] = "0" } } },
}
M.FAULT_NAMES = {}
for i, f in ipairs(FAULTS) do M.FAULT_NAMES[i] = f[1] end

-- fault = "random": pick one by seed and the seed's request counter (or fault_index).
function Exchange:pick_fault()
  local mock = self.mock
  if mock.fault ~= "random" then return end
  local seed = mock.seed ~= nil and tostring(mock.seed) or "0"
  local index = num(mock.fault_index)
  if not index then
    local keys = self.srv.stats.keys
    local key = "fault:" .. seed
    keys[key] = (keys[key] or 0) + 1
    index = keys[key]
  end
  local pool = {}
  if is_tab(mock.faults) then
    local allowed = {}
    for _, name in ipairs(mock.faults) do allowed[name] = true end
    for _, f in ipairs(FAULTS) do if allowed[f[1]] then pool[#pool + 1] = f end end
  end
  if #pool == 0 then pool = FAULTS end
  local f = pool[util.hash_int(#pool, seed, floor(index)) + 1]
  self.fault_name = f[1]
  local fields = (self.streaming or not f[3]) and f[2] or f[3]
  if f[1] == "stall" then fields = { stall = num(mock.fault_stall) or 0.5 } end
  local m = merge(mock)
  m.fault = nil
  for k, v in pairs(fields or {}) do m[k] = v end
  self.mock = m
end

--- Merge the body's mock and the x-mock header (the header wins), then count the key.
function Exchange:resolve_mock(body)
  local bmock = is_tab(body) and body.mock or nil
  if self.header_mock or is_tab(bmock) then
    self.mock = merge(bmock, self.header_mock)
    self:apply_key()
  end
  return self.mock
end

-- Count requests per key; past fail_times, the failure fields no longer apply.
function Exchange:apply_key()
  local mock = self.mock
  if mock.key == nil or mock.key == NULL then return end
  local stats = self.srv.stats
  local key = tostring(mock.key)
  local count = (stats.keys[key] or 0) + 1
  stats.keys[key] = count
  local fail_times = num(mock.fail_times)
  if fail_times and count > fail_times then
    local ok = merge(mock)
    for _, f in ipairs(M.FAILURE_FIELDS) do ok[f] = nil end
    self.mock = ok
  end
end

function Exchange:authorized()
  local key = self.mock.auth
  if not is_str(key) then return true end
  local h = self.req.headers
  return h.authorization == "Bearer " .. key or h["x-api-key"] == key
end

-- A body that inflates to gzip_bomb MiB (default 128), sent gzip-encoded whatever the
-- client accepts: a chat completion with a huge string, or an SSE stream of content chunks.
function Exchange:send_bomb()
  local gzip = require("llmchat.testing.gzip")
  local size = floor((num(self.mock.gzip_bomb) or 128) * 1024 * 1024)
  if self.mock.gzip_bomb == true then size = 128 * 1024 * 1024 end
  local bytes, err, ctype
  if self.streaming then
    local event = 'data: {"id":"chatcmpl-bomb","object":"chat.completion.chunk","created":0,'
      .. '"model":"bomb","choices":[{"index":0,"delta":{"content":"aaaaaaaaaaaaaaaa"},'
      .. '"finish_reason":null}]}\n\n'
    bytes, err = gzip.bomb("", event, size, "data: [DONE]\n\n")
    ctype = "text/event-stream"
  else
    bytes, err = gzip.bomb('{"id":"chatcmpl-bomb","object":"chat.completion","created":0,'
      .. '"model":"bomb","choices":[{"index":0,"message":{"role":"assistant","content":"',
      "a", size, '"},"finish_reason":"stop"}]}')
    ctype = "application/json"
  end
  if not bytes then return self:send_error(500, "gzip bomb failed: " .. tostring(err), "server_error") end
  local head = self:head(200, { { "Content-Type", ctype }, { "Content-Length", tostring(#bytes) },
    { "Content-Encoding", "gzip" }, { "Server", "llmchat-server" } })
  self.conn:send(head .. bytes)
end

--- Answer from the mock alone (errors, verbatim bodies); returns true if it did.
function Exchange:mock_response()
  local mock = self.mock
  if mock.html == true then
    local status = status_of(mock.status) or 502
    self:send_full(status, html_page(status), "text/html")
    return true
  end
  if mock.body ~= nil and mock.body ~= NULL then
    self:send_full(status_of(mock.status) or 200, tostring(mock.body))
    return true
  end
  if mock.echo_auth == true and not self.streaming then
    self:send_json(status_of(mock.status) or 502, { error = M.secret_error(self.req) })
    return true
  end
  if mock.error ~= nil and mock.error ~= NULL then
    local err = mock.error
    if not is_tab(err) then err = { message = tostring(err), type = "server_error", code = NULL } end
    self:send_json(status_of(mock.status) or 500, { error = err })
    return true
  end
  local status = status_of(mock.status)
  if status and status >= 400 then
    local e = M.status_error(status)
    self:send_error(status, e.message, e.type, e.code)
    return true
  end
  return false
end

--- delay, drop before headers, garbage, auth, bombs, mock errors. Returns true if the
-- response is done.
function Exchange:before_response()
  self:pick_fault()
  local mock = self.mock
  if mock.close == true then self.keep_alive = false end
  local delay = num(mock.delay)
  if delay and delay > 0 then sleep(delay) end
  if mock.drop == "before_headers" then self.conn:abort(mock.reset == true) end
  if mock.garbage ~= nil and mock.garbage ~= false and mock.garbage ~= NULL then
    local bytes = is_str(mock.garbage) and mock.garbage
      or "\0\1\2garbage: this is not an HTTP response\r\n\r\n{\"oops\":true}\r\n"
    self.conn:send(bytes)
    self.conn:abort(false)
  end
  if not self:authorized() then
    self:send_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
    return true
  end
  if mock.gzip_bomb ~= nil and mock.gzip_bomb ~= false and mock.gzip_bomb ~= NULL then
    self:send_bomb()
    return true
  end
  return self:mock_response()
end

return M
