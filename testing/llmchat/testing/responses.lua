--- llmchat.testing.responses: POST /v1/responses, the OpenAI Responses API, answered by the
-- deterministic model, plain or streamed as typed events. Adds the handler to the Exchange.
local json = require("llmchat.testing.json")
local http = require("llmchat.testing.http")
local util = require("llmchat.testing.util")
local model = require("llmchat.testing.model")
local scenario = require("llmchat.testing.scenario")
local Exchange = require("llmchat.testing.writers")

local sformat = string.format
local floor = math.floor
local is_str, is_tab, num, status_of, tokens = util.is_str, util.is_tab, util.num,
  util.status_of, util.tokens
local array, NULL = json.array, json.null
local sleep = http.sleep

local M = {}

M.RANK = json.rank{ "type", "sequence_number", "code", "message", "param", "response",
  "item_id", "output_index", "content_index", "summary_index", "item", "part", "delta",
  "id", "object", "created_at", "status", "error", "incomplete_details", "reason",
  "instructions", "max_output_tokens", "model", "output", "parallel_tool_calls",
  "previous_response_id", "reasoning", "effort", "summary", "store", "temperature", "text",
  "format", "tool_choice", "tools", "top_p", "truncation", "usage", "metadata", "role",
  "content", "refusal", "annotations", "logprobs", "call_id", "name", "arguments",
  "input_tokens", "input_tokens_details", "cached_tokens", "output_tokens",
  "output_tokens_details", "reasoning_tokens", "total_tokens" }

local MAX_STORED = 1000

---------------------------------------------------------------------------------------------
-- The model's side: input items in, response object out (no I/O; the batch runner uses it)
---------------------------------------------------------------------------------------------

