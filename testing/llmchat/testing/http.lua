--- llmchat.testing.http: HTTP/1.1 connections for the test server.
--
-- One coroutine per connection: a blocking-looking read or write yields
-- ("read"|"write", sock, deadline) or ("sleep", nil, deadline) to the server's select loop,
-- which resumes it with true (ready) or false (deadline passed).
local socket = require("socket")

local gettime = socket.gettime
local concat = table.concat

local M = {}

-- Raised inside a connection coroutine when the peer is gone (or we hung up on purpose):
-- the loop then closes the socket quietly.
M.CLOSED = setmetatable({}, { __tostring = function() return "connection closed" end })
local CLOSED = M.CLOSED

local RECV_SIZE = 65536
local MAX_LINE = 65536
local MAX_HEADERS = 200

M.REASONS = { [100] = "Continue", [200] = "OK", [201] = "Created", [202] = "Accepted",
  [204] = "No Content", [301] = "Moved Permanently", [302] = "Found", [304] = "Not Modified",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [406] = "Not Acceptable", [408] = "Request Timeout", [409] = "Conflict",
  [413] = "Payload Too Large", [415] = "Unsupported Media Type",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large", [500] = "Internal Server Error",
  [501] = "Not Implemented", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout", [529] = "Site is overloaded" }

local yield = coroutine.yield

local function wait_io(kind, sock, deadline)
  if not yield(kind, sock, deadline) then error(CLOSED, 0) end
end

function M.sleep(seconds)
  yield("sleep", nil, gettime() + math.max(0, seconds or 0))
end

---------------------------------------------------------------------------------------------
-- Connection: buffered non-blocking reads and writes on a plain or TLS socket
---------------------------------------------------------------------------------------------
local Conn = {}
Conn.__index = Conn

function M.new_conn(sock, id, write_timeout)
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

--- Read one request: a table {method, target, path, query, version, headers, header_list,
-- keep_alive, body}, or nil + {status, message} for a malformed one. limits: idle_timeout,
-- request_timeout, max_body. Raises CLOSED when the peer goes away or stays idle too long.
function M.read_request(limits, conn)
  local line, err
  repeat -- tolerate stray CRLFs between requests
    line, err = conn:read_line(gettime() + limits.idle_timeout)
    if not line then return bad(400, err) end
  until line ~= ""
  local deadline = gettime() + limits.request_timeout
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
  if length and length > limits.max_body then return bad(413, "request body too large") end
  if (chunked or (length or 0) > 0) and (h.expect or ""):lower() == "100-continue"
    and req.version >= 1.1 then
    conn:send("HTTP/1.1 100 Continue\r\n\r\n")
  end
  if chunked then
    local body, berr = read_chunked_body(conn, deadline, limits.max_body)
    if not body then return nil, berr end
    req.body = body
  elseif length and length > 0 then
    req.body = conn:read_exact(length, deadline)
  else
    req.body = ""
  end
  return req
end

function M.parse_query(q)
  local t = {}
  for k, v in (q or ""):gmatch("([^&=]+)=?([^&]*)") do
    t[k] = v:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end)
  end
  return t
end

--- The parts of a multipart/form-data body: a list of {name, filename, content_type, data},
-- or nil and a message.
function M.parse_multipart(content_type, body)
  local boundary = (content_type or ""):match('boundary="([^"]+)"')
    or (content_type or ""):match("boundary=([^;%s]+)")
  if not (content_type or ""):lower():find("^%s*multipart/form%-data") or not boundary then
    return nil, "expected a multipart/form-data body with a boundary"
  end
  local delim = "--" .. boundary
  local parts = {}
  local pos = body:find(delim, 1, true)
  if not pos then return nil, "multipart body has no boundary line" end
  pos = pos + #delim
  while true do
    if body:sub(pos, pos + 1) == "--" then return parts end -- closing delimiter
    local head_start = body:find("\r\n", pos, true)
    if not head_start then return nil, "truncated multipart body" end
    local head_end = body:find("\r\n\r\n", head_start, true)
    if not head_end then return nil, "truncated multipart part headers" end
    local head = body:sub(head_start + 2, head_end + 1)
    local next_at = body:find("\r\n" .. delim, head_end + 4, true)
    if not next_at then return nil, "multipart part without a closing boundary" end
    local part = { data = body:sub(head_end + 4, next_at - 1) }
    for hline in head:gmatch("([^\r\n]+)") do
      local hname, value = hline:match("^([^:]+):%s*(.*)$")
      if hname and hname:lower() == "content-disposition" then
        part.name = value:match('[; ]name="([^"]*)"')
        part.filename = value:match('filename="([^"]*)"')
      elseif hname and hname:lower() == "content-type" then
        part.content_type = value
      end
    end
    parts[#parts + 1] = part
    pos = next_at + 2 + #delim
  end
end

return M
