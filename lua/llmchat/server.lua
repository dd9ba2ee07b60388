--- llmchat.server: a local OpenAI-compatible chat server for tests and offline work.
--
-- Pure Lua + luasocket (+ luasec for TLS) + lua-cjson (decoding only). One coroutine per
-- connection, driven by a socket.select loop: no threads, no forks. The model is a
-- deterministic echo, and every odd thing a real provider does (errors, drops, stalls,
-- split SSE events, tool-call fragments ...) is switched on per request by a "mock" object:
-- see docs/server.md.
--
--   local server = require("llmchat.server")
--   local srv = assert(server.new{ host = "127.0.0.1", port = 0 })
--   print(srv.port); srv:run()
local socket = require("socket")
local cjson = require("cjson")

local json = cjson.new()
local gettime = socket.gettime
local sformat, sbyte, srep, concat = string.format, string.byte, string.rep, table.concat
local floor, ceil, huge = math.floor, math.ceil, math.huge

local M = { _VERSION = "0.1.0" }

local NULL = cjson.null
M.null = NULL

-- Raised inside a connection coroutine when the peer is gone (or we hung up on purpose):
-- the loop then closes the socket quietly.
local CLOSED = setmetatable({}, { __tostring = function() return "connection closed" end })

local RECV_SIZE = 65536
local MAX_LINE = 65536
local MAX_HEADERS = 200
local FILLER = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. "

---------------------------------------------------------------------------------------------
-- JSON output. lua-cjson 2.1.0 writes integers >= 1e14 imprecisely and cannot write an empty
-- array, so the server encodes its own output: integers with %d, arrays marked with array().
---------------------------------------------------------------------------------------------
local ARRAY_MT = { __jsontype = "array" }
local function array(t) return setmetatable(t or {}, ARRAY_MT) end
M.array = array

-- decode [] as a marked array where the cjson build supports it (openresty fork)
pcall(function() json.decode_array_with_array_mt(true) end)

-- Keys come out in the order OpenAI uses; unknown keys after them, sorted.
local KEY_RANK = {}
for i, k in ipairs{ "error", "id", "object", "created", "model", "choices", "data", "index",
  "message", "delta", "role", "content", "refusal", "reasoning_content", "reasoning",
  "tool_calls", "type", "function", "name", "arguments", "annotations", "logprobs",
  "finish_reason", "usage", "prompt_tokens", "completion_tokens", "total_tokens",
  "prompt_tokens_details", "cached_tokens", "audio_tokens", "completion_tokens_details",
  "reasoning_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens",
  "service_tier", "system_fingerprint", "x_groq", "owned_by", "param", "code" } do
  KEY_RANK[k] = i
end

local function key_before(a, b)
  local ra, rb = KEY_RANK[a] or huge, KEY_RANK[b] or huge
  if ra ~= rb then return ra < rb end
  return a < b
end

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function escape_char(c) return ESCAPES[c] or sformat("\\u%04x", sbyte(c)) end
local function encode_string(s) return '"' .. s:gsub('[%c"\\]', escape_char) .. '"' end

local function encode_number(x)
  if x ~= x or x == huge or x == -huge then return "null" end
  if math.type and math.type(x) == "integer" then return sformat("%d", x) end
  if x == floor(x) and x > -2^53 and x < 2^53 then return sformat("%d", x) end
  for digits = 14, 16 do
    local s = sformat("%." .. digits .. "g", x)
    if tonumber(s) == x then return s end
  end
  return sformat("%.17g", x)
end

local function is_array(t)
  local mt = getmetatable(t)
  if mt and mt.__jsontype then return mt.__jsontype == "array" end
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" then return false end
    n = n + 1
  end
  return n > 0 and t[n] ~= nil
end

