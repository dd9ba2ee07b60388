--- llmchat.conversation.api: what a conversation's turn needs to know about
-- the endpoint it talks to. One adapter per API, the same fields each:
--   name                       "chat" | "responses"
--   method                     the client method a round calls
--   user(input, level)         say()'s input -> the user's history entry
--   is_entry(m)                may m be stored in the history as it is?
--   tools(registry)            the tools in the API's shape, or nil
--   structured(params, want)   want.schema (schema_name) -> the request's structured-output field
--   stream_usage               ask for usage in streams (stream_options)?
--   head(conv)                 what the system prompt weighs in the budget (messages)
--   request(params, conv, history, first, pending)   the history fields of a round
--   answer(res)                entries for the history, tool calls (or nil); or nil, err
--   tool_result(call, text)    the entry that gives a tool's result back
--   units(history)             the history cut into droppable units (budget)
--   restore(entry)             a decoded entry (a loaded file, an output item) made whole
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local message = require("llmchat.message")
local content = require("llmchat.content")
local schema = require("llmchat.schema")
local budget = require("llmchat.conversation.budget")

local M = {}

local deep_copy = message.deep_copy
local WHERE = "conversation:say"

-- the window of the history a round sends: system head, history[first..], pending
local function window(head, items, first, pending)
  local out = json.array()
  for _, m in ipairs(head) do out[#out + 1] = m end
  for k = first, #items do out[#out + 1] = items[k] end
  for _, m in ipairs(pending) do out[#out + 1] = m end
  return out
end

---------------------------------------------------------------------------
-- chat completions: messages, system as the first message

local chat = { name = "chat", method = "chat", stream_usage = true, units = budget.chat_units }
M.chat = chat

chat.restore = message.restore

function chat.user(input, level)
  local m = message.user(input, WHERE, content.text, (level or 1) + 1)
  return m   -- not a tail call: error levels count this frame
end

function chat.is_entry(m)
  return type(m) == "table" and type(m.role) == "string"
end
chat.entry_rule = "messages with a role"

function chat.tools(registry) return registry:chat_tools() end

function chat.structured(params, want)
  local rf = schema.response_format(want, 2)
  if rf then params.response_format = rf end
end

function chat.head(conv)
  if conv.system == nil then return {} end
  return { { role = conv.system_role, content = conv.system } }
end

function chat.request(params, conv, items, first, pending)
  params.messages = window(chat.head(conv), items, first, pending)
end

function chat.answer(res)
  if type(res.message) ~= "table" then
    return nil, errors.new({ kind = "protocol", status = schema.http_status(res), headers = res.headers,
      message = "the response has no choices (no assistant message)", partial = res })
  end
  -- the result's message is already shaped (llmchat.message.assistant); shaping
  -- again copies it, so the caller's edits to res never reach the history
  local msg = message.assistant(res.message)
  return { msg }, msg.tool_calls
end

function chat.tool_result(call, text)
  return { role = "tool", tool_call_id = call.id, content = text }
end

---------------------------------------------------------------------------
-- the Responses API: input items, system as `instructions`, flat tools

local responses = { name = "responses", method = "respond", stream_usage = false,
  units = budget.responses_units }
M.responses = responses

-- chat content parts (llmchat.content builds them) -> Responses input parts
local function input_part(p)
  if type(p) ~= "table" then return p end
  if p.type == "text" then return { type = "input_text", text = p.text } end
  if p.type == "image_url" then
    local iu = type(p.image_url) == "table" and p.image_url or {}
    return { type = "input_image", image_url = iu.url, detail = iu.detail or "auto" }
  end
  return p
end

-- Decoding loses the difference between [] and {}: in the Responses API's
-- items an empty table is an array (annotations, logprobs, summary, content),
-- and must go back as one.
local function restore_item(v)
  if type(v) ~= "table" or v == json.null then return v end
  if next(v) == nil then
    if getmetatable(v) == nil then setmetatable(v, getmetatable(json.array())) end
    return v
  end
  for k, x in pairs(v) do v[k] = restore_item(x) end
  return v
end
responses.restore = restore_item

function responses.user(input, level)
  local m = message.user(input, WHERE, content.text, (level or 1) + 1)
  local c = m.content
  if type(c) == "table" and c ~= json.null then
    local parts = json.array()
    for i, p in ipairs(c) do parts[i] = input_part(p) end
    m.content = parts
  end
  return m
end

function responses.is_entry(m)
  return type(m) == "table" and (type(m.role) == "string" or type(m.type) == "string")
end
responses.entry_rule = "input items (with a role or a type)"

function responses.tools(registry) return registry:responses_tools() end

function responses.structured(params, want)
  local text = schema.text_format(want, 2)
  if text then params.text = text end
end

function responses.head(conv)
  if conv.system == nil then return {} end
  return { { role = "system", content = conv.system } }
end

function responses.request(params, conv, items, first, pending)
  if conv.system ~= nil and params.instructions == nil then params.instructions = conv.system end
  params.input = window({}, items, first, pending)
end

local call_seq = 0

-- The output items go back as input items as they are (copied); every
-- function_call among them is a tool call (call_id is its id).
function responses.answer(res)
  if type(res.output) ~= "table" then
    return nil, errors.new({ kind = "protocol", status = schema.http_status(res), headers = res.headers,
      message = "the response has no output items", partial = res })
  end
  local entries, calls = {}, {}
  for i, item in ipairs(res.output) do
    local e = restore_item(deep_copy(item))
    entries[i] = e
    if type(e) == "table" and e.type == "function_call" then
      if type(e.call_id) ~= "string" or e.call_id == "" then
        call_seq = call_seq + 1
        e.call_id = ("call_llmchat_r%d_%d"):format(call_seq, i)
      end
      calls[#calls + 1] = { id = e.call_id, type = "function",
        ["function"] = { name = e.name, arguments = type(e.arguments) == "string" and e.arguments or "" } }
    end
  end
  return entries, #calls > 0 and calls or nil
end

function responses.tool_result(call, text)
  return { type = "function_call_output", call_id = call.id, output = text }
end

--- The adapter for conv{ api = name }; nil for an unknown name.
function M.get(name)
  if name == nil then return chat end
  if name == "chat" then return chat end
  if name == "responses" then return responses end
  return nil
end

return M
