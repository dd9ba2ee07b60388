--- Busted harness for the local server: start one in the background, talk to it, stop it.
--
--   local server = require("support.server")
--   local srv = server.start{ tls = false }   -- srv.port, srv.url, srv.base, srv.stop()
--   local res = server.request(srv, "POST", "/v1/chat/completions", { messages = {...} })
--   -- res.status, res.headers (lower-case names), res.body, res.json
--   srv.stop()
--
-- The server gets --parent <pid of this Lua process>, so it exits by itself when busted
-- does, even if a spec forgets stop().
local socket = require("socket")
local cjson = require("cjson")

local M = {}

M.lua = os.getenv("LLMCHAT_SERVER_LUA") or "lua5.4"

--- The interpreter under test and its module path, for specs that start a child process:
-- `make test LUA=luajit` sets LLMCHAT_LUA and LUA_CPATH (its own build directory).
M.child_lua = os.getenv("LLMCHAT_LUA") or "lua5.4"
M.child_cpath = os.getenv("LUA_CPATH") or "./?.so;;"
--- "LUA_CPATH='...' <lua>": the start of a shell command that runs the interpreter under test
function M.child()
  return "LUA_CPATH='" .. M.child_cpath .. "' " .. M.child_lua
end

--- os.execute(cmd) as a boolean on every version: true when the command exited 0
-- (Lua 5.1 and LuaJIT return the status number, truthy even when the command failed)
function M.execute(cmd)
  local a, _, code = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true and (code == nil or code == 0)
end

-- the repository root: this file is <root>/spec/support/server.lua
local function repo_root()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  return src:match("^(.*)/spec/support/[^/]*$") or "."
end
M.root = repo_root()

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- pid of this Lua process (the busted runner), from /proc/self/stat
function M.self_pid()
  local stat = read_file("/proc/self/stat")
  return stat and tonumber(stat:match("^(%d+)"))
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- One work directory per busted run (keyed by its pid), so the certificate is generated
-- once per run even though busted reloads this module for every spec file.
local function work_dir()
  local dir = (os.getenv("TMPDIR") or "/tmp") .. "/llmchat-spec-" .. (M.self_pid() or os.time())
  if not exists(dir .. "/.") then os.execute("mkdir -p " .. quote(dir)) end
  return dir
end

--- A self-signed certificate for 127.0.0.1/localhost: returns cert path, key path.
function M.certificate()
  local dir = work_dir()
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  if not (exists(cert) and exists(key)) then
    local cmd = "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1"
      .. " -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' -days 2"
      .. " -keyout " .. quote(key .. ".tmp") .. " -out " .. quote(cert .. ".tmp")
      .. " >/dev/null 2>&1"
    local rc = os.execute(cmd)
    if not (rc == true or rc == 0) then error("openssl failed to make a test certificate") end
    os.rename(key .. ".tmp", key)
    os.rename(cert .. ".tmp", cert)
  end
  return cert, key
end

local counter = 0