-- The input as a list of items, or nil and an error {message, param, code}.
local function input_items(input)
  if is_str(input) then return { { type = "message", role = "user", content = input } } end
  if not is_tab(input) or (next(input) ~= nil and not json.is_array(input)) then
    return nil, { message = "Invalid type for 'input': expected a string or an array of items.",
      param = "input", code = "invalid_type" }
  end
  local items = {}
  for i, item in ipairs(input) do
    if not is_tab(item) then
      return nil, { message = sformat("Invalid type for 'input[%d]': expected an object.", i - 1),
        param = "input[" .. (i - 1) .. "]", code = "invalid_type" }
    end
    items[#items + 1] = item
  end
  return items
end

local function item_text(item)
  local t = item.type
  if t == nil or t == "message" then return util.text_of(item.content) end
  if t == "function_call" then
    return (is_str(item.name) and item.name or "") .. (is_str(item.arguments) and item.arguments or "")
  end
  if t == "function_call_output" then
    return is_str(item.output) and item.output or util.text_of(item.output)
  end
  return ""
end

local function assistant_made(item)
  local t = item.type
  return t == "function_call" or t == "reasoning"
    or ((t == nil or t == "message") and item.role == "assistant")
end

-- Answers already given in the context: runs of assistant-made items.
local function count_turns(items)
  local n, inside = 0, false
  for _, item in ipairs(items) do
    local mine = assistant_made(item)
    if mine and not inside then n = n + 1 end
    inside = mine
  end
  return n
end

local function last_user_text(items)
  for i = #items, 1, -1 do
    local item = items[i]
    if (item.type == nil or item.type == "message") and item.role == "user" then
      return util.text_of(item.content)
    end
  end
  return ""
end

--- Build the answer to a Responses request. ctx: id (a number or string), created, model,
-- srv_responses (the store of earlier answers, for previous_response_id). Returns
-- { response = object, context = items, spec = ..., entry = ... } or nil, status, error.
function M.answer(body, mock, ctx)
  if body.input == nil and body.previous_response_id == nil then
    return nil, 400, { message = "Missing required parameter: 'input'.", param = "input",
      code = "missing_required_parameter" }
  end
  local items = {}
  if body.input ~= nil then
    local ierr
    items, ierr = input_items(body.input)
    if not items then return nil, 400, ierr end
  end
  if body.tools ~= nil and not is_tab(body.tools) then
    return nil, 400, { message = "Invalid type for 'tools': expected an array.", param = "tools",
      code = "invalid_type" }
  end
  local context = {}
  local prev = body.previous_response_id
  if prev ~= nil and prev ~= NULL then
    local stored = ctx.store and ctx.store.by_id[tostring(prev)]
    if not stored then
      return nil, 400, { message = "Previous response with id '" .. tostring(prev) .. "' not found.",
        param = "previous_response_id", code = "previous_response_not_found" }
    end
    for _, item in ipairs(stored.context) do context[#context + 1] = item end
  end
  for _, item in ipairs(items) do context[#context + 1] = item end

  local prompt = #(is_str(body.instructions) and body.instructions or "")
  for _, item in ipairs(context) do prompt = prompt + #item_text(item) end
  local entry = model.script_entry(mock, count_turns(context) + 1)
  local limit = num(body.max_output_tokens)
  local spec = model.answer_spec(entry, last_user_text(context), nil, limit)

  local base = sformat("llmchat%06d", tonumber(ctx.id) or 0)
  local status, incomplete, err = "completed", NULL, NULL
  if spec.finish_reason == "length" then
    status, incomplete = "incomplete", { reason = "max_output_tokens" }
  end
  if entry.incomplete ~= nil and entry.incomplete ~= false and entry.incomplete ~= NULL then
    status = "incomplete"
    incomplete = { reason = is_str(entry.incomplete) and entry.incomplete or "max_output_tokens" }
  end
  if entry.failed ~= nil and entry.failed ~= false and entry.failed ~= NULL then
    local f = is_tab(entry.failed) and entry.failed or {}
    status = "failed"
    err = { code = is_str(f.code) and f.code or "server_error",
      message = is_str(f.message) and f.message or "The model failed to generate a response." }
  end

  local output = array()
  local item_status = status == "incomplete" and "incomplete" or "completed"
  if spec.reasoning then
    output[#output + 1] = { id = "rs_" .. base, type = "reasoning",
      summary = array{ { type = "summary_text", text = spec.reasoning } } }
  end
  if spec.content or spec.refusal then
    local content = array()
    if spec.content then
      content[#content + 1] = { type = "output_text", text = spec.content, annotations = array(),
        logprobs = array() }
    end
    if spec.refusal then content[#content + 1] = { type = "refusal", refusal = spec.refusal } end
    output[#output + 1] = { id = "msg_" .. base, type = "message", status = item_status,
      role = "assistant", content = content }
  end
  for k, tc in ipairs(spec.tool_calls) do
    output[#output + 1] = { id = sformat("fc_%s_%d", base, k), type = "function_call",
      status = "completed", arguments = tc.arguments, call_id = tc.id, name = tc.name }
  end
  local produced = output -- what a failed stream still sends before response.failed
  if status == "failed" then output = array() end

  local usage = is_tab(entry.usage) and entry.usage or {
    input_tokens = tokens(prompt), input_tokens_details = { cached_tokens = 0 },
    output_tokens = spec.completion_tokens,
    output_tokens_details = { reasoning_tokens = spec.reasoning_tokens },
    total_tokens = tokens(prompt) + spec.completion_tokens }
  local reasoning = NULL
  if is_tab(body.reasoning) then
    reasoning = { effort = body.reasoning.effort or NULL, summary = body.reasoning.summary or NULL }
  end
  local response = { id = "resp_" .. base, object = "response", created_at = ctx.created,
    status = status, error = err, incomplete_details = incomplete,
    instructions = body.instructions ~= nil and body.instructions or NULL,
    max_output_tokens = limit or NULL, model = ctx.model, output = output,
    parallel_tool_calls = body.parallel_tool_calls ~= false,
    previous_response_id = prev ~= nil and prev or NULL, reasoning = reasoning,
    store = body.store ~= false, temperature = num(body.temperature) or 1,
    text = { format = { type = "text" } }, tool_choice = body.tool_choice or "auto",
    tools = array(is_tab(body.tools) and body.tools or {}), top_p = num(body.top_p) or 1,
    truncation = "disabled", usage = usage,
    metadata = is_tab(body.metadata) and body.metadata or {} }
  return { response = response, context = context, spec = spec, entry = entry, items = produced }
end

--- Remember an answer for previous_response_id (the newest MAX_STORED).
function M.remember(store, answer)
  local r = answer.response
  if not store or r.store == false or r.status == "failed" then return end
  local context = {}
  for _, item in ipairs(answer.context) do context[#context + 1] = item end
  for _, item in ipairs(r.output) do context[#context + 1] = item end
  store.by_id[r.id] = { context = context }
  store.order[#store.order + 1] = r.id
  if #store.order > MAX_STORED then
    store.by_id[table.remove(store.order, 1)] = nil
  end
end

---------------------------------------------------------------------------------------------
-- The endpoint
---------------------------------------------------------------------------------------------
function Exchange:responses()
  local body = self:json_body()
  if not body then return end
  local mock = self:resolve_mock(body)
  self.model = is_str(mock.model) and mock.model or (is_str(body.model) and body.model)
    or "llmchat-echo"
  self.streaming = body.stream == true and not status_of(mock.stream_status)
  if self:before_response() then return end
  mock = self.mock
  if self.streaming and (is_str(mock.raw) or is_tab(mock.raw)) then return self:raw_stream() end
  local answer, status, err = M.answer(body, mock, { id = self.srv.stats.requests,
    created = os.time(), model = self.model, store = self.srv.responses })
  if not answer then
    return self:send_error(status, err.message, "invalid_request_error", err.code, err.param)
  end
  M.remember(self.srv.responses, answer)
  if self.streaming then return self:responses_stream(answer) end
  return self:send_json(status_of(mock.stream_status) or status_of(mock.status) or 200,
    answer.response, M.RANK)
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return setmetatable(c, getmetatable(t))
end

-- The events of a streamed answer, in order: { name, fields, delta = bool }.
local function stream_events(answer, size)
  local r = answer.response
  local list = {}
  local function add(name, fields, is_delta) list[#list + 1] = { name, fields, delta = is_delta } end
  local start = copy(r)
  start.status, start.output, start.usage = "in_progress", array(), NULL
  start.error, start.incomplete_details = NULL, NULL
  add("response.created", { response = start })
  add("response.in_progress", { response = start })
  local pieces = util.utf8_pieces
  for i, item in ipairs(answer.items) do
    local oi = i - 1
    if item.type == "reasoning" then
      add("response.output_item.added", { output_index = oi,
        item = { id = item.id, type = "reasoning", summary = array() } })
      local text = item.summary[1].text
      local where = { item_id = item.id, output_index = oi, summary_index = 0 }
      add("response.reasoning_summary_part.added", { item_id = item.id, output_index = oi,
        summary_index = 0, part = { type = "summary_text", text = "" } })
      for _, p in ipairs(pieces(text, size)) do
        local f = copy(where); f.delta = p
        add("response.reasoning_summary_text.delta", f, true)
      end
      local done = copy(where); done.text = text
      add("response.reasoning_summary_text.done", done)
      add("response.reasoning_summary_part.done", { item_id = item.id, output_index = oi,
        summary_index = 0, part = { type = "summary_text", text = text } })
    elseif item.type == "message" then
      add("response.output_item.added", { output_index = oi, item = { id = item.id,
        type = "message", status = "in_progress", role = "assistant", content = array() } })
      for ci, part in ipairs(item.content) do
        local where = { item_id = item.id, output_index = oi, content_index = ci - 1 }
        local empty
        if part.type == "refusal" then empty = { type = "refusal", refusal = "" }
        else empty = { type = "output_text", text = "", annotations = array() } end
        local f = copy(where); f.part = empty
        add("response.content_part.added", f)
        local text = part.type == "refusal" and part.refusal or part.text
        local kind = part.type == "refusal" and "response.refusal" or "response.output_text"
        for _, p in ipairs(pieces(text, size)) do
          local d = copy(where); d.delta = p
          if part.type ~= "refusal" then d.logprobs = array() end
          add(kind .. ".delta", d, true)
        end
        local done = copy(where)
        if part.type == "refusal" then done.refusal = text else done.text = text end
        add(kind .. ".done", done)
        local pd = copy(where); pd.part = part
        add("response.content_part.done", pd)
      end
    elseif item.type == "function_call" then
      add("response.output_item.added", { output_index = oi, item = { id = item.id,
        type = "function_call", status = "in_progress", arguments = "", call_id = item.call_id,
        name = item.name } })
      for _, p in ipairs(pieces(item.arguments, size)) do
        add("response.function_call_arguments.delta", { item_id = item.id, output_index = oi,
          delta = p }, true)
      end
      add("response.function_call_arguments.done", { item_id = item.id, output_index = oi,
        name = item.name, arguments = item.arguments })
    end
    add("response.output_item.done", { output_index = oi, item = item })
  end
  local final = r.status == "failed" and "response.failed"
    or r.status == "incomplete" and "response.incomplete" or "response.completed"
  add(final, { response = r })
  return list
end

function Exchange:responses_stream(answer)
  local mock = self.mock
  local eol = mock.crlf == true and "\r\n" or "\n"
  local size = math.max(1, floor(num(mock.chunk_size) or 4))
  local chunk_delay = num(mock.chunk_delay)
  local out = self:sse_writer()
  local seq = 0
  local function event(name, fields)
    fields.type, fields.sequence_number = name, seq
    seq = seq + 1
    if mock.comments == true then out.write(": OPENROUTER PROCESSING" .. eol .. eol) end
    out.write("event: " .. name .. eol .. "data: " .. json.encode(fields, M.RANK) .. eol .. eol)
  end
  self:start_stream(status_of(mock.status) or 200, nil)

  local events = stream_events(answer, size)
  -- where the stream stops early: an error event, or response.failed, after N deltas
  local stop_after, stop_with
  local ee = is_tab(mock.error_event) and mock.error_event
    or (is_tab(mock.stream_error) and mock.stream_error) or nil
  if ee then
    local e = is_tab(ee.error) and ee.error or ee
    stop_after = num(ee.after) or 0
    stop_with = { "error", { code = e.code ~= nil and e.code or "server_error",
      message = is_str(e.message) and e.message or "stream failed",
      param = e.param ~= nil and e.param or NULL } }
  end
  if mock.echo_auth == true then
    local secret = scenario.secret_error(self.req)
    stop_after = num(mock.echo_after) or 1
    stop_with = { "error", { code = "upstream_error", message = secret.message, param = NULL,
      metadata = secret.metadata, error = secret } }
  end
  local r = answer.response
  if r.status == "failed" then
    local f = is_tab(mock.failed) and mock.failed or {}
    stop_after = num(f.after) or 0
    stop_with = { "response.failed", { response = r } }
  end
  local truncate_after = num(mock.truncate_after)
  local stall, stall_after = num(mock.stall), num(mock.stall_after) or 1

  local sent = 0
  for idx, ev in ipairs(events) do
    local terminal = idx == #events
    if ev.delta or terminal then
      if stop_with and sent >= stop_after then
        event(stop_with[1], stop_with[2])
        out.flush()
        return self:end_chunks()
      end
      if truncate_after and sent >= truncate_after then
        out.flush()
        if mock.truncate_abrupt == true then self.conn:abort(mock.reset == true) end
        return self:end_chunks()
      end
      if mock.drop == "mid_body" and sent >= 1 then
        out.flush()
        self.conn:abort(mock.reset == true)
      end
      if stall and stall > 0 and sent >= stall_after then
        out.flush()
        sleep(stall)
        stall = nil
      end
    end
    if chunk_delay and chunk_delay > 0 and idx > 1 then sleep(chunk_delay) end
    event(ev[1], ev[2])
    if ev.delta then sent = sent + 1 end
  end
  out.flush()
  self:end_chunks()
end

return M
