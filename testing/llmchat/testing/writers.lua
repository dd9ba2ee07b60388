--- llmchat.testing.writers: how the test server writes an answer.
--
-- The Exchange (one request and its response) and its writers: the response head with the
-- mock's headers, a full body with Content-Length, chunked bodies, SSE events, gzip
-- encoding and the framing faults (duplicate headers, trailing bytes). Endpoint modules add
-- their handlers to the same class.
local json = require("llmchat.testing.json")
local http = require("llmchat.testing.http")
local util = require("llmchat.testing.util")

local sformat, concat = string.format, table.concat
local floor, ceil = math.floor, math.ceil
local is_str, is_tab, num = util.is_str, util.is_tab, util.num
local NULL = json.null
local sleep = http.sleep

local Exchange = {}
Exchange.__index = Exchange

function Exchange.new(fields) return setmetatable(fields, Exchange) end

function Exchange:echo_into(obj)
  if self.mock.echo == true and is_tab(obj) then
    local headers = {}
    for name, value in pairs(self.req.headers) do headers[name] = value end
    obj._request = { method = self.req.method, path = self.req.target,
      headers = headers, body = self.req.body }
  end
  return obj
end

-- Answer gzip-encoded? (mock gzip = true: when the client accepts it; "always": even if not)
function Exchange:gzip_wanted()
  local g = self.mock.gzip
  if g == "always" then return true end
  if g ~= true then return false end
  local accept = (self.req.headers and self.req.headers["accept-encoding"] or ""):lower()
  return accept:find("gzip", 1, true) ~= nil
end