local encode_value
local function encode_into(out, v)
  local tv = type(v)
  if tv == "string" then out[#out + 1] = encode_string(v)
  elseif tv == "number" then out[#out + 1] = encode_number(v)
  elseif tv == "boolean" then out[#out + 1] = v and "true" or "false"
  elseif tv == "table" then
    if is_array(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode_into(out, v[i])
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys, key_before)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        local item = v[k]
        if item == nil then item = v[tonumber(k)] end
        out[#out + 1] = (i > 1 and "," or "") .. encode_string(k) .. ":"
        encode_into(out, item)
      end
      out[#out + 1] = "}"
    end
  else
    out[#out + 1] = "null" -- nil, cjson.null, functions
  end
end
function encode_value(v)
  local out = {}
  encode_into(out, v)
  return concat(out)
end
M.encode = encode_value

local function decode_json(s)
  local ok, v = pcall(json.decode, s)
  if ok then return v end
  return nil, tostring(v)
end

---------------------------------------------------------------------------------------------
-- Small helpers
---------------------------------------------------------------------------------------------
local function is_str(v) return type(v) == "string" end
local function is_tab(v) return type(v) == "table" end
local function num(v) return type(v) == "number" and v or tonumber(v) end

-- An HTTP status from a mock field: an integer 100..999, else nil.
local function status_of(v)
  v = num(v)
  if v and v >= 100 and v <= 999 then return floor(v) end
end

local function merge(a, b)
  local t = {}
  if is_tab(a) then for k, v in pairs(a) do t[k] = v end end
  if is_tab(b) then for k, v in pairs(b) do t[k] = v end end
  return t
end

local function tokens(bytes) return ceil(bytes / 4) end

local function is_cont(s, i)
  local b = sbyte(s, i)
  return b ~= nil and b >= 0x80 and b < 0xC0
end

-- Cut s to at most n bytes without splitting a UTF-8 character.
local function utf8_cut(s, n)
  if #s <= n then return s end
  while n > 0 and is_cont(s, n + 1) do n = n - 1 end
  return s:sub(1, n)
end

-- Pieces of at most size bytes, split on UTF-8 character boundaries (a character longer
-- than size makes a piece of its own).
local function utf8_pieces(s, size)
  local pieces, i, len = {}, 1, #s
  size = math.max(1, floor(size))
  while i <= len do
    local j = i + size - 1
    if j < len then
      local k = j
      while k >= i and is_cont(s, k + 1) do k = k - 1 end
      if k < i then
        k = j
        while is_cont(s, k + 1) do k = k + 1 end
      end
      j = k
    end
    pieces[#pieces + 1] = s:sub(i, j)
    i = j + 1
  end
  return pieces
end

local function filler(n)
  n = floor(n)
  if n <= 0 then return "" end
  return srep(FILLER, ceil(n / #FILLER)):sub(1, n)
end

local function text_of(content)
  if is_str(content) then return content end
  if is_tab(content) then
    local parts = {}
    for _, part in ipairs(content) do
      if is_tab(part) and is_str(part.text) then parts[#parts + 1] = part.text
      elseif is_str(part) then parts[#parts + 1] = part end
    end
    return concat(parts)
  end
  return ""
end

local REASONS = { [100] = "Continue", [200] = "OK", [201] = "Created", [202] = "Accepted",
  [204] = "No Content", [301] = "Moved Permanently", [302] = "Found", [304] = "Not Modified",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [406] = "Not Acceptable", [408] = "Request Timeout", [409] = "Conflict",
  [413] = "Payload Too Large", [415] = "Unsupported Media Type",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [500] = "Internal Server Error",
  [501] = "Not Implemented", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout", [529] = "Site is overloaded" }

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

local function error_object(message, etype, code, param)
  return { error = { message = message, type = etype or "invalid_request_error",
    param = param or NULL, code = code or NULL } }
end

---------------------------------------------------------------------------------------------
-- Scheduling: a connection coroutine yields ("read"|"write", sock, deadline) or
-- ("sleep", nil, deadline); the loop resumes it with true (ready) or false (deadline passed).
---------------------------------------------------------------------------------------------
local yield = coroutine.yield

local function wait_io(kind, sock, deadline)
  if not yield(kind, sock, deadline) then error(CLOSED, 0) end
end

local function sleep(seconds)
  yield("sleep", nil, gettime() + math.max(0, seconds or 0))
end

---------------------------------------------------------------------------------------------
-- Connection: buffered non-blocking reads and writes on a plain or TLS socket
---------------------------------------------------------------------------------------------
local Conn = {}
Conn.__index = Conn

local function new_conn(sock, id, write_timeout)
  return setmetatable({ sock = sock, id = id, buf = "", pos = 1,
    write_timeout = write_timeout }, Conn)
end

-- Wait on whatever the socket (or TLS engine) asked for; anything else means gone.
function Conn:wait_for(err, deadline)
  if err == "timeout" or err == "wantread" then wait_io("read", self.sock, deadline)
  elseif err == "wantwrite" then wait_io("write", self.sock, deadline)
  else error(CLOSED, 0) end
end

function Conn:fill(deadline)
  while true do
    local data, err, partial = self.sock:receive(RECV_SIZE)
    local got = data or partial
    if got and got ~= "" then
      if self.pos > 1 then self.buf, self.pos = self.buf:sub(self.pos), 1 end
      self.buf = self.buf .. got
      return
    end
    self:wait_for(err, deadline)
  end
end

function Conn:read_line(deadline)
  while true do
    local e = self.buf:find("\n", self.pos, true)
    if e then
      local line = self.buf:sub(self.pos, e - 1)
      self.pos = e + 1
      return (line:gsub("\r$", ""))
    end
    if #self.buf - self.pos + 1 > MAX_LINE then return nil, "line too long" end
    self:fill(deadline)
  end
end

function Conn:read_exact(n, deadline)
  local parts, need = {}, n
  while true do
    local avail = #self.buf - self.pos + 1
    if avail >= need then
      parts[#parts + 1] = self.buf:sub(self.pos, self.pos + need - 1)
      self.pos = self.pos + need
      return concat(parts)
    end
    if avail > 0 then
      parts[#parts + 1] = self.buf:sub(self.pos)
      need = need - avail
    end
    self.buf, self.pos = "", 1
    self:fill(deadline)
  end
end

-- A peer that reads nothing for write_timeout seconds is dropped.
function Conn:send(data)
  local i, n = 1, #data
  local deadline = gettime() + self.write_timeout
  self.sent_anything = true
  while i <= n do
    local last, err, sent = self.sock:send(data, i)
    if last then return end
    if sent and sent >= i then i = sent + 1 end
    if i <= n then self:wait_for(err == "timeout" and "wantwrite" or err, deadline) end
  end
end

-- Read and discard what the peer still sends (for a while), so that closing the socket
-- with unread input does not reset the connection before the peer reads our answer.
function Conn:drain(seconds)
  local deadline = gettime() + seconds
  while true do
    self.buf, self.pos = "", 1
    self:fill(deadline) -- raises CLOSED at EOF or at the deadline
  end
end

-- Hang up without a proper end; with reset, send a TCP RST instead of a FIN.
function Conn:abort(reset)
  if reset then pcall(self.sock.setoption, self.sock, "linger", { on = true, timeout = 0 }) end
  self.sock:close()
  error(CLOSED, 0)
end

function Conn:handshake(deadline)
  while true do
    local ok, err = self.sock:dohandshake()
    if ok then return end
    self:wait_for(err == "timeout" and "wantread" or err, deadline)
  end
end

---------------------------------------------------------------------------------------------
-- HTTP/1.1 request parsing
---------------------------------------------------------------------------------------------
local function bad(status, message) return nil, { status = status, message = message } end

local function read_chunked_body(conn, deadline, max_body)
  local parts, total = {}, 0
  while true do
    local line, err = conn:read_line(deadline)
    if not line then return bad(400, err) end
    local hex = line:match("^%s*(%x+)")
    local size = hex and tonumber(hex, 16)
    if not size then return bad(400, "bad chunk size line") end
    if size == 0 then break end
    total = total + size
    if total > max_body then return bad(413, "request body too large") end
    parts[#parts + 1] = conn:read_exact(size, deadline)
    if conn:read_line(deadline) ~= "" then return bad(400, "bad chunk terminator") end
  end
  repeat -- trailers
    local line, err = conn:read_line(deadline)
    if not line then return bad(400, err) end
  until line == ""
  return concat(parts)
end

-- Returns a request table, or nil + {status, message} for a malformed one.
-- Raises CLOSED when the peer goes away or stays idle too long.
local function read_request(srv, conn)
  local line, err
  repeat -- tolerate stray CRLFs between requests
    line, err = conn:read_line(gettime() + srv.idle_timeout)
    if not line then return bad(400, err) end
  until line ~= ""
  local deadline = gettime() + srv.request_timeout
  local method, target, major, minor = line:match("^(%u+) (%S+) HTTP/(%d)%.(%d)$")
  if not method then return bad(400, "malformed request line") end
  local req = { method = method, target = target, version = major + minor / 10,
    headers = {}, header_list = {} }
  local size = 0
  while true do
    line, err = conn:read_line(deadline)
    if not line then return bad(431, err) end
    if line == "" then break end
    size = size + #line
    if #req.header_list >= MAX_HEADERS or size > MAX_LINE then
      return bad(431, "request headers too large")
    end
    local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
    if not name then return bad(400, "malformed header line") end
    name = name:lower()
    req.header_list[#req.header_list + 1] = { name, value }
    local prev = req.headers[name]
    req.headers[name] = prev and (prev .. ", " .. value) or value
  end
  req.path, req.query = target:match("^([^?#]*)%??([^#]*)")
  local h = req.headers
  local conn_tokens = (h.connection or ""):lower()
  if req.version >= 1.1 then
    req.keep_alive = not conn_tokens:find("close", 1, true)
  else
    req.keep_alive = conn_tokens:find("keep-alive", 1, true) ~= nil
  end

  local chunked = (h["transfer-encoding"] or ""):lower():find("chunked", 1, true)
  local length = h["content-length"]
  if length and not length:match("^%d+$") then return bad(400, "bad Content-Length") end
  length = length and tonumber(length)
  if length and length > srv.max_body then return bad(413, "request body too large") end
  if (chunked or (length or 0) > 0) and (h.expect or ""):lower() == "100-continue"
    and req.version >= 1.1 then
    conn:send("HTTP/1.1 100 Continue\r\n\r\n")
  end
  if chunked then
    local body, berr = read_chunked_body(conn, deadline, srv.max_body)
    if not body then return nil, berr end
    req.body = body
  elseif length and length > 0 then
    req.body = conn:read_exact(length, deadline)
  else
    req.body = ""
  end
  return req
end

local function parse_query(q)
  local t = {}
  for k, v in (q or ""):gmatch("([^&=]+)=?([^&]*)") do
    t[k] = v:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end)
  end
  return t
end

---------------------------------------------------------------------------------------------
-- Exchange: one request and its response
---------------------------------------------------------------------------------------------
local Exchange = {}
Exchange.__index = Exchange

function Exchange:echo_into(obj)
  if self.mock.echo == true and is_tab(obj) then
    local headers = {}
    for name, value in pairs(self.req.headers) do headers[name] = value end
    obj._request = { method = self.req.method, path = self.req.target,
      headers = headers, body = self.req.body }
  end
  return obj
end

-- Response head: defaults, then the mock's headers (same name replaces; null removes).
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
  if is_tab(mock.headers) then
    local names = {}
    for name in pairs(mock.headers) do names[#names + 1] = tostring(name) end
    table.sort(names)
    for _, name in ipairs(names) do
      local v = mock.headers[name]
      if v == NULL or v == false then set(name, nil)
      elseif type(v) == "number" then set(name, encode_number(v))
      elseif is_tab(v) then -- repeated header
        set(name, nil)
        for _, item in ipairs(v) do list[#list + 1] = { name, tostring(item) } end
        at[name:lower()] = nil
      else set(name, tostring(v)) end
    end
  end
  status = floor(status)
  local out = { sformat("HTTP/1.1 %d %s\r\n", status, REASONS[status] or "Status") }
  for _, f in ipairs(list) do
    if f[2] ~= nil then out[#out + 1] = f[1] .. ": " .. f[2] .. "\r\n" end
  end
  out[#out + 1] = "\r\n"
  self.status = status
  return concat(out)
end

-- A complete response with Content-Length, honouring stall, slow_body and drop = mid_body.
function Exchange:send_full(status, body, content_type)
  local mock, conn = self.mock, self.conn
  local head = self:head(status, {
    { "Content-Type", content_type or "application/json" },
    { "Content-Length", tostring(#body) },
    { "Server", "llmchat-server" },
  })
  if mock.drop == "mid_body" then
    conn:send(head .. body:sub(1, floor(#body / 2)))
    conn:abort(mock.reset == true)
  end
  local stall, slow = num(mock.stall), num(mock.slow_body)
  if not (stall and stall > 0) and not (slow and slow > 0) then
    return conn:send(head .. body)
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
end

function Exchange:send_json(status, obj)
  return self:send_full(status, encode_value(self:echo_into(obj)))
end

function Exchange:send_error(status, message, etype, code, param)
  return self:send_json(status, error_object(message, etype, code, param))
end

-- Streams use chunked framing so that keep-alive survives them (HTTP/1.0: close instead).
function Exchange:send_chunk(data)
  if data == "" then return end
  if self.chunked then
    self.conn:send(sformat("%x\r\n", #data) .. data .. "\r\n")
  else
    self.conn:send(data)
  end
end

function Exchange:end_chunks()
  if self.chunked then self.conn:send("0\r\n\r\n") end
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

---------------------------------------------------------------------------------------------
-- The deterministic model
---------------------------------------------------------------------------------------------
local function last_user_text(messages)
  if not is_tab(messages) then return "" end
  for i = #messages, 1, -1 do
    local m = messages[i]
    if is_tab(m) and m.role == "user" then return text_of(m.content) end
  end
  return ""
end

local function prompt_bytes(messages)
  local n = 0
  if not is_tab(messages) then return 0 end
  for _, m in ipairs(messages) do
    if is_tab(m) then
      n = n + #text_of(m.content)
      if is_tab(m.tool_calls) then
        for _, tc in ipairs(m.tool_calls) do
          local fn = is_tab(tc) and tc["function"]
          if is_tab(fn) then
            n = n + #(is_str(fn.name) and fn.name or "") + #(is_str(fn.arguments) and fn.arguments or "")
          end
        end
      end
    end
  end
  return n
end

local function count_assistant(messages)
  local n = 0
  if is_tab(messages) then
    for _, m in ipairs(messages) do
      if is_tab(m) and m.role == "assistant" then n = n + 1 end
    end
  end
  return n
end

local function normalize_tool_calls(list)
  local calls = {}
  if not is_tab(list) then return calls end
  for i, tc in ipairs(list) do
    if is_tab(tc) then
      local fn = is_tab(tc["function"]) and tc["function"] or tc
      local args = fn.arguments
      if args == nil or args == NULL then args = "{}"
      elseif not is_str(args) then args = encode_value(args) end
      calls[#calls + 1] = { id = is_str(tc.id) and tc.id or ("call_" .. i),
        name = tostring(fn.name or "tool"), arguments = args }
    end
  end
  return calls
end

-- Cut the reply at the earliest stop sequence.
local function apply_stop(content, stop)
  if is_str(stop) then stop = { stop } end
  if not is_tab(stop) then return content, false end
  local cut
  for _, s in ipairs(stop) do
    if is_str(s) and s ~= "" then
      local at = content:find(s, 1, true)
      if at and (not cut or at < cut) then cut = at end
    end
  end
  if cut then return content:sub(1, cut - 1), true end
  return content, false
end

-- What one choice says: content, reasoning, refusal, tool calls, finish_reason.
local function choice_spec(body, e)
  local spec = { tool_calls = normalize_tool_calls(e.tool_calls) }
  if e.reply ~= nil then
    spec.content = is_str(e.reply) and e.reply or (e.reply ~= NULL and tostring(e.reply) or nil)
  elseif num(e.size) then
    spec.content = filler(math.min(num(e.size), 2^30))
  elseif #spec.tool_calls == 0 and not is_str(e.refusal) then
    spec.content = last_user_text(body.messages)
  end
  if is_str(e.refusal) then spec.refusal = e.refusal end
  if is_str(e.reasoning) then spec.reasoning = e.reasoning end
  local finish = #spec.tool_calls > 0 and "tool_calls" or "stop"
  if spec.content then
    spec.content = apply_stop(spec.content, body.stop)
    local limit = num(body.max_completion_tokens) or num(body.max_tokens)
    if limit and #spec.content > 4 * limit then
      spec.content = utf8_cut(spec.content, 4 * math.max(0, floor(limit)))
      finish = "length"
    end
  end
  if is_str(e.finish_reason) then finish = e.finish_reason end
  spec.finish_reason = finish
  local bytes = #(spec.content or "") + #(spec.reasoning or "") + #(spec.refusal or "")
  for _, tc in ipairs(spec.tool_calls) do bytes = bytes + #tc.name + #tc.arguments end
  spec.completion_tokens = tokens(bytes)
  spec.reasoning_tokens = tokens(#(spec.reasoning or ""))
  return spec
end

local function choice_specs(body, mock)
  local entry = mock
  if is_tab(mock.script) and #mock.script > 0 then
    local k = math.min(count_assistant(body.messages) + 1, #mock.script)
    entry = merge(mock, mock.script[k])
  end
  local per = is_tab(entry.choices) and entry.choices or {}
  local n = floor(num(body.n) or #per)
  n = math.min(math.max(n, 1), 128)
  local specs = {}
  for i = 1, n do specs[i] = choice_spec(body, per[i] and merge(entry, per[i]) or entry) end
  return specs, entry
end

local function make_usage(prompt, completion, reasoning)
  return { prompt_tokens = prompt, completion_tokens = completion,
    total_tokens = prompt + completion,
    prompt_tokens_details = { cached_tokens = 0, audio_tokens = 0 },
    completion_tokens_details = { reasoning_tokens = reasoning, audio_tokens = 0,
      accepted_prediction_tokens = 0, rejected_prediction_tokens = 0 } }
end

local function total_usage(ex, specs, entry)
  if is_tab(entry.usage) then return entry.usage end
  local completion, reasoning = 0, 0
  for _, s in ipairs(specs) do
    completion = completion + s.completion_tokens
    reasoning = reasoning + s.reasoning_tokens
  end
  return make_usage(ex.prompt_tokens, completion, reasoning)
end

local function tool_call_object(tc)
  return { id = tc.id, type = "function", ["function"] = { name = tc.name, arguments = tc.arguments } }
end

function Exchange:completion(specs, entry)
  local field = is_str(entry.reasoning_field) and entry.reasoning_field or "reasoning_content"
  local choices = array()
  for i, s in ipairs(specs) do
    local msg = { role = "assistant", content = s.content or NULL,
      refusal = s.refusal or NULL, annotations = array() }
    if s.reasoning then msg[field] = s.reasoning end
    if #s.tool_calls > 0 then
      msg.tool_calls = array()
      for j, tc in ipairs(s.tool_calls) do msg.tool_calls[j] = tool_call_object(tc) end
    end
    choices[i] = { index = i - 1, message = msg, logprobs = NULL, finish_reason = s.finish_reason }
  end
  return { id = self.completion_id, object = "chat.completion", created = self.created,
    model = self.model, choices = choices, usage = total_usage(self, specs, entry),
    service_tier = "default", system_fingerprint = "fp_llmchat" }
end

---------------------------------------------------------------------------------------------
-- Streaming
---------------------------------------------------------------------------------------------

-- The deltas of one choice, in order; each is { delta = table, bytes = n } or the finish.
local function choice_deltas(s, entry, size)
  local field = is_str(entry.reasoning_field) and entry.reasoning_field or "reasoning_content"
  local list = { { delta = { role = "assistant", content = "", refusal = NULL }, role = true } }
  local function add(delta, bytes) list[#list + 1] = { delta = delta, bytes = bytes } end
  if s.reasoning then
    for _, p in ipairs(utf8_pieces(s.reasoning, size)) do add({ [field] = p }, #p) end
  end
  if s.content then
    for _, p in ipairs(utf8_pieces(s.content, size)) do add({ content = p }, #p) end
  end
  if s.refusal then
    for _, p in ipairs(utf8_pieces(s.refusal, size)) do add({ refusal = p }, #p) end
  end
  local mode = entry.tool_index_mode
  local function fragment(i, tc, first, piece)
    local call = { ["function"] = { arguments = piece } }
    if mode == "zero" then call.index = 0 elseif mode ~= "omit" then call.index = i - 1 end
    if first then
      call.id, call.type, call["function"].name = tc.id, "function", tc.name
    end
    return { tool_calls = array{ call } }
  end
  local per_call = {}
  for i, tc in ipairs(s.tool_calls) do
    local frags = { { delta = fragment(i, tc, true, ""), bytes = #tc.name } }
    for _, p in ipairs(utf8_pieces(tc.arguments, size)) do
      frags[#frags + 1] = { delta = fragment(i, tc, false, p), bytes = #p }
    end
    per_call[i] = frags
  end
  if entry.parallel_interleave == true then
    local k = 1
    while true do
      local any = false
      for _, frags in ipairs(per_call) do
        if frags[k] then list[#list + 1] = frags[k]; any = true end
      end
      if not any then break end
      k = k + 1
    end
  else
    for _, frags in ipairs(per_call) do
      for _, f in ipairs(frags) do list[#list + 1] = f end
    end
  end
  return list
end

function Exchange:chunk(choices, usage)
  local obj = { id = self.completion_id, object = "chat.completion.chunk",
    created = self.created, model = self.model, system_fingerprint = "fp_llmchat",
    service_tier = "default", choices = choices }
  if usage ~= nil then obj.usage = usage end
  return obj
end

function Exchange:stream(specs, entry, stream_options)
  local mock = self.mock
  local eol = mock.crlf == true and "\r\n" or "\n"
  local include_usage = is_tab(stream_options) and stream_options.include_usage == true
  local usage_mode = is_str(mock.usage_mode) and mock.usage_mode or (include_usage and "final")
  local usage = total_usage(self, specs, entry)
  local size = math.max(1, floor(num(mock.chunk_size) or 4))
  local chunk_delay = num(mock.chunk_delay)
  local out = self:sse_writer()
  local first = true

  local function event(obj)
    if mock.comments == true then out.write(": OPENROUTER PROCESSING" .. eol .. eol) end
    if first then self:echo_into(obj); first = false end
    out.write("data: " .. encode_value(obj) .. eol .. eol)
  end

  self:start_stream(status_of(mock.status) or 200, nil)

  -- interleave the choices' deltas, then their finish chunks
  local lists, events, longest = {}, {}, 0
  for i, s in ipairs(specs) do
    lists[i] = choice_deltas(s, entry, size)
    longest = math.max(longest, #lists[i])
  end
  for k = 1, longest do
    for i = 1, #specs do
      if lists[i][k] then
        local ev = lists[i][k]
        ev.choice = i
        events[#events + 1] = ev
      end
    end
  end
  for i, s in ipairs(specs) do
    events[#events + 1] = { choice = i, finish = s.finish_reason, delta = {} }
  end

  local stream_error = is_tab(mock.stream_error) and mock.stream_error or nil
  local truncate_after = num(mock.truncate_after)
  local stall, stall_after = num(mock.stall), num(mock.stall_after) or 1
  local sent_content, sent_bytes, last_finish = 0, 0, #events
  for idx, ev in ipairs(events) do
    if not ev.role then
      if stream_error and sent_content >= (num(stream_error.after) or 0) then
        local err = is_tab(stream_error.error) and stream_error.error
          or { message = "stream failed", code = "server_error" }
        local obj = self:chunk(array{ { index = 0, delta = {}, finish_reason = "error" } })
        obj.error = err
        event(obj)
        if stream_error.done == true then out.write("data: [DONE]" .. eol .. eol) end
        out.flush()
        return self:end_chunks()
      end
      if truncate_after and sent_content >= truncate_after then
        out.flush()
        if mock.truncate_abrupt == true then self.conn:abort(mock.reset == true) end
        return self:end_chunks()
      end
      if mock.drop == "mid_body" and sent_content >= 1 then
        out.flush()
        self.conn:abort(mock.reset == true)
      end
      if stall and stall > 0 and sent_content >= stall_after then
        out.flush()
        sleep(stall)
        stall = nil
      end
    end
    if chunk_delay and chunk_delay > 0 and idx > 1 then sleep(chunk_delay) end
    local choice = { index = ev.choice - 1, delta = ev.delta, logprobs = NULL,
      finish_reason = ev.finish or NULL }
    local chunk_usage
    if usage_mode == "final" and include_usage then chunk_usage = NULL end
    sent_bytes = sent_bytes + (ev.bytes or 0)
    if usage_mode == "every" then
      chunk_usage = make_usage(self.prompt_tokens, tokens(sent_bytes), 0)
      if idx == last_finish then chunk_usage = usage end
    end
    local obj = self:chunk(array{ choice }, chunk_usage)
    if idx == last_finish then
      if usage_mode == "finish" then obj.usage = usage end
      if usage_mode == "x_groq" then obj.x_groq = { id = self.request_id, usage = usage } end
    end
    event(obj)
    if not ev.role and not ev.finish then sent_content = sent_content + 1 end
  end
  if usage_mode == "final" then event(self:chunk(array(), usage)) end
  if mock.no_done ~= true then out.write("data: [DONE]" .. eol .. eol) end
  out.flush()
  self:end_chunks()
end

-- N chunks of chunk_size bytes, built once and written in big batches: flat memory.
function Exchange:long_stream(n, entry, stream_options)
  local mock = self.mock
  local eol = mock.crlf == true and "\r\n" or "\n"
  local size = math.max(1, floor(num(mock.chunk_size) or 4))
  local function data(obj) return "data: " .. encode_value(obj) .. eol .. eol end
  local function choice(delta, finish)
    return array{ { index = 0, delta = delta, logprobs = NULL, finish_reason = finish or NULL } }
  end
  self:start_stream(status_of(mock.status) or 200, nil)
  self:send_chunk(data(self:echo_into(self:chunk(choice{ role = "assistant", content = "",
    refusal = NULL }))))
  local one = data(self:chunk(choice{ content = filler(size) }))
  local per_batch = math.max(1, floor(262144 / #one))
  local framed -- one full batch with its chunk framing, built once
  local left = n
  while left > 0 do
    local k = math.min(left, per_batch)
    if k == per_batch then
      if not framed then
        local batch = srep(one, per_batch)
        framed = self.chunked and (sformat("%x\r\n", #batch) .. batch .. "\r\n") or batch
      end
      self.conn:send(framed)
    else
      self:send_chunk(srep(one, k))
    end
    left = left - k
  end
  local usage = is_tab(entry.usage) and entry.usage
    or make_usage(self.prompt_tokens, tokens(n * size), 0)
  local include_usage = is_tab(stream_options) and stream_options.include_usage == true
  self:send_chunk(data(self:chunk(choice({}, "stop"))))
  if include_usage then self:send_chunk(data(self:chunk(array(), usage))) end
  if mock.no_done ~= true then self:send_chunk("data: [DONE]" .. eol .. eol) end
  self:end_chunks()
end

-- Replay of recorded bytes: a string, or a list of strings written with chunk_delay between.
function Exchange:raw_stream()
  local mock = self.mock
  local out = self:sse_writer()
  self:start_stream(status_of(mock.status) or 200, nil)
  local pieces = is_tab(mock.raw) and mock.raw or { mock.raw }
  local delay = num(mock.chunk_delay)
  for i, piece in ipairs(pieces) do
    if i > 1 and delay and delay > 0 then out.flush(); sleep(delay) end
    out.write(tostring(piece))
  end
  out.flush()
  if mock.truncate_abrupt == true then self.conn:abort(mock.reset == true) end
  self:end_chunks()
end

---------------------------------------------------------------------------------------------
-- Endpoints
---------------------------------------------------------------------------------------------

-- Fields that only apply to the failing requests of a fail_times series.
local FAILURE_FIELDS = { "status", "error", "body", "html", "content_type", "headers", "drop",
  "reset", "delay", "stall", "stall_after", "slow_body", "stream_error", "truncate_after",
  "truncate_abrupt", "stream_status", "raw", "close", "auth" }

local function html_page(status)
  local title = status .. " " .. (REASONS[status] or "Error")
  return "<html>\r\n<head><title>" .. title .. "</title></head>\r\n<body>\r\n<center><h1>"
    .. title .. "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
end

-- Answer from the mock alone (errors, verbatim bodies); returns true if it did.
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
  if mock.error ~= nil and mock.error ~= NULL then
    local err = mock.error
    if not is_tab(err) then err = { message = tostring(err), type = "server_error", code = NULL } end
    self:send_json(status_of(mock.status) or 500, { error = err })
    return true
  end
  local status = status_of(mock.status)
  if status and status >= 400 then
    local shape = STATUS_ERRORS[status] or { status >= 500 and "server_error" or "invalid_request_error", NULL }
    self:send_error(status, "mock error: HTTP " .. status, shape[1], shape[2])
    return true
  end
  return false
end

function Exchange:authorized()
  local key = self.mock.auth
  if not is_str(key) then return true end
  local h = self.req.headers
  return h.authorization == "Bearer " .. key or h["x-api-key"] == key
end

local DEFAULT_MODELS = { "llmchat-echo", "gpt-4o-mini", "gpt-4o" }

local function model_object(id)
  return { id = id, object = "model", created = 1700000000, owned_by = "llmchat" }
end

function Exchange:models(id)
  local ids = is_tab(self.mock.models) and self.mock.models or DEFAULT_MODELS
  if id then
    for _, m in ipairs(ids) do
      if m == id then return self:send_json(200, model_object(id)) end
    end
    return self:send_error(404, "The model '" .. id .. "' does not exist", "invalid_request_error",
      "model_not_found", "model")
  end
  local data = array()
  for i, m in ipairs(ids) do data[i] = model_object(tostring(m)) end
  return self:send_json(200, { object = "list", data = data })
end

function Exchange:chat(path_model)
  local req, mock = self.req, self.mock
  if req.method ~= "POST" then
    return self:send_error(405, "Method " .. req.method .. " not allowed; use POST",
      "invalid_request_error", "method_not_allowed")
  end
  local body, err = decode_json(req.body)
  if not is_tab(body) or is_array(body) and next(body) ~= nil then
    return self:send_error(400, "We could not parse the JSON body of your request. ("
      .. (err or "expected a JSON object") .. ")", "invalid_request_error", "invalid_json")
  end
  if body.messages ~= nil and not is_tab(body.messages) then
    return self:send_error(400, "Invalid type for 'messages': expected an array.",
      "invalid_request_error", "invalid_type", "messages")
  end
  if self.header_mock or is_tab(body.mock) then
    mock = merge(body.mock, self.header_mock)
    self.mock = mock
    self:apply_key()
    mock = self.mock
  end
  self.model = is_str(mock.model) and mock.model or path_model
    or (is_str(body.model) and body.model) or "llmchat-echo"
  if self:before_response() then return end
  if body.messages == nil then
    return self:send_error(400, "Missing required parameter: 'messages'.",
      "invalid_request_error", "missing_required_parameter", "messages")
  end
  self.prompt_tokens = tokens(prompt_bytes(body.messages))
  self.completion_id = "chatcmpl-llmchat" .. sformat("%06d", self.srv.stats.requests)
  self.created = os.time()
  local specs, entry = choice_specs(body, mock)
  if body.stream == true and not status_of(mock.stream_status) then
    if is_str(mock.raw) or is_tab(mock.raw) then return self:raw_stream() end
    if num(mock.long_stream) then
      return self:long_stream(floor(num(mock.long_stream)), entry, body.stream_options)
    end
    return self:stream(specs, entry, body.stream_options)
  end
  local status = status_of(mock.stream_status) or status_of(mock.status) or 200
  return self:send_json(status, self:completion(specs, entry))
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
    for _, f in ipairs(FAILURE_FIELDS) do ok[f] = nil end
    self.mock = ok
  end
end

-- delay, drop before headers, auth, mock errors. Returns true if the response is done.
function Exchange:before_response()
  local mock = self.mock
  if mock.close == true then self.keep_alive = false end
  local delay = num(mock.delay)
  if delay and delay > 0 then sleep(delay) end
  if mock.drop == "before_headers" then self.conn:abort(mock.reset == true) end
  if not self:authorized() then
    self:send_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
    return true
  end
  return self:mock_response()
end

local RESERVED = { models = true, completions = true, embeddings = true, responses = true,
  files = true, batches = true, moderations = true }

function Exchange:route()
  local req = self.req
  local path = req.path
  if path == "/_stats" then
    local stats = self.srv.stats
    local obj = { connections = stats.connections, requests = stats.requests,
      open_connections = self.srv.open, keys = stats.keys }
    local key = parse_query(req.query).key
    if key then obj.key, obj.count = key, stats.keys[key] or 0 end
    return self:send_full(200, encode_value(obj))
  end
  if path == "/v1/chat/completions" then return self:chat(nil) end
  local model = path:match("^/v1/([%w%._:%-]+)$")
  if model and not RESERVED[model] and req.method == "POST" then return self:chat(model) end
  if path == "/v1/models" or path:match("^/v1/models/") then
    if self.header_mock then
      self.mock = self.header_mock
      self:apply_key()
    end
    if req.method ~= "GET" then
      return self:send_error(405, "Method " .. req.method .. " not allowed; use GET",
        "invalid_request_error", "method_not_allowed")
    end
    if self:before_response() then return end
    return self:models(path:match("^/v1/models/(.+)$"))
  end
  return self:send_error(404, "Unknown request URL: " .. req.method .. " " .. path
    .. ". Please check the URL for typos.", "invalid_request_error", "unknown_url")
end

---------------------------------------------------------------------------------------------
-- Server
---------------------------------------------------------------------------------------------
local Server = {}
Server.__index = Server

local function log(srv, fmt, ...)
  if not srv.quiet then io.stderr:write("[llmchat-server] ", sformat(fmt, ...), "\n") end
end

function Server:handle(conn, req)
  local stats = self.stats
  stats.requests = stats.requests + 1
  local ex = setmetatable({ srv = self, conn = conn, req = req, mock = {},
    keep_alive = req.keep_alive, request_id = "req_" .. stats.requests }, Exchange)
  local header = req.headers["x-mock"]
  if header then
    local m = decode_json(header)
    if not is_tab(m) then
      ex:send_error(400, "x-mock header is not a JSON object", "invalid_request_error", "invalid_mock")
      return ex.keep_alive
    end
    ex.header_mock = m
  end
  ex:route()
  log(self, "conn %d %s %s -> %s", conn.id, req.method, req.target, tostring(ex.status))
  return ex.keep_alive
end

function Server:serve(conn)
  if self.tls then conn:handshake(gettime() + self.request_timeout) end
  while true do
    local req, err = read_request(self, conn)
    if not req then
      self.stats.requests = self.stats.requests + 1
      local ex = setmetatable({ srv = self, conn = conn, req = { headers = {} }, mock = {},
        keep_alive = false, request_id = "req_" .. self.stats.requests }, Exchange)
      ex:send_error(err.status, "Malformed request: " .. err.message, "invalid_request_error",
        "bad_request")
      log(self, "conn %d malformed request: %s", conn.id, err.message)
      return conn:drain(1)
    end
    if not self:handle(conn, req) then return end
  end
end

function Server:accept()
  while self.open < self.max_connections do
    local client = self.sock:accept()
    if not client then return end
    client:settimeout(0)
    pcall(client.setoption, client, "tcp-nodelay", true)
    local sock = client
    if self.tls then
      local wrapped, err = self.ssl.wrap(client, self.tls)
      if not wrapped then
        log(self, "TLS wrap failed: %s", tostring(err))
        client:close()
        return
      end
      wrapped:settimeout(0)
      sock = wrapped
    end
    self.stats.connections = self.stats.connections + 1
    self.open = self.open + 1
    local conn = new_conn(sock, self.stats.connections, self.request_timeout)
    local task = { conn = conn }
    task.co = coroutine.create(function() self:serve(conn) end)
    self.tasks[task] = true
    self:resume(task)
  end
end

function Server:finish(task, err)
  self.tasks[task] = nil
  self.open = self.open - 1
  if err ~= nil and err ~= CLOSED then
    local where = debug.traceback(task.co, tostring(err))
    log(self, "conn %d crashed: %s", task.conn.id, where)
    if not task.conn.sent_anything then -- best effort, never blocks
      pcall(task.conn.sock.send, task.conn.sock, "HTTP/1.1 500 Internal Server Error\r\n"
        .. "Content-Length: 0\r\nConnection: close\r\n\r\n")
    end
  end
  task.conn.sock:close()
end

function Server:resume(task, ...)
  local ok, kind, sock, deadline = coroutine.resume(task.co, ...)
  if not ok then return self:finish(task, kind) end
  if coroutine.status(task.co) == "dead" then return self:finish(task) end
  task.kind, task.sock, task.deadline = kind, sock, deadline
end

--- One turn of the loop: wait up to max_wait seconds for sockets and timers, run what is ready.
function Server:step(max_wait)
  local now = gettime()
  local readers, writers, by_sock = {}, {}, {}
  if self.sock and self.open < self.max_connections then readers[1] = self.sock end
  local wake = now + (max_wait or 1)
  for task in pairs(self.tasks) do
    if task.kind == "read" then
      readers[#readers + 1] = task.sock
      by_sock[task.sock] = task
    elseif task.kind == "write" then
      writers[#writers + 1] = task.sock
      by_sock[task.sock] = task
    end
    if task.deadline and task.deadline < wake then wake = task.deadline end
  end
  local r, w = socket.select(readers, writers, math.max(0, wake - now))
  local ready = {}
  for _, list in ipairs{ r or {}, w or {} } do
    for _, s in ipairs(list) do
      if s == self.sock then self:accept()
      elseif by_sock[s] then ready[#ready + 1] = by_sock[s] end
    end
  end
  for _, task in ipairs(ready) do
    if self.tasks[task] and task.kind ~= "sleep" then self:resume(task, true) end
  end
  now = gettime()
  local due = {}
  for task in pairs(self.tasks) do
    if task.deadline and task.deadline <= now then due[#due + 1] = task end
  end
  for _, task in ipairs(due) do
    if self.tasks[task] and task.deadline and task.deadline <= now then
      self:resume(task, task.kind == "sleep")
    end
  end
end

local function process_alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then
    local proc = io.open("/proc/self/stat", "r")
    if proc then proc:close(); return false end -- /proc works: pid is gone
    local rc = os.execute("kill -0 " .. floor(pid) .. " 2>/dev/null")
    return rc == true or rc == 0
  end
  local stat = f:read("*l") or ""
  f:close()
  local state = stat:match(".*%) (%a)")
  return state ~= "Z" and state ~= "X"
end
M.process_alive = process_alive

--- Run until close() (or until the parent process is gone, when opts.parent is a pid).
function Server:run(opts)
  opts = opts or {}
  local parent = num(opts.parent)
  local next_check = gettime() + 1
  while self.sock do
    self:step(1)
    if parent and gettime() >= next_check then
      if not process_alive(parent) then
        log(self, "parent %d is gone; exiting", parent)
        break
      end
      next_check = gettime() + 1
    end
  end
  self:close()
end

function Server:close()
  if self.sock then self.sock:close(); self.sock = nil end
  for task in pairs(self.tasks) do
    task.conn.sock:close()
    self.tasks[task] = nil
  end
  self.open = 0
end

--- Create a listening server. opts: host, port (0 = any free port), tls_cert, tls_key,
-- quiet, idle_timeout, request_timeout, max_body, max_connections.
-- Returns the server (srv.port, srv.url) or nil, err.
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({ host = opts.host or "127.0.0.1", quiet = opts.quiet,
    idle_timeout = opts.idle_timeout or 120, request_timeout = opts.request_timeout or 60,
    max_body = opts.max_body or 256 * 1024 * 1024,
    max_connections = opts.max_connections or 900, -- select() is limited to FD_SETSIZE
    tasks = {}, open = 0, stats = { connections = 0, requests = 0, keys = {} } }, Server)
  if opts.tls_cert or opts.tls_key then
    local ok, ssl = pcall(require, "ssl")
    if not ok then return nil, "TLS needs luasec: " .. tostring(ssl) end
    local ctx, err = ssl.newcontext{ mode = "server", protocol = "any",
      certificate = opts.tls_cert, key = opts.tls_key,
      options = { "all", "no_sslv2", "no_sslv3" } }
    if not ctx then return nil, "TLS setup failed: " .. tostring(err) end
    self.ssl, self.tls = ssl, ctx
  end
  local sock, err = socket.bind(self.host, opts.port or 8080, 1024)
  if not sock then return nil, err end
  sock:settimeout(0)
  self.sock = sock
  local _, port = sock:getsockname()
  self.port = tonumber(port)
  local host = self.host:find(":", 1, true) and ("[" .. self.host .. "]") or self.host
  self.url = (self.tls and "https" or "http") .. "://" .. host .. ":" .. self.port .. "/v1"
  return self
end

return M
