--- llmchat.responses: the Responses API (/v1/responses): a response object shaped into
-- the chat result's shape, and the assembler of its typed stream events.
--
-- Result fields: content (the output_text parts joined), tool_calls (from function_call
-- items: id = the item's call_id, name, arguments, plus type and ["function"] as in chat),
-- reasoning (the summaries, and reasoning text parts, joined), refusal, usage (input and
-- output tokens, also as prompt_tokens / completion_tokens), id, model, status
-- ("completed" | "incomplete" | "failed" | ...), output (the raw items), finish_reason
-- ("stop", "tool_calls", "length" ...), message (an assistant message for a chat history).
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local messages = require("llmchat.message")

local M = {}

local function join(parts)
  if #parts == 0 then return nil end
  return table.concat(parts)
end

local function map_usage(u)
  if type(u) ~= "table" then return nil end
  local out = {}
  for k, v in pairs(u) do out[k] = v end
  if out.prompt_tokens == nil then out.prompt_tokens = u.input_tokens end
  if out.completion_tokens == nil then out.completion_tokens = u.output_tokens end
  if out.total_tokens == nil and type(u.input_tokens) == "number" and type(u.output_tokens) == "number" then
    out.total_tokens = u.input_tokens + u.output_tokens
  end
  return out
end
M.map_usage = map_usage

local function tool_call(item)
  local args = item.arguments
  if type(args) ~= "string" then args = args == nil and "" or json.encode(args) or "" end
  return { id = item.call_id or item.id, item_id = item.id, type = "function", name = item.name,
    arguments = args, ["function"] = { name = item.name, arguments = args } }
end

--- The result for a response object (decoded JSON), reshaped in place.
function M.from_response(r)
  local content, refusal, reasoning, calls = {}, {}, {}, {}
  local output = r.output
  if type(output) ~= "table" then output = {} end
  for _, item in ipairs(output) do
    if type(item) == "table" then
      if item.type == "message" and type(item.content) == "table" then
        for _, part in ipairs(item.content) do
          if type(part) == "table" then
            if part.type == "output_text" and type(part.text) == "string" then
              content[#content + 1] = part.text
            elseif part.type == "refusal" and type(part.refusal) == "string" then
              refusal[#refusal + 1] = part.refusal
            end
          end
        end
      elseif item.type == "function_call" then
        calls[#calls + 1] = tool_call(item)
      elseif item.type == "reasoning" then
        for _, key in ipairs({ "summary", "content" }) do
          if type(item[key]) == "table" then
            for _, part in ipairs(item[key]) do
              if type(part) == "table" and type(part.text) == "string" then
                reasoning[#reasoning + 1] = part.text
              end
            end
          end
        end
      end
    end
  end
  r.output = output
  r.content = join(content)
  r.refusal = join(refusal)
  r.reasoning = join(reasoning)
  r.tool_calls = #calls > 0 and calls or nil
  r.usage = map_usage(r.usage)
  if r.status == "incomplete" then
    local why = type(r.incomplete_details) == "table" and r.incomplete_details.reason
    r.finish_reason = why == "max_output_tokens" and "length" or why or "incomplete"
  elseif #calls > 0 then
    r.finish_reason = "tool_calls"
  elseif r.status == "completed" then
    r.finish_reason = "stop"
  end
  local chat_calls
  if #calls > 0 then
    chat_calls = {}
    for i, tc in ipairs(calls) do
      chat_calls[i] = { id = tc.id, type = "function", ["function"] = tc["function"] }
    end
  end
  r.message = messages.assistant({ content = r.content, refusal = r.refusal, tool_calls = chat_calls })
  return r
end

---------------------------------------------------------------------------
-- the stream assembler: raw SSE events in, public events out

local Asm = {}
Asm.__index = Asm

--- An assembler for one streamed call. Its feed(ev) takes a raw event from the C
-- consumer ({ kind = "event", type =, data = }) and returns the public events it makes:
--   { kind = "content" | "reasoning" | "refusal", delta = text, type =, raw = }
--   { kind = "tool_call", delta = arguments fragment, tool = n, id = call_id, name = (on a
--     call's first fragment), type =, raw = }
--   { kind = "event", type = the event type, raw = its JSON, event = decoded } otherwise.
function M.assembler(call)
  return setmetatable({ call = call, text = {}, reasoning = {}, refusal = {}, calls = {},
    by_item = {}, final = nil, err = nil, events = 0 }, Asm)
end

local DELTA_KIND = {
  ["response.output_text.delta"] = "content",
  ["response.refusal.delta"] = "refusal",
  ["response.reasoning_summary_text.delta"] = "reasoning",
  ["response.reasoning_text.delta"] = "reasoning",
  ["response.function_call_arguments.delta"] = "tool_call",
}

local TERMINAL = {
  ["response.completed"] = true, ["response.incomplete"] = true, ["response.failed"] = true,
}

-- the call (by output_index or item id) a function-call event belongs to
function Asm:call_for(d)
  local key = d.item_id or d.output_index
  local tc = key ~= nil and self.by_item[key]
  if not tc and d.output_index ~= nil then tc = self.by_item[d.output_index] end
  return tc
end

function Asm:add_call(item, output_index)
  local tc = { id = item.call_id, item_id = item.id, name = item.name, arguments = "", announced = false }
  self.calls[#self.calls + 1] = tc
  tc.pos = #self.calls
  if item.id ~= nil then self.by_item[item.id] = tc end
  if output_index ~= nil then self.by_item[output_index] = tc end
  return tc
end

function Asm:feed(raw)
  self.events = self.events + 1
  local etype = raw.type
  local d = json.decode(raw.data)
  if type(d) ~= "table" then
    if raw.data == "[DONE]" then return nil end
    self.err = self.err or errors.new({ kind = "protocol",
      message = ("stream event %d (%s) is not JSON"):format(self.events, tostring(etype)) }, self.call.secret)
    return nil
  end
  if etype == "message" and type(d.type) == "string" then etype = d.type end  -- no event: line
  local kind = DELTA_KIND[etype]
  if kind then
    local text = d.delta
    if type(text) ~= "string" then text = "" end
    local ev = { kind = kind, delta = text, type = etype, raw = raw.data, event = d }
    if kind == "content" then self.text[#self.text + 1] = text
    elseif kind == "reasoning" then self.reasoning[#self.reasoning + 1] = text
    elseif kind == "refusal" then self.refusal[#self.refusal + 1] = text
    else
      local tc = self:call_for(d) or self:add_call({ id = d.item_id }, d.output_index)
      tc.arguments = tc.arguments .. text
      ev.tool = tc.pos
      if not tc.announced then
        tc.announced = true
        ev.id, ev.name = tc.id, tc.name
      end
    end
    return ev
  end
  if etype == "response.output_item.added" and type(d.item) == "table" and d.item.type == "function_call" then
    self:add_call(d.item, d.output_index)
  elseif etype == "response.output_item.done" and type(d.item) == "table" and d.item.type == "function_call" then
    local tc = self:call_for({ item_id = d.item.id, output_index = d.output_index }) or self:add_call(d.item, d.output_index)
    tc.id = d.item.call_id or tc.id
    tc.name = d.item.name or tc.name
    if type(d.item.arguments) == "string" then tc.arguments = d.item.arguments end
  elseif etype == "response.function_call_arguments.done" then
    local tc = self:call_for(d)
    if tc and type(d.arguments) == "string" then tc.arguments = d.arguments end
  elseif etype == "response.created" or etype == "response.in_progress" then
    if type(d.response) == "table" then self.head = d.response end
  elseif TERMINAL[etype] then
    if type(d.response) == "table" then self.final = d.response end
    self.terminal = etype
  elseif etype == "error" then
    self.stream_err = d
  end
  return { kind = "event", type = etype, raw = raw.data, event = d }
end

--- What arrived so far, as a result (the partial of an error).
function Asm:partial()
  local head = self.head or {}
  local output = {}
  local msg_text = join(self.text)
  if msg_text or #self.refusal > 0 then
    local content = {}
    if msg_text then content[#content + 1] = { type = "output_text", text = msg_text } end
    if #self.refusal > 0 then content[#content + 1] = { type = "refusal", refusal = table.concat(self.refusal) } end
    output[#output + 1] = { type = "message", role = "assistant", content = content }
  end
  if #self.reasoning > 0 then
    output[#output + 1] = { type = "reasoning", summary = { { type = "summary_text", text = table.concat(self.reasoning) } } }
  end
  for _, tc in ipairs(self.calls) do
    output[#output + 1] = { type = "function_call", id = tc.item_id, call_id = tc.id, name = tc.name,
      arguments = tc.arguments }
  end
  return M.from_response({ id = head.id, model = head.model, object = "response",
    created_at = head.created_at, status = "in_progress", output = output })
end

--- The end of the stream: the result, or nil and the error.
function Asm:finish(status, headers)
  local secret = self.call.secret
  if self.err then
    self.err.partial = self:partial()
    return nil, self.err
  end
  if self.stream_err then
    local e = self.stream_err
    local inner = type(e.error) == "table" and e.error or e
    return nil, errors.new({ kind = "stream_error", status = status, headers = headers,
      message = tostring(inner.message or "error event in the stream"),
      code = (type(inner.code) == "string" or type(inner.code) == "number") and inner.code or nil,
      error = e, partial = self:partial() }, secret)
  end
  if self.terminal == "response.failed" then
    local res = self.final and M.from_response(self.final) or self:partial()
    local e = self.final and type(self.final.error) == "table" and self.final.error or {}
    return nil, errors.new({ kind = "stream_error", status = status, headers = headers,
      message = tostring(e.message or "the response failed"),
      code = (type(e.code) == "string" or type(e.code) == "number") and e.code or nil,
      error = e, partial = res }, secret)
  end
  if not self.terminal then
    return nil, errors.new({ kind = "protocol", status = status, headers = headers,
      message = ("stream ended before response.completed (%d events)"):format(self.events),
      partial = self:partial() }, secret)
  end
  if self.final then return M.from_response(self.final) end
  local res = self:partial()
  res.status = self.terminal == "response.incomplete" and "incomplete" or "completed"
  return M.from_response(res)
end

return M
