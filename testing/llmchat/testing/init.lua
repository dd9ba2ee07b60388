--- llmchat.testing: a local OpenAI-compatible server for tests and offline work.
--
-- Pure Lua + luasocket (+ luasec for TLS) + lua-cjson (decoding only). One coroutine per
-- connection, driven by a socket.select loop: no threads, no forks. The model is a
-- deterministic echo, and every odd thing a real provider does (errors, drops, stalls,
-- split SSE events, tool-call fragments ...) is switched on per request by a "mock" object:
-- see docs/server.md. It never loads llmchat itself.
--
--   local testing = require("llmchat.testing")
--   local srv = assert(testing.new{ host = "127.0.0.1", port = 0 })
--   print(srv.port); srv:run()
--
-- Concepts, one module each: http (connections, requests), writers (the Exchange and its
-- response writers), json (the JSON writer), scenario (the mock language), model (the
-- deterministic model), chat, responses, embeddings, store (files and batches), gzip.
local socket = require("socket")
local json = require("llmchat.testing.json")
local http = require("llmchat.testing.http")
local util = require("llmchat.testing.util")
local Exchange = require("llmchat.testing.writers")
require("llmchat.testing.scenario")
require("llmchat.testing.chat")
require("llmchat.testing.responses")
require("llmchat.testing.embeddings")
local store = require("llmchat.testing.store")

local gettime = socket.gettime
local sformat = string.format
local floor = math.floor
local num = util.num
local CLOSED = http.CLOSED

local M = { _VERSION = "0.2.0" }

M.null = json.null
M.array = json.array
M.encode = function(v) return json.encode(v) end

---------------------------------------------------------------------------------------------
-- Routing
---------------------------------------------------------------------------------------------
local RESERVED = { models = true, completions = true, embeddings = true, responses = true,
  files = true, batches = true, moderations = true }

function Exchange:route()
  local req = self.req
  local path = req.path
  if path == "/_stats" then
    local stats = self.srv.stats
    local obj = { connections = stats.connections, requests = stats.requests,
      open_connections = self.srv.open, keys = stats.keys }
    local key = http.parse_query(req.query).key
    if key then obj.key, obj.count = key, stats.keys[key] or 0 end
    return self:send_full(200, json.encode(obj))
  end
  if path == "/v1/chat/completions" then return self:chat(nil) end
  if path == "/v1/responses" then return self:responses() end
  if path == "/v1/embeddings" then return self:embeddings() end
  if path == "/v1/files" or path:match("^/v1/files/") or path == "/v1/batches"
    or path:match("^/v1/batches/") then
    return self:store_route()
  end
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
  return self:not_found()
end

function Exchange:not_found()
  local req = self.req
  return self:send_error(404, "Unknown request URL: " .. req.method .. " " .. req.path
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
  local ex = Exchange.new{ srv = self, conn = conn, req = req, mock = {},
    keep_alive = req.keep_alive, request_id = "req_" .. stats.requests }
  local header = req.headers["x-mock"]
  if header then
    local m = json.decode(header)
    if type(m) ~= "table" then
      ex:send_error(400, "x-mock header is not a JSON object", "invalid_request_error", "invalid_mock")
      return ex.keep_alive
    end
    ex.header_mock = m
  end
  ex:route()
  log(self, "conn %d %s %s -> %s", conn.id, req.method, req.target, tostring(ex.status))
  -- trailing bytes after a short delay (in the same write when there is no delay)
  if ex.status and not ex.trailing_sent and ex.keep_alive then
    local bytes = ex:trailing_bytes()
    if bytes then
      http.sleep(num(ex.mock.trailing_delay) or 0)
      conn:send(bytes)
    end
  end
  return ex.keep_alive
end

function Server:serve(conn)
  if self.tls then conn:handshake(gettime() + self.request_timeout) end
  while true do
    local req, err = http.read_request(self, conn)
    if not req then
      self.stats.requests = self.stats.requests + 1
      local ex = Exchange.new{ srv = self, conn = conn, req = { headers = {} }, mock = {},
        keep_alive = false, request_id = "req_" .. self.stats.requests }
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
    local conn = http.new_conn(sock, self.stats.connections, self.request_timeout)
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
-- quiet, idle_timeout, request_timeout, max_body, max_connections, batch_seconds.
-- Returns the server (srv.port, srv.url) or nil, err.
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({ host = opts.host or "127.0.0.1", quiet = opts.quiet,
    idle_timeout = opts.idle_timeout or 120, request_timeout = opts.request_timeout or 60,
    max_body = opts.max_body or 256 * 1024 * 1024,
    max_connections = opts.max_connections or 900, -- select() is limited to FD_SETSIZE
    tasks = {}, open = 0, stats = { connections = 0, requests = 0, keys = {} } }, Server)
  self.store = store.new{ batch_seconds = num(opts.batch_seconds) }
  self.responses = { by_id = {}, order = {} }
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
