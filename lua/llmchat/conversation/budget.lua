--- llmchat.conversation.budget: the token estimate and the context budget
-- (which history a request can carry). Documented in docs/conversation.md.
--
-- No tokenizer ships with llmchat, so the budget uses the rule of thumb the
-- OpenAI docs give for English, about 4 bytes of UTF-8 per token, plus the
-- per-message framing the chat format adds:
--   message  = 4 + ceil(bytes / 4)   bytes: text content, refusal, name,
--                                    tool_call_id, each tool call's id, name
--                                    and arguments
--   image    = 85 tokens with detail "low", else 765 (one 1024x1024 tile set)
--   other part (audio, file) = ceil(bytes of its JSON / 4)
--   request  = 3 + sum(messages) + ceil(bytes of the tools' JSON / 4)
-- Responses API input items count the same way: a message item as a message
-- (input_text / output_text parts as text, input_image as an image), a
-- function_call as 4 + ceil(bytes of call_id, name, arguments / 4), a
-- function_call_output as 4 + ceil(bytes of call_id, output / 4), any other
-- item as ceil(bytes of its JSON / 4).
-- It errs a little high for English, low for dense scripts: set the budget
-- with a margin under the model's real context window.
local json = require("llmchat.json")

local M = {}

local null = json.null
local ceil = math.ceil

local TEXT_PARTS = { text = true, input_text = true, output_text = true }

local function part_tokens(p)
  if type(p) ~= "table" then return 0, 0 end
  if TEXT_PARTS[p.type] then return 0, #(type(p.text) == "string" and p.text or "") end
  if p.type == "image_url" then
    local iu = type(p.image_url) == "table" and p.image_url or {}
    return iu.detail == "low" and 85 or 765, 0
  end
  if p.type == "input_image" then return p.detail == "low" and 85 or 765, 0 end
  local s = json.encode(p) or ""
  return ceil(#s / 4), 0
end

local function str_len(v) return type(v) == "string" and #v or 0 end

--- Estimated tokens of one chat message (or Responses input item).
function M.message_tokens(m)
  if type(m) ~= "table" then return 0 end
  if m.type == "function_call" then
    return 4 + ceil((str_len(m.call_id) + str_len(m.name) + str_len(m.arguments)) / 4)
  elseif m.type == "function_call_output" then
    return 4 + ceil((str_len(m.call_id) + str_len(m.output)) / 4)
  elseif m.role == nil and m.type ~= nil and m.type ~= "message" then
    return ceil(#(json.encode(m) or "") / 4)
  end
  local bytes, extra = 0, 0
  local c = m.content
  if type(c) == "string" then bytes = bytes + #c
  elseif type(c) == "table" and c ~= null then
    for _, p in ipairs(c) do
      local t, b = part_tokens(p)
      extra, bytes = extra + t, bytes + b
    end
  end
  if type(m.refusal) == "string" then bytes = bytes + #m.refusal end
  if type(m.name) == "string" then bytes = bytes + #m.name end
  if type(m.tool_call_id) == "string" then bytes = bytes + #m.tool_call_id end
  if type(m.tool_calls) == "table" then
    for _, tc in ipairs(m.tool_calls) do
      local fn = type(tc["function"]) == "table" and tc["function"] or {}
      bytes = bytes + #tostring(tc.id or "") + #tostring(fn.name or "") + #tostring(fn.arguments or "")
    end
  end
  return 4 + ceil(bytes / 4) + extra
end
local message_tokens = M.message_tokens

--- Estimated prompt tokens of a request: messages (array), tools (API shape, optional).
function M.estimate_tokens(messages, tools)
  local n = 3
  for _, m in ipairs(messages or {}) do n = n + message_tokens(m) end
  if tools and #tools > 0 then n = n + ceil(#(json.encode(tools) or "") / 4) end
  return n
end

--- Chat: the history cut into units that can be dropped: one message each,
-- except that an assistant message with tool_calls and the tool results
-- after it form one unit (a tool result without its call is rejected).
function M.chat_units(history)
  local units, i, n = {}, 1, #history
  while i <= n do
    local j = i
    local m = history[i]
    if m.role == "assistant" and type(m.tool_calls) == "table" and #m.tool_calls > 0 then
      while j + 1 <= n and history[j + 1].role == "tool" do j = j + 1 end
    end
    units[#units + 1] = { first = i, last = j }
    i = j + 1
  end
  return units
end

--- Responses: each user message is a unit; so is every run of the items
-- between two user messages (the model's output items, function calls and
-- their outputs): a function_call_output never goes without its call, nor a
-- reasoning item without the item it precedes.
function M.responses_units(history)
  local units, i, n = {}, 1, #history
  local function is_user(m) return type(m) == "table" and m.role == "user" end
  while i <= n do
    local j = i
    if not is_user(history[i]) then
      while j + 1 <= n and not is_user(history[j + 1]) do j = j + 1 end
    end
    units[#units + 1] = { first = i, last = j }
    i = j + 1
  end
  return units
end

--- Which of the history a request can carry: head (system messages, always
-- sent, counted), history, pending (the current turn, always sent), tools
-- (their API shape, counted), budget (tokens, or nil for no limit), units
-- (chat_units or responses_units). Returns the index of the first history
-- entry to send (1 when everything fits).
function M.first_kept(head, history, pending, budget, tools, units)
  if not budget then return 1 end
  local fixed = M.estimate_tokens(head, tools)
  for _, m in ipairs(pending) do fixed = fixed + message_tokens(m) end
  local total = fixed
  for _, m in ipairs(history) do total = total + message_tokens(m) end
  local start = 1
  if total > budget then
    for _, u in ipairs(units(history)) do
      if total <= budget then break end
      for k = u.first, u.last do total = total - message_tokens(history[k]) end
      start = u.last + 1
    end
  end
  return start
end

return M
