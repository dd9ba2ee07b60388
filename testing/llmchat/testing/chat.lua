--- llmchat.testing.chat: POST /v1/chat/completions (and Segmind's POST /v1/<model>), its
-- streams, and GET /v1/models. Adds the handlers to the Exchange.
local json = require("llmchat.testing.json")
local http = require("llmchat.testing.http")
local util = require("llmchat.testing.util")
local model = require("llmchat.testing.model")
local scenario = require("llmchat.testing.scenario")
local Exchange = require("llmchat.testing.writers")

local sformat, srep = string.format, string.rep
local floor = math.floor
local is_str, is_tab, num, status_of, tokens = util.is_str, util.is_tab, util.num,
  util.status_of, util.tokens
local array, NULL = json.array, json.null
local sleep = http.sleep

local M = {}

local DEFAULT_MODELS = { "llmchat-echo", "gpt-4o-mini", "gpt-4o" }

local function model_object(id)
  return { id = id, object = "model", created = 1700000000, owned_by = "llmchat" }
end

function Exchange:models(id)
  local ids = is_tab(self.mock.models) and self.mock.models or DEFAULT_MODELS
  if id then
    for _, m in ipairs(ids) do
      if m == id then return self:send_json(200, model_object(id)) end
    end
    return self:send_error(404, "The model '" .. id .. "' does not exist", "invalid_request_error",
      "model_not_found", "model")
  end
  local data = array()
  for i, m in ipairs(ids) do data[i] = model_object(tostring(m)) end
  return self:send_json(200, { object = "list", data = data })
end

--- The decoded JSON object body of a POST, or nil after answering 405/400.
function Exchange:json_body()
  local req = self.req
  if req.method ~= "POST" then
    self:send_error(405, "Method " .. req.method .. " not allowed; use POST",
      "invalid_request_error", "method_not_allowed")
    return nil
  end
  local body, err = json.decode(req.body)
  if not is_tab(body) or json.is_array(body) and next(body) ~= nil then
    self:send_error(400, "We could not parse the JSON body of your request. ("
      .. (err or "expected a JSON object") .. ")", "invalid_request_error", "invalid_json")
    return nil
  end
  return body
end

function Exchange:chat(path_model)
  local body = self:json_body()
  if not body then return end
  if body.messages ~= nil and not is_tab(body.messages) then
    return self:send_error(400, "Invalid type for 'messages': expected an array.",
      "invalid_request_error", "invalid_type", "messages")
  end
  local mock = self:resolve_mock(body)
  self.model = is_str(mock.model) and mock.model or path_model
    or (is_str(body.model) and body.model) or "llmchat-echo"
  self.streaming = body.stream == true and not status_of(mock.stream_status)
  if self:before_response() then return end
  mock = self.mock
  if body.messages == nil then
    return self:send_error(400, "Missing required parameter: 'messages'.",
      "invalid_request_error", "missing_required_parameter", "messages")
  end
  self.prompt_tokens = tokens(model.prompt_bytes(body.messages))
  self.completion_id = "chatcmpl-llmchat" .. sformat("%06d", self.srv.stats.requests)
  self.created = os.time()
  local specs, entry = model.choice_specs(body, mock)
  if body.stream == true and not status_of(mock.stream_status) then
    if is_str(mock.raw) or is_tab(mock.raw) then return self:raw_stream() end
    if num(mock.long_stream) then
      return self:long_stream(floor(num(mock.long_stream)), entry, body.stream_options)
    end
    return self:stream(specs, entry, body.stream_options)
  end
  local status = status_of(mock.stream_status) or status_of(mock.status) or 200
  return self:send_json(status, model.completion({ id = self.completion_id, created = self.created,
    model = self.model, prompt_tokens = self.prompt_tokens }, specs, entry))
end

function Exchange:chunk(choices, usage)
  local obj = { id = self.completion_id, object = "chat.completion.chunk",
    created = self.created, model = self.model, system_fingerprint = "fp_llmchat",
    service_tier = "default", choices = choices }
  if usage ~= nil then obj.usage = usage end
  return obj
end

function Exchange:stream(specs, entry, stream_options)
  local mock = self.mock
  local eol = mock.crlf == true and "\r\n" or "\n"
  local include_usage = is_tab(stream_options) and stream_options.include_usage == true
  local usage_mode = is_str(mock.usage_mode) and mock.usage_mode or (include_usage and "final")
  local usage = model.total_usage(self.prompt_tokens, specs, entry)
  local size = math.max(1, floor(num(mock.chunk_size) or 4))
  local chunk_delay = num(mock.chunk_delay)
  local out = self:sse_writer()
  local first = true

  local function event(obj)
    if mock.comments == true then out.write(": OPENROUTER PROCESSING" .. eol .. eol) end
    if first then self:echo_into(obj); first = false end
    out.write("data: " .. json.encode(obj) .. eol .. eol)
  end

  self:start_stream(status_of(mock.status) or 200, nil)

  -- interleave the choices' deltas, then their finish chunks
  local lists, events, longest = {}, {}, 0
  for i, s in ipairs(specs) do
    lists[i] = model.choice_deltas(s, entry, size)
    longest = math.max(longest, #lists[i])
  end
  for k = 1, longest do
    for i = 1, #specs do
      if lists[i][k] then
        local ev = lists[i][k]
        ev.choice = i
        events[#events + 1] = ev
      end
    end
  end
  for i, s in ipairs(specs) do
    events[#events + 1] = { choice = i, finish = s.finish_reason, delta = {} }
  end

  local stream_error = is_tab(mock.stream_error) and mock.stream_error or nil
  if mock.echo_auth == true then
    stream_error = { after = num(mock.echo_after) or 1, error = scenario.secret_error(self.req) }
  end
  local truncate_after = num(mock.truncate_after)
  local stall, stall_after = num(mock.stall), num(mock.stall_after) or 1
  local sent_content, sent_bytes, last_finish = 0, 0, #events
  for idx, ev in ipairs(events) do
    if not ev.role then
      if stream_error and sent_content >= (num(stream_error.after) or 0) then
        local err = is_tab(stream_error.error) and stream_error.error
          or { message = "stream failed", code = "server_error" }
        local obj = self:chunk(array{ { index = 0, delta = {}, finish_reason = "error" } })
        obj.error = err
        event(obj)
        if stream_error.done == true then out.write("data: [DONE]" .. eol .. eol) end
        out.flush()
        return self:end_chunks()
      end
      if truncate_after and sent_content >= truncate_after then
        out.flush()
        if mock.truncate_abrupt == true then self.conn:abort(mock.reset == true) end
        return self:end_chunks()
      end
      if mock.drop == "mid_body" and sent_content >= 1 then
        out.flush()
        self.conn:abort(mock.reset == true)
      end
      if stall and stall > 0 and sent_content >= stall_after then
        out.flush()
        sleep(stall)
        stall = nil
      end
    end
    if chunk_delay and chunk_delay > 0 and idx > 1 then sleep(chunk_delay) end
    local choice = { index = ev.choice - 1, delta = ev.delta, logprobs = NULL,
      finish_reason = ev.finish or NULL }
    local chunk_usage
    if usage_mode == "final" and include_usage then chunk_usage = NULL end
    sent_bytes = sent_bytes + (ev.bytes or 0)
    if usage_mode == "every" then
      chunk_usage = model.make_usage(self.prompt_tokens, tokens(sent_bytes), 0)
      if idx == last_finish then chunk_usage = usage end
    end
    local obj = self:chunk(array{ choice }, chunk_usage)
    if idx == last_finish then
      if usage_mode == "finish" then obj.usage = usage end
      if usage_mode == "x_groq" then obj.x_groq = { id = self.request_id, usage = usage } end
    end
    event(obj)
    if not ev.role and not ev.finish then sent_content = sent_content + 1 end
  end
  if usage_mode == "final" then event(self:chunk(array(), usage)) end
  if mock.no_done ~= true then out.write("data: [DONE]" .. eol .. eol) end
  out.flush()
  self:end_chunks()
end

-- N chunks of chunk_size bytes, built once and written in big batches: flat memory.
function Exchange:long_stream(n, entry, stream_options)
  local mock = self.mock
  local eol = mock.crlf == true and "\r\n" or "\n"
  local size = math.max(1, floor(num(mock.chunk_size) or 4))
  local function data(obj) return "data: " .. json.encode(obj) .. eol .. eol end
  local function choice(delta, finish)
    return array{ { index = 0, delta = delta, logprobs = NULL, finish_reason = finish or NULL } }
  end
  self:start_stream(status_of(mock.status) or 200, nil)
  self:send_chunk(data(self:echo_into(self:chunk(choice{ role = "assistant", content = "",
    refusal = NULL }))))
  local one = data(self:chunk(choice{ content = util.filler(size) }))
  local per_batch = math.max(1, floor(262144 / #one))
  local framed -- one full batch with its chunk framing, built once
  local left = n
  while left > 0 do
    local k = math.min(left, per_batch)
    if k == per_batch and not self.gzip then
      if not framed then
        local batch = srep(one, per_batch)
        framed = self.chunked and (sformat("%x\r\n", #batch) .. batch .. "\r\n") or batch
      end
      self.conn:send(framed)
    else
      self:send_chunk(srep(one, k))
    end
    left = left - k
  end
  local usage = is_tab(entry.usage) and entry.usage
    or model.make_usage(self.prompt_tokens, tokens(n * size), 0)
  local include_usage = is_tab(stream_options) and stream_options.include_usage == true
  self:send_chunk(data(self:chunk(choice({}, "stop"))))
  if include_usage then self:send_chunk(data(self:chunk(array(), usage))) end
  if mock.no_done ~= true then self:send_chunk("data: [DONE]" .. eol .. eol) end
  self:end_chunks()
end

-- Replay of recorded bytes: a string, or a list of strings written with chunk_delay between.
function Exchange:raw_stream()
  local mock = self.mock
  local out = self:sse_writer()
  self:start_stream(status_of(mock.status) or 200, nil)
  local pieces = is_tab(mock.raw) and mock.raw or { mock.raw }
  local delay = num(mock.chunk_delay)
  for i, piece in ipairs(pieces) do
    if i > 1 and delay and delay > 0 then out.flush(); sleep(delay) end
    out.write(tostring(piece))
  end
  out.flush()
  if mock.truncate_abrupt == true then self.conn:abort(mock.reset == true) end
  self:end_chunks()
end

return M
