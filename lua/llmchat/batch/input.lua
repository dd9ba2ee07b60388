--- llmchat.batch.input: the JSONL a batch uploads, written to a file line by line.
--
-- Requests come as a Lua array or as a JSONL file. Each is either a request in the
-- form client:chat takes ({ messages =, model =, custom_id = }) or a line of the Batch
-- API's own form ({ custom_id =, method = "POST", url =, body = {...} }): a table with a
-- `body` table is the second. Every line gets a custom_id (generated when absent:
-- "<position>-<token>", the token random per batch), duplicates are refused, and the
-- provider's limits are checked as the file is written, so an input over them is refused
-- before anything is sent.
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local endpoints = require("llmchat.endpoints")

local M = {}

--- The provider's limits (OpenAI's Batch API: 50,000 requests and 200 MB per input file,
-- 50,000 embedding inputs per /v1/embeddings batch). The line limit is llmchat's: no
-- provider documents one, and a 10 MB request is beyond any model's context.
M.LIMITS = {
  requests = 50000,
  file_bytes = 200 * 1024 * 1024,
  line_bytes = 10 * 1024 * 1024,
  embedding_inputs = 50000,
}

-- the endpoints whose bodies and results llmchat shapes; any other /v1/ path is passed as is
M.ENDPOINTS = {
  ["/v1/chat/completions"] = endpoints.chat,
  ["/v1/responses"] = endpoints.responses,
  ["/v1/embeddings"] = endpoints.embeddings,
}
local SHORT = { chat = "/v1/chat/completions", responses = "/v1/responses",
  embeddings = "/v1/embeddings" }

--- The endpoint path for `name` ("/v1/chat/completions", or chat | responses | embeddings).
function M.endpoint_path(name, level)
  if name == nil then return "/v1/chat/completions" end
  if type(name) ~= "string" then error("llmchat.batch: 'endpoint' must be a string", level + 1) end
  name = SHORT[name] or name
  if not name:find("^/v1/[%w%-_/%.]+$") then
    error(("llmchat.batch: 'endpoint' must be a path such as /v1/chat/completions, got %q"):format(name),
      level + 1)
  end
  return name
end

--- A token for generated custom_ids: random, so that ids of separate batches differ.
function M.token()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(6)
  if f then f:close() end
  if bytes and #bytes == 6 then
    return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
  end
  -- no /dev/urandom: the clock, an address and the PRNG, folded
  local seed, h = tostring(os.time()) .. tostring({}) .. tostring(math.random()), 5381
  for i = 1, #seed do h = (h * 33 + seed:byte(i)) % 4294967296 end
  return ("%08x"):format(h)
end

local function refuse(message, extra)
  local t = { kind = "bad_request", message = "batch: " .. message }
  for k, v in pairs(extra or {}) do t[k] = v end
  return nil, errors.new(t)
end

local function count_inputs(body)
  local input = body.input
  if type(input) == "table" then
    local n = #input
    return n > 0 and n or 1
  end
  return 1
end