-- Response head: defaults, then the mock's headers (same name replaces; null removes), then
-- the header faults (dup_headers, many_headers).
function Exchange:head(status, fields)
  local mock = self.mock
  local list, at = {}, {}
  local function set(name, value) -- value nil: remove
    local key = name:lower()
    if at[key] then
      list[at[key]][2] = value
    else
      list[#list + 1] = { name, value }
      at[key] = #list
    end
  end
  for _, f in ipairs(fields) do set(f[1], f[2]) end
  if is_str(mock.content_type) then set("Content-Type", mock.content_type) end
  set("Connection", self.keep_alive and "keep-alive" or "close")
  set("x-connection-id", tostring(self.conn.id))
  set("x-request-id", self.request_id)
  if self.fault_name then set("x-fault", self.fault_name) end
  if is_tab(mock.headers) then
    local names = {}
    for name in pairs(mock.headers) do names[#names + 1] = tostring(name) end
    table.sort(names)
    for _, name in ipairs(names) do
      local v = mock.headers[name]
      if v == NULL or v == false then set(name, nil)
      elseif type(v) == "number" then set(name, json.number(v))
      elseif is_tab(v) then -- repeated header
        set(name, nil)
        for _, item in ipairs(v) do list[#list + 1] = { name, tostring(item) } end
        at[name:lower()] = nil
      else set(name, tostring(v)) end
    end
  end
  local dup = num(mock.dup_headers)
  if dup and dup > 0 then
    local name = is_str(mock.dup_header_name) and mock.dup_header_name or "x-dup"
    local value = mock.dup_header_value ~= nil and tostring(mock.dup_header_value) or "1"
    for _ = 1, floor(dup) do list[#list + 1] = { name, value } end
  end
  local many = num(mock.many_headers)
  if many and many > 0 then
    for i = 1, floor(many) do list[#list + 1] = { "x-many-" .. i, "v" .. i } end
  end
  status = floor(status)
  local out = { sformat("HTTP/1.1 %d %s\r\n", status, http.REASONS[status] or "Status") }
  for _, f in ipairs(list) do
    if f[2] ~= nil then out[#out + 1] = f[1] .. ": " .. f[2] .. "\r\n" end
  end
  out[#out + 1] = "\r\n"
  self.status = status
  return concat(out)
end

-- A forged second response, written after a complete one when the mock asks for trailing bytes.
local function forged_response()
  local body = json.encode{ id = "chatcmpl-forged", object = "chat.completion", created = 0,
    model = "forged", choices = json.array{ { index = 0, message = { role = "assistant",
      content = "forged" }, finish_reason = "stop" } } }
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-forged: 1\r\nContent-Length: "
    .. #body .. "\r\n\r\n" .. body
end

--- The trailing bytes the mock asks for (trailing = true: a forged response; a string: those
-- bytes), or nil.
function Exchange:trailing_bytes()
  local t = self.mock.trailing
  if t == true then return forged_response() end
  if is_str(t) and t ~= "" then return t end
end

-- Trailing bytes to send in the same write as the end of the body (no trailing_delay).
function Exchange:trailing_now()
  local delay = num(self.mock.trailing_delay)
  if delay and delay > 0 then return "" end
  self.trailing_sent = true
  return self:trailing_bytes() or ""
end

-- A complete response with Content-Length, honouring stall, slow_body and drop = mid_body.
function Exchange:send_full(status, body, content_type)
  local mock, conn = self.mock, self.conn
  local fields = {
    { "Content-Type", content_type or "application/json" },
    { "Content-Length", "" },
    { "Server", "llmchat-server" },
  }
  if self:gzip_wanted() then
    body = require("llmchat.testing.gzip").compress(body)
    fields[#fields + 1] = { "Content-Encoding", "gzip" }
  end
  fields[2][2] = tostring(#body)
  local head = self:head(status, fields)
  if mock.drop == "mid_body" then
    conn:send(head .. body:sub(1, floor(#body / 2)))
    conn:abort(mock.reset == true)
  end
  local stall, slow = num(mock.stall), num(mock.slow_body)
  if not (stall and stall > 0) and not (slow and slow > 0) then
    return conn:send(head .. body .. self:trailing_now())
  end
  conn:send(head)
  if stall and stall > 0 then sleep(stall) end
  if slow and slow > 0 and #body > 0 then
    local pieces = math.min(#body, 20)
    local step = ceil(#body / pieces)
    for i = 1, #body, step do
      conn:send(body:sub(i, i + step - 1))
      if i + step <= #body then sleep(slow / pieces) end
    end
  else
    conn:send(body)
  end
  conn:send(self:trailing_now())
end

function Exchange:send_json(status, obj, rank)
  return self:send_full(status, json.encode(self:echo_into(obj), rank))
end

function Exchange:send_error(status, message, etype, code, param)
  return self:send_json(status, { error = { message = message,
    type = etype or "invalid_request_error", param = param or NULL, code = code or NULL } })
end

-- Streams use chunked framing so that keep-alive survives them (HTTP/1.0: close instead).
function Exchange:send_chunk(data)
  if self.gzip then data = self.gzip:write(data) end
  if data == "" then return end
  if self.chunked then
    self.conn:send(sformat("%x\r\n", #data) .. data .. "\r\n")
  else
    self.conn:send(data)
  end
end

function Exchange:end_chunks()
  if self.gzip then
    local tail = self.gzip:finish()
    self.gzip = nil
    self:send_chunk(tail)
  end
  if self.chunked then self.conn:send("0\r\n\r\n" .. self:trailing_now())
  else self.conn:send(self:trailing_now()) end
end

function Exchange:start_stream(status, content_type)
  self.chunked = self.req.version >= 1.1
  if not self.chunked then self.keep_alive = false end
  local fields = {
    { "Content-Type", content_type or "text/event-stream" },
    { "Cache-Control", "no-cache" },
    { "Server", "llmchat-server" },
  }
  if self.chunked then fields[#fields + 1] = { "Transfer-Encoding", "chunked" } end
  if self:gzip_wanted() then
    fields[#fields + 1] = { "Content-Encoding", "gzip" }
    self.gzip = require("llmchat.testing.gzip").encoder()
  end
  self.conn:send(self:head(status, fields))
end

-- SSE bytes out, in writes of write_split bytes regardless of event boundaries.
function Exchange:sse_writer()
  local split = num(self.mock.write_split)
  if not split or split < 1 then
    return { write = function(bytes) self:send_chunk(bytes) end, flush = function() end }
  end
  split = floor(split)
  local pause = num(self.mock.split_delay) or 0.001
  local carry = ""
  local w = {}
  function w.write(bytes)
    carry = carry .. bytes
    local i = 1
    while #carry - i + 1 >= split do
      self:send_chunk(carry:sub(i, i + split - 1))
      i = i + split
      sleep(pause)
    end
    carry = carry:sub(i)
  end
  function w.flush()
    if carry ~= "" then self:send_chunk(carry); carry = "" end
  end
  return w
end

return Exchange