--- Start a server. opts.tls: serve HTTPS with a generated certificate (srv.ca_file).
-- opts.parent: the pid the server lives with (default: this process). opts.args: extra
-- command-line arguments. Raises if it does not come up within 10 s.
function M.start(opts)
  opts = opts or {}
  local dir = work_dir()
  counter = counter + 1
  local name = string.format("%s/server-%d-%d", dir, counter, math.floor(socket.gettime() * 1000) % 1000000)
  local port_file, pid_file, log_file = name .. ".port", name .. ".pid", name .. ".log"
  local args = { "--port", "0", "--port-file", quote(port_file), "--quiet" }
  local parent = opts.parent or M.self_pid()
  if parent then args[#args + 1] = "--parent " .. math.floor(parent) end
  local cert
  if opts.tls then
    local key
    cert, key = M.certificate()
    args[#args + 1] = "--tls-cert " .. quote(cert) .. " --tls-key " .. quote(key)
  end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = quote(a) end
  local inner = "echo $$ > " .. quote(pid_file) .. "; exec " .. M.lua .. " "
    .. quote(M.root .. "/bin/llmchat-server") .. " " .. table.concat(args, " ")
  os.execute("sh -c " .. quote(inner) .. " >" .. quote(log_file) .. " 2>&1 &")

  local deadline = socket.gettime() + 10
  local port
  while socket.gettime() < deadline do
    port = tonumber(read_file(port_file) or "")
    if port then break end
    socket.sleep(0.02)
  end
  local server_pid = tonumber(read_file(pid_file) or "")
  if not port then
    if server_pid then os.execute("kill " .. server_pid .. " 2>/dev/null") end
    error("llmchat-server did not start within 10 s; log:\n" .. (read_file(log_file) or ""))
  end

  local scheme = opts.tls and "https" or "http"
  local srv = { port = port, pid = server_pid, log_file = log_file, tls = opts.tls and true or false,
    base = scheme .. "://127.0.0.1:" .. port, ca_file = cert }
  srv.url = srv.base .. "/v1"
  local stopped = false
  function srv.stop()
    if stopped then return end
    stopped = true
    if server_pid then os.execute("kill " .. server_pid .. " 2>/dev/null") end
    os.remove(port_file)
    os.remove(pid_file)
    os.remove(log_file)
  end
  return srv
end

--- One HTTP(S) request with luasocket/luasec (Connection: close).
-- body: a string, or a table encoded as JSON. Returns { status, headers, body, json }
-- or nil, err.
function M.request(srv, method, path, body, headers)
  local ltn12 = require("ltn12")
  local hdrs = {}
  for k, v in pairs(headers or {}) do hdrs[k:lower()] = v end
  if type(body) == "table" then body = cjson.encode(body) end
  if body then
    hdrs["content-length"] = tostring(#body)
    hdrs["content-type"] = hdrs["content-type"] or "application/json"
  end
  local chunks = {}
  local req = { url = srv.base .. path, method = method, headers = hdrs,
    source = body and ltn12.source.string(body) or nil, sink = ltn12.sink.table(chunks) }
  local ok, status, resp_headers
  if srv.tls then
    req.cafile, req.verify, req.protocol = srv.ca_file, "peer", "any"
    ok, status, resp_headers = require("ssl.https").request(req)
  else
    ok, status, resp_headers = require("socket.http").request(req)
  end
  if not ok then return nil, status end
  local res = { status = status, headers = resp_headers or {}, body = table.concat(chunks) }
  local decoded_ok, decoded = pcall(cjson.decode, res.body)
  if decoded_ok then res.json = decoded end
  return res
end

--- The events of an SSE body with their types: a list of { event = name or nil, data = text }.
function M.sse_events(body)
  local out, name, data = {}, nil, nil
  for line in ((body or ""):gsub("\r\n", "\n") .. "\n"):gmatch("([^\n]*)\n") do
    if line == "" then
      if data then out[#out + 1] = { event = name, data = data } end
      name, data = nil, nil
    elseif line:sub(1, 1) ~= ":" then
      local field, value = line:match("^([^:]*):? ?(.*)$")
      if field == "event" then name = value
      elseif field == "data" then data = data and (data .. "\n" .. value) or value end
    end
  end
  return out
end

--- Raw HTTP/1.1 over one TCP socket, to see keep-alive and framing as they are on the wire.
function M.connect(port, timeout)
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(timeout or 10)
  return c
end

--- Write one request on a raw socket (body: a string; headers: a table).
function M.send_request(c, method, path, body, headers)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  assert(c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")))
end

--- Read one response from a raw socket: { status, headers (lower-case names; a repeated
-- header's values joined with ", "), header_list = {{name, value}, ...}, body (de-chunked,
-- still content-encoded) }, or nil, err.
function M.read_response(c)
  local status_line, err = c:receive("*l")
  if not status_line then return nil, err end
  local res = { status = tonumber(status_line:match("^HTTP/1%.%d (%d+)")), headers = {},
    header_list = {}, status_line = status_line }
  if not res.status then return nil, "not HTTP: " .. status_line end
  while true do
    local line, lerr = c:receive("*l")
    if not line then return nil, lerr end
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    k = k:lower()
    res.header_list[#res.header_list + 1] = { k, v }
    res.headers[k] = res.headers[k] and (res.headers[k] .. ", " .. v) or v
  end
  if res.headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local line, lerr = c:receive("*l")
      if not line then return nil, lerr end
      local size = tonumber(line, 16)
      if size == 0 then assert(c:receive("*l")); break end
      parts[#parts + 1] = assert(c:receive(size))
      assert(c:receive("*l"))
    end
    res.body = table.concat(parts)
  else
    local n = tonumber(res.headers["content-length"] or "0")
    res.body = n > 0 and assert(c:receive(n)) or ""
  end
  return res
end

--- A multipart/form-data body: fields = list of { name, value } or { name, data, filename }.
-- Returns the body and its Content-Type.
function M.multipart(fields)
  local boundary = "----llmchat-spec-boundary-7d3a"
  local out = {}
  for _, f in ipairs(fields) do
    out[#out + 1] = "--" .. boundary .. "\r\n"
    if f.filename then
      out[#out + 1] = 'Content-Disposition: form-data; name="' .. f.name .. '"; filename="'
        .. f.filename .. '"\r\nContent-Type: application/jsonl\r\n\r\n' .. f.data .. "\r\n"
    else
      out[#out + 1] = 'Content-Disposition: form-data; name="' .. f.name .. '"\r\n\r\n'
        .. f.value .. "\r\n"
    end
  end
  out[#out + 1] = "--" .. boundary .. "--\r\n"
  return table.concat(out), "multipart/form-data; boundary=" .. boundary
end

--- The data payloads of an SSE body, in order ("[DONE]" included).
function M.sse_data(body)
  local out = {}
  for line in (body or ""):gmatch("[^\r\n]+") do
    local data = line:match("^data: ?(.*)$")
    if data then out[#out + 1] = data end
  end
  return out
end

return M
