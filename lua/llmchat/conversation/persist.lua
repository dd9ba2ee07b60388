--- llmchat.conversation.persist: a conversation as a JSON file (format
-- version 1, documented in docs/conversation.md), written atomically.
--
-- Failures are error tables: kind "io" (the file cannot be opened, read,
-- written or renamed), "format" (the file is not a saved conversation: bad
-- JSON, no messages, an unknown version), "bad_request" (the conversation
-- holds text that cannot be encoded, such as invalid UTF-8).
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local tools = require("llmchat.conversation.tools")
local usage = require("llmchat.conversation.usage")

local M = {}

M.FORMAT_VERSION = 1

local floor = math.floor

local function random_suffix()
  local addr = tostring({}):match("0x(%x+)") or tostring({}):match("(%x+)$") or "0"
  return ("%d-%s-%d"):format(os.time(), addr, floor(math.random() * 1e9))
end

local function io_error(message, path)
  return errors.new({ kind = "io", message = message, path = path })
end

--- Writes text to path atomically: a temporary file in the same directory,
-- then a rename over path, so a crash leaves either the old file or the new
-- one, never half of one. Returns true, or nil and an error of kind "io".
function M.write_file(path, text)
  local tmp = path .. ".tmp-" .. random_suffix()
  local f, oerr = io.open(tmp, "wb")
  if not f then return nil, io_error("cannot save: " .. tostring(oerr), path) end
  local wok, werr = f:write(text, "\n")
  if wok then wok, werr = f:flush() end
  local cok, cerr = f:close()
  if not wok or not cok then
    os.remove(tmp)
    return nil, io_error("cannot save " .. path .. ": " .. tostring(werr or cerr), path)
  end
  local rok = os.rename(tmp, path)
  if not rok then
    local rerr
    -- Windows will not rename over an existing file: replace it (not atomic there)
    os.remove(path)
    rok, rerr = os.rename(tmp, path)
    if not rok then
      os.remove(tmp)
      return nil, io_error("cannot save " .. path .. ": " .. tostring(rerr), path)
    end
  end
  return true
end

--- Encodes a saved table and writes it to path. Returns true, or nil and err.
function M.save(tbl, path)
  local ok, text, eerr = pcall(json.encode, tbl)
  if not ok or not text then
    return nil, errors.new({ kind = "bad_request", path = path,
      message = "cannot encode the conversation: " .. tools.error_text(ok and eerr or text) })
  end
  return M.write_file(path, text)
end

--- Reads and decodes a saved file. Returns the table, or nil and err.
function M.read(path)
  local f, oerr = io.open(path, "rb")
  if not f then return nil, io_error("cannot open conversation: " .. tostring(oerr), path) end
  local text, rerr = f:read("*a")
  f:close()
  if not text then return nil, io_error("cannot read " .. path .. ": " .. tostring(rerr), path) end
  local data, derr = json.decode(text)
  if data == nil then
    return nil, errors.new({ kind = "format", path = path, message = "cannot load " .. path .. ": " .. tostring(derr) })
  end
  return data
end

--- Checks a decoded table is a saved conversation this version reads.
-- Returns true, or nil and an error of kind "format".
function M.check(data)
  if type(data) ~= "table" then
    return nil, errors.new({ kind = "format", message = "not a saved conversation (expected a JSON object)" })
  end
  if data.version ~= M.FORMAT_VERSION then
    return nil, errors.new({ kind = "format",
      message = "unsupported conversation file version " .. tostring(data.version) })
  end
  if type(data.messages) ~= "table" then
    return nil, errors.new({ kind = "format", message = "not a saved conversation (no messages array)" })
  end
  if data.api ~= nil and data.api ~= "chat" and data.api ~= "responses" then
    return nil, errors.new({ kind = "format", message = "unknown api in the saved conversation: " .. tostring(data.api) })
  end
  local function bad(field, want)
    return nil, errors.new({ kind = "format",
      message = ("not a saved conversation ('%s' is a %s, expected %s)"):format(field, type(data[field]), want) })
  end
  for _, k in ipairs{ "model", "system_role" } do
    if data[k] ~= nil and type(data[k]) ~= "string" then return bad(k, "a string") end
  end
  if data.system ~= nil and type(data.system) ~= "string" and type(data.system) ~= "table" then
    return bad("system", "a string")
  end
  for _, k in ipairs{ "max_tool_rounds", "max_context_tokens" } do
    if data[k] ~= nil and (type(data[k]) ~= "number" or data[k] < 0) then return bad(k, "a number >= 0") end
  end
  for _, m in ipairs(data.messages) do
    if type(m) ~= "table" then return bad("messages", "an array of objects") end
  end
  return true
end

-- llmchat's own per-call options are not request fields and are never saved
-- (headers may carry credentials): the client's list, and these in case a
-- client does not publish one.
local NOT_SAVED = {
  headers = true, timeout = true, connect_timeout = true, idle_timeout = true, max_retries = true,
  max_response_size = true, retry_base_delay = true, retry_max_delay = true, max_retry_after = true,
  on_delta = true, on_done = true, on_event = true, extra_body = true, schema = true, schema_name = true,
}

local function saved_param(k, v)
  if type(v) == "function" or NOT_SAVED[k] then return false end
  local client_mod = package.loaded["llmchat.client"]
  local own = type(client_mod) == "table" and client_mod.OWN
  return not (type(own) == "table" and own[k])
end

--- The conversation as a JSON-ready table (what save() writes).
function M.snapshot(conv, defaults)
  local params
  for k, v in pairs(conv.params) do
    if saved_param(k, v) then
      params = params or {}
      params[k] = v
    end
  end
  return {
    version = M.FORMAT_VERSION, api = conv.api ~= "chat" and conv.api or nil,
    model = conv.model, system = conv.system,
    system_role = conv.system_role ~= "system" and conv.system_role or nil,
    messages = conv._history:copy_items(), tools = conv._tools:definitions(), usage = conv._usage,
    max_tool_rounds = conv.max_tool_rounds ~= defaults.max_tool_rounds and conv.max_tool_rounds or nil,
    max_context_tokens = conv.max_context_tokens, params = params,
  }
end

--- A conversation from a table written by snapshot(): new(opts) builds it.
-- opts.tools: handlers to re-attach, { name = handler } or a list of tool
-- specs (which replace the saved definitions of the same name);
-- opts.on_tool_call / on_tool_result: the hooks. Returns the conversation,
-- or nil and an error of kind "format".
function M.restore(new, data, client, opts)
  local ok, err = M.check(data)
  if not ok then return nil, err end
  opts = opts or {}
  local conv = new({ client = client, api = data.api, model = data.model, system = data.system,
    system_role = data.system_role, max_tool_rounds = data.max_tool_rounds,
    max_context_tokens = data.max_context_tokens,
    on_tool_call = opts.on_tool_call, on_tool_result = opts.on_tool_result })
  for k, v in pairs(type(data.params) == "table" and data.params or {}) do conv.params[k] = v end
  for _, m in ipairs(data.messages) do conv._history:adopt(m) end
  for _, t in ipairs(type(data.tools) == "table" and data.tools or {}) do
    if type(t) == "table" and type(t.name) == "string" then
      conv:tool({ name = t.name, description = t.description, parameters = t.parameters, strict = t.strict })
    end
  end
  local handlers = opts.tools or {}
  if #handlers > 0 then
    for _, spec in ipairs(handlers) do conv:tool(spec) end
  else
    for name, fn in pairs(handlers) do conv:tool({ name = name, handler = fn }) end
  end
  conv._usage = usage.restore(data.usage)
  return conv
end

return M
