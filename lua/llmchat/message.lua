--- llmchat.message: chat messages in the shape the API takes back.
--
-- The one place that decides what an assistant message looks like when it
-- goes back into a history: `res.message` (llmchat.result) and every
-- assistant message a conversation stores are made by `M.assistant`.
local json = require("llmchat.json")

local M = {}

local null = json.null

--- A deep copy that keeps json.array / json.object marks (an empty array
-- stays an array) and JSON null.
local function deep_copy(v)
  if type(v) ~= "table" or v == null then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  local mt = getmetatable(v)
  if mt and mt.__jsontype then setmetatable(t, mt) end
  return t
end
M.deep_copy = deep_copy

--- A JSON array of deep copies.
function M.copy_list(list)
  local out = json.array()
  for i, m in ipairs(list) do out[i] = deep_copy(m) end
  return out
end

-- Ids for tool calls that come without one (some local servers send none):
-- the tool results must still name their call.
local id_seq = 0

--- The assistant message of a response, as it must go back into a history:
-- content (JSON null when the model only called tools or refused, "" for an
-- answer with nothing in it), refusal, tool_calls with id / type /
-- function.name / function.arguments kept verbatim, and the few other fields
-- the API accepts on input (name, audio id). Fields a response carries but a
-- request rejects (annotations, reasoning) are left out. A new table; shaping
-- a shaped message gives an equal one.
function M.assistant(msg)
  local m = { role = "assistant" }
  local c = msg.content
  if type(c) == "table" and c ~= null then c = deep_copy(c) end
  if type(c) ~= "string" and type(c) ~= "table" then c = nil end
  local calls = msg.tool_calls
  if type(calls) == "table" and #calls > 0 then
    local out = json.array()
    for i, tc in ipairs(calls) do
      local fn = type(tc["function"]) == "table" and tc["function"] or {}
      local id = tc.id
      if type(id) ~= "string" or id == "" then
        id_seq = id_seq + 1
        id = ("call_llmchat_%d_%d"):format(id_seq, i)
      end
      out[i] = { id = id, type = tc.type or "function",
        ["function"] = { name = fn.name, arguments = type(fn.arguments) == "string" and fn.arguments or "" } }
    end
    m.tool_calls = out
    -- a streamed tool-call turn assembles content "" where the plain response
    -- says null: null either way, so both modes give the same message
    if c == "" then c = nil end
  end
  if c == nil then
    -- null goes with tool calls or a refusal (what OpenAI itself returns); an
    -- answer with nothing at all is kept as "" (Mistral and others reject an
    -- assistant message with neither content nor tool calls)
    if m.tool_calls or type(msg.refusal) == "string" then c = null else c = "" end
  end
  m.content = c
  if type(msg.refusal) == "string" then m.refusal = msg.refusal end
  if type(msg.name) == "string" then m.name = msg.name end
  if type(msg.audio) == "table" and msg.audio.id then m.audio = { id = msg.audio.id } end
  return m
end

--- A decoded message back into its in-memory form: json.decode drops object
-- nulls, so an assistant message that only called tools gets its null back.
function M.restore(m)
  if type(m) ~= "table" then return m end
  if m.role == "assistant" and m.content == nil then m.content = null end
  if type(m.tool_calls) == "table" then setmetatable(m.tool_calls, getmetatable(json.array())) end
  return m
end

--- A user message from a string, an array of content parts (strings become
-- text parts), one part, or a whole message (copied). `text_part(s)` builds
-- a text part. Misuse raises, naming `where`, at `level` above the caller.
function M.user(input, where, text_part, level)
  level = (level or 1) + 1
  local t = type(input)
  if t == "string" then return { role = "user", content = input } end
  if t == "table" then
    if input.role then return deep_copy(input) end
    if input.type then return { role = "user", content = json.array{ deep_copy(input) } } end
    local parts = json.array()
    for i, p in ipairs(input) do
      if type(p) == "string" then p = text_part(p) end
      if type(p) ~= "table" then
        error(("%s: content part %d is a %s"):format(where, i, type(p)), level)
      end
      parts[i] = deep_copy(p)
    end
    if #parts == 0 then error(where .. ": empty list of content parts", level) end
    return { role = "user", content = parts }
  end
  error(where .. ": expected a string, content parts or a message, got " .. t, level)
end

return M