--- A writer of the input file. o: { path = where to write, endpoint = "/v1/...",
-- client, limits = {...}, token = }. w:add(item, where) for each request (where names it
-- in messages: "request 3", "line 7"); w:finish() -> info | nil, err. After a refusal
-- the file is removed.
function M.writer(o)
  local f, ferr = io.open(o.path, "wb")
  if not f then error("llmchat.batch: cannot write the input file: " .. tostring(ferr), 3) end
  local limits = o.limits
  local ep = M.ENDPOINTS[o.endpoint]
  local w = {
    n = 0, bytes = 0, inputs = 0, token = o.token, generated = 0,
    seen = {},     -- custom_id -> position
    ids = {},      -- position -> custom_id given by the caller (generated ones are not kept)
  }
  local failed

  local function fail(msg, extra)
    if f then f:close(); f = nil end
    os.remove(o.path)
    local _, e = refuse(msg, extra)
    failed = e
    return nil, e
  end

  function w.add(item, where)
    if failed then return nil, failed end
    local n = w.n + 1
    if n > limits.requests then
      return fail(("more than %d requests (the provider's limit for one batch)"):format(limits.requests),
        { limit = "requests" })
    end
    if type(item) ~= "table" then
      return fail(("%s is a %s, not a table"):format(where, type(item)))
    end
    local cid = item.custom_id
    local body
    if type(item.body) == "table" then
      body = item.body
      if item.method ~= nil and item.method ~= "POST" then
        return fail(("%s: 'method' must be \"POST\""):format(where))
      end
      if item.url ~= nil and item.url ~= o.endpoint then
        return fail(("%s: url %s is not the batch's endpoint %s"):format(where, tostring(item.url),
          o.endpoint))
      end
      if body.model == nil and o.client.model then
        local copy = {}
        for k, v in pairs(body) do copy[k] = v end
        copy.model = o.client.model
        body = copy
      end
    else
      if ep then body = ep.body(o.client, item, false)
      else body = endpoints.body_of(o.client, item) end
      body.custom_id = nil
      body.stream = nil
    end
    if cid == nil then
      cid = n .. "-" .. w.token
      w.generated = w.generated + 1
    elseif type(cid) ~= "string" or cid == "" then
      return fail(("%s: custom_id must be a non-empty string"):format(where))
    else
      w.ids[n] = cid
    end
    local prev = w.seen[cid]
    if prev then
      return fail(("%s: custom_id %q is also the custom_id of request %d (each must be unique)"):format(
        where, cid, prev), { custom_id = cid })
    end
    w.seen[cid] = n
    if o.endpoint == "/v1/embeddings" then
      w.inputs = w.inputs + count_inputs(body)
      if w.inputs > limits.embedding_inputs then
        return fail(("more than %d embedding inputs (the provider's limit for one batch)"):format(
          limits.embedding_inputs), { limit = "embedding_inputs" })
      end
    end
    local text, eerr = json.encode({ custom_id = cid, method = "POST", url = o.endpoint, body = body })
    if not text then return fail(("%s: %s"):format(where, tostring(eerr))) end
    if #text > limits.line_bytes then
      return fail(("%s is %d bytes as a JSONL line, over the limit of %d bytes"):format(where, #text,
        limits.line_bytes), { limit = "line_bytes", custom_id = cid })
    end
    w.bytes = w.bytes + #text + 1
    if w.bytes > limits.file_bytes then
      return fail(("the input file would exceed %d bytes (the provider's limit; %s takes it to %d)"):format(
        limits.file_bytes, where, w.bytes), { limit = "file_bytes" })
    end
    local ok, werr = f:write(text, "\n")
    if not ok then return fail("cannot write the input file: " .. tostring(werr)) end
    w.n = n
    return true
  end

  function w.finish()
    if failed then return nil, failed end
    if w.n == 0 then return fail("no requests") end
    local ok, cerr = f:close()
    f = nil
    if not ok then
      os.remove(o.path)
      return refuse("cannot write the input file: " .. tostring(cerr))
    end
    return w
  end

  function w.abort()
    if f then f:close(); f = nil end
    os.remove(o.path)
  end

  return w
end

--- Writes every request of `requests` (an array, or the path of a JSONL file) through a
-- writer; returns the writer's info or nil, err.
function M.build(requests, o)
  local w = M.writer(o)
  if type(requests) == "table" then
    local n = #requests
    if n > o.limits.requests then
      w.abort()
      return refuse(("%d requests, over the provider's limit of %d for one batch"):format(n,
        o.limits.requests), { limit = "requests" })
    end
    for i = 1, n do
      local ok, err = w.add(requests[i], "request " .. i)
      if not ok then return nil, err end
    end
    return w.finish()
  end
  local f, ferr = io.open(requests, "rb")
  if not f then
    w.abort()
    return refuse("cannot read " .. requests .. ": " .. tostring(ferr))
  end
  local lineno = 0
  for line in f:lines() do
    lineno = lineno + 1
    line = line:gsub("\r$", "")
    if line:find("%S") then
      local where = "line " .. lineno .. " of " .. requests
      if #line > o.limits.line_bytes then
        f:close()
        w.abort()
        return refuse(("%s is %d bytes, over the limit of %d bytes"):format(where, #line,
          o.limits.line_bytes), { limit = "line_bytes" })
      end
      local item, derr = json.decode(line)
      if type(item) ~= "table" then
        f:close()
        w.abort()
        return refuse(("%s is not a JSON object (%s)"):format(where, tostring(derr or "not an object")))
      end
      local ok, err = w.add(item, where)
      if not ok then f:close(); return nil, err end
    end
  end
  f:close()
  return w.finish()
end

return M
