--- llmchat.conversation.tools: a conversation's tool registry, and running
-- the model's tool calls against it.
--
-- Tool trouble (bad JSON arguments, an unknown tool, a tool without a
-- handler, a handler that raises, a vetoed call) becomes the call's result
-- text ("error: ..."), told to the model; only the caller's own hooks
-- (on_tool_call, on_tool_result) may raise, and their error is handed back
-- for the turn to raise once it is abandoned.
local json = require("llmchat.json")
local message = require("llmchat.message")
local loop = require("llmchat.loop")

local M = {}

local deep_copy = message.deep_copy

---------------------------------------------------------------------------
-- the registry

local Registry = {}
Registry.__index = Registry
Registry.__name = "llmchat.conversation.tools"

--- An empty registry.
function M.new()
  return setmetatable({ list = {}, index = {} }, Registry)
end

-- A tool spec (ours, or the chat API's { type = "function", ["function"] = {...} })
-- -> { name, description, parameters, strict, handler }. Misuse raises at
-- `level` as error() counts it from normalize's caller.
local function normalize(spec, where, level)
  level = level + 1
  if type(spec) ~= "table" then error(where .. ": expected a table", level) end
  local fn = spec.type == "function" and type(spec["function"]) == "table" and spec["function"] or spec
  local name = fn.name
  if type(name) ~= "string" or not name:find("^[%w_%-]+$") or #name > 64 then
    error(where .. ": tool name must be 1-64 letters, digits, _ or -", level)
  end
  local handler = spec.handler or fn.handler
  if handler ~= nil and type(handler) ~= "function" then
    error(where .. ": handler of tool '" .. name .. "' must be a function", level)
  end
  if fn.description ~= nil and type(fn.description) ~= "string" then
    error(where .. ": description of tool '" .. name .. "' must be a string", level)
  end
  if fn.parameters ~= nil and type(fn.parameters) ~= "table" then
    error(where .. ": parameters of tool '" .. name .. "' must be a table (a JSON schema)", level)
  end
  return { name = name, description = fn.description, parameters = fn.parameters,
    strict = fn.strict, handler = handler }
end

--- Adds a tool, or replaces the one of that name. A spec without description,
-- parameters or strict keeps the old tool's (how handlers are re-attached to
-- definitions restored by load). `level`: error()'s level for misuse, as
-- seen from the caller (default 1).
function Registry:add(spec, where, level)
  local t = normalize(spec, where or "conversation:tool", (level or 1) + 1)
  local old = self.index[t.name]
  if old then
    if t.description == nil then t.description = old.description end
    if t.parameters == nil then t.parameters = old.parameters end
    if t.strict == nil then t.strict = old.strict end
    for i, x in ipairs(self.list) do
      if x == old then self.list[i] = t end
    end
  else
    self.list[#self.list + 1] = t
  end
  self.index[t.name] = t
  return t
end

--- Removes a tool by name; true if there was one.
function Registry:remove(name)
  local old = self.index[name]
  if not old then return false end
  self.index[name] = nil
  for i, x in ipairs(self.list) do
    if x == old then table.remove(self.list, i) break end
  end
  return true
end

--- The tool of that name, or nil.
function Registry:get(name)
  return self.index[name]
end

--- The names, in the order the tools are sent.
function Registry:names()
  local out = {}
  for i, t in ipairs(self.list) do out[i] = t.name end
  return out
end

--- An independent copy (handlers shared, definitions copied).
function Registry:copy()
  local c = M.new()
  for i, t in ipairs(self.list) do
    local nt = deep_copy(t)
    c.list[i] = nt
    c.index[nt.name] = nt
  end
  return c
end

--- The definitions without handlers, for a saved file.
function Registry:definitions()
  local out = json.array()
  for i, t in ipairs(self.list) do
    out[i] = { name = t.name, description = t.description, parameters = t.parameters, strict = t.strict }
  end
  return out
end

--- The tools as the chat API takes them: [{ type = "function", function = {...} }], or nil.
function Registry:chat_tools()
  if #self.list == 0 then return nil end
  local out = json.array()
  for i, t in ipairs(self.list) do
    out[i] = { type = "function", ["function"] = { name = t.name, description = t.description,
      parameters = t.parameters, strict = t.strict } }
  end
  return out
end

--- The tools as the Responses API takes them (flat): [{ type = "function", name =, ... }], or nil.
function Registry:responses_tools()
  if #self.list == 0 then return nil end
  local out = json.array()
  for i, t in ipairs(self.list) do
    out[i] = { type = "function", name = t.name, description = t.description,
      parameters = t.parameters, strict = t.strict }
  end
  return out
end

---------------------------------------------------------------------------
-- running a call

local function strip_position(msg)
  -- "file.lua:12: boom" -> "boom": the model needs the reason, not our file names
  return (msg:gsub("^[^\n]-:%d+: ", ""))
end

--- The text of an error value: a string without its position, an error
-- table's message, or tostring.
local function error_text(e)
  if type(e) == "string" then return strip_position(e) end
  if type(e) == "table" and type(e.message) == "string" then return e.message end
  return tostring(e)
end
M.error_text = error_text

-- A handler's return values -> the result text.
local function result_text(r, rerr)
  if r == nil and rerr ~= nil then return "error: " .. error_text(rerr) end  -- the Lua idiom: nil, message
  if type(r) == "string" then return r end
  if type(r) == "table" then
    local eok, s, eerr = pcall(json.encode, r)
    if eok and s then return s end
    return "error: the tool's result could not be encoded as JSON: " .. error_text(eok and eerr or s)
  end
  if r == nil then return "null" end
  return tostring(r)                          -- numbers and booleans are JSON already
end

--- Runs one tool call of the model: tc = { id =, ["function"] = { name =, arguments = } }.
-- hooks: on_tool_call (approve / veto), on_tool_result (see the text);
-- conversation: passed to the handler in `call`. Returns the result text,
-- or nil and the error a hook raised. Handlers and hooks run under
-- loop.pcall: inside llmchat.run they may yield (call the client) on every Lua.
function M.run(registry, tc, hooks, conversation)
  local fn = type(tc["function"]) == "table" and tc["function"] or {}
  local name, raw = fn.name, fn.arguments
  local call = { id = tc.id, name = name, arguments = raw or "", conversation = conversation }
  local text
  local tool = type(name) == "string" and registry.index[name] or nil
  local args, derr
  if raw == nil or raw == "" then raw, args = nil, {}  -- some providers send "" for no arguments
  else args, derr = json.decode(raw) end
  call.args = args

  if not tool then
    text = ("error: unknown tool '%s'"):format(tostring(name))
  elseif derr or type(args) ~= "table" or (raw and not raw:find("^%s*{")) then
    text = "error: the arguments are not a valid JSON object: "
      .. tostring(derr or (raw and raw:find("^%s*%[") and "got an array") or ("got a JSON " .. type(args)))
    call.args = nil
  elseif not tool.handler then
    text = ("error: tool '%s' has no handler attached"):format(name)
  else
    local approved, reason = true, nil
    if hooks.on_tool_call then
      local ok, a, r = loop.pcall(hooks.on_tool_call, call)
      if not ok then return nil, a end   -- the caller's bug: say() raises it
      approved, reason = a, r
    end
    -- only an explicit true runs the tool: a hook that forgets to answer refuses
    if approved ~= true then
      if reason == nil and approved == nil then reason = "on_tool_call gave no answer" end
      text = "error: the call was refused" .. (reason ~= nil and (": " .. tostring(reason)) or "")
    else
      local ok, r, rerr = loop.pcall(tool.handler, args, call)
      if ok then text = result_text(r, rerr) else text = "error: " .. error_text(r) end
    end
  end
  if hooks.on_tool_result then
    local ok, e = loop.pcall(hooks.on_tool_result, call, text)
    if not ok then return nil, e end
  end
  return text
end

return M
