--- llmchat.endpoints: each endpoint described once.
--
-- An endpoint says what is specific to it; llmchat.call does everything else (retries,
-- timeouts, errors, logging, start/poll, coroutines, cancellation). Fields:
--   name            for messages
--   method          "POST" (default) or "GET" ...
--   path            function(client, body) -> path under base_url (body may be changed)
--   body            function(client, params, stream) -> the request body table, or nil
--   consumer        what the C request does with an SSE answer: "chat" (the chat-chunk
--                   assembler) or "events" (every event, typed; assembled in Lua)
--   assembler       for "events": function(call) -> an assembler object (see responses.lua)
--   result          function(decoded, call) -> res | nil, err   (a JSON answer)
--   stream_result   function(call, req, status, headers) -> res | nil, err (an SSE answer)
--   partial         function(call, req) -> what a stream delivered so far
--   status_field    true: res.status is the endpoint's own field (res.http_status is HTTP)
--   error_under_2xx function(decoded) -> true when a 2xx body is an error object
--   raw             true: the answer is returned as res.body, not decoded
local json = require("llmchat.json")
local secret_of = require("llmchat.call").secret_of
local errors = require("llmchat.errors")
local result = require("llmchat.result")
-- the Responses API's shaping is loaded on its first use (a script that only chats pays
-- nothing for it)
local responses = setmetatable({}, { __index = function(t, k)
  local mod = require("llmchat.responses")
  setmetatable(t, { __index = mod })
  return mod[k]
end })
local core = require("llmchat.core")
local schema = require("llmchat.schema")

local M = {}

-- Request fields that belong to llmchat and are never sent in the body.
local OWN = {
  on_delta = true, on_event = true, on_done = true, headers = true, timeout = true,
  connect_timeout = true, idle_timeout = true, max_retries = true, schema = true,
  schema_name = true, max_response_size = true, retry_base_delay = true,
  retry_max_delay = true, max_retry_after = true, decode_chunks = true, extra_body = true,
  api = true,
}
M.OWN = OWN

local function body_of(client, params)
  local body = {}
  for k, v in pairs(params) do
    if not OWN[k] then body[k] = v end
  end
  if type(params.extra_body) == "table" then
    for k, v in pairs(params.extra_body) do body[k] = v end
  end
  if body.model == nil then body.model = client.model end
  return body
end
M.body_of = body_of

local function pct(s)
  return (s:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

---------------------------------------------------------------------------
-- chat completions

local function chat_error_check(d) return d.choices == nil end

M.chat = {
  name = "chat", consumer = "chat", error_under_2xx = chat_error_check,
  path = function(client, body)
    if client._preset.model_in_path then
      local model = body.model
      if type(model) ~= "string" or model == "" then
        error("llmchat: this provider takes the model in the URL path: give model", 4)
      end
      body.model = nil
      return "/" .. pct(model)
    end
    return "/chat/completions"
  end,
  body = function(client, params, stream)
    local body = body_of(client, params)
    if stream then
      body.stream = true
      if client.stream_usage and body.stream_options == nil then
        body.stream_options = { include_usage = true }
      end
    end
    if (params.schema ~= nil or params.schema_name ~= nil) and body.response_format == nil then
      body.response_format = schema.response_format(params, 4)
    end
    return body
  end,
  result = function(decoded) return result.from_completion(decoded) end,
  partial = function(_, req)
    if req:stream_state() then return result.from_assembled(req:result()) end
    return nil
  end,
  stream_result = function(call, req, status, headers, done_marker, finished, events)
    local partial = result.from_assembled(req:result())
    local ej = req:error_json()
    if ej then
      local e = json.decode(ej)
      if type(e) ~= "table" then e = { message = ej } end
      local code_ = e.code
      return nil, errors.new({ kind = "stream_error", status = status, message = tostring(e.message or ej),
        code = (type(code_) == "string" or type(code_) == "number") and code_ or nil,
        error = e, headers = headers, partial = partial }, secret_of(call))
    end
    if not (done_marker or finished) then
      return nil, errors.new({ kind = "protocol", status = status, headers = headers,
        message = ("stream ended before a finish_reason or [DONE] (%d events)"):format(events),
        partial = partial }, secret_of(call))
    end
    return partial
  end,
}

---------------------------------------------------------------------------
-- the Responses API

M.responses = {
  name = "responses", consumer = "events", status_field = true,
  error_under_2xx = function(d) return d.object ~= "response" and d.output == nil end,
  path = function() return "/responses" end,
  body = function(client, params, stream)
    local body = body_of(client, params)
    if stream then body.stream = true end
    body.text = schema.text_format(params, 4) or body.text
    return body
  end,
  assembler = function(call) return responses.assembler(call) end,
  result = function(decoded, call)
    local res = responses.from_response(decoded)
    if res.status == "failed" then
      local e = type(decoded.error) == "table" and decoded.error or {}
      return nil, errors.new({ kind = "server", message = tostring(e.message or "the response failed"),
        code = e.code, error = decoded.error, partial = res }, secret_of(call))
    end
    return res
  end,
  partial = function(call) return call.state and call.state:partial() or nil end,
  stream_result = function(call, _, status, headers)
    return call.state:finish(status, headers)
  end,
}

---------------------------------------------------------------------------
-- embeddings

M.embeddings = {
  name = "embeddings",
  path = function() return "/embeddings" end,
  body = function(client, params)
    local body = body_of(client, params)
    body.stream = nil
    -- float32 as base64 is a quarter of the JSON digits; decoded in C (as openai-python does)
    if body.encoding_format == nil then body.encoding_format = "base64" end
    return body
  end,
  result = function(decoded, call)
    local data = decoded.data
    if type(data) ~= "table" then
      return nil, errors.new({ kind = "protocol", message = "embeddings: the answer has no data array" }, secret_of(call))
    end
    local vectors = {}
    for i, item in ipairs(data) do
      if type(item) ~= "table" then
        return nil, errors.new({ kind = "protocol", message = "embeddings: data[" .. i .. "] is not an object" }, secret_of(call))
      end
      local v = item.embedding
      if type(v) == "string" then
        local floats, ferr = core.base64_floats(v)
        if not floats then
          return nil, errors.new({ kind = "protocol", message = "embeddings: data[" .. i .. "]: " .. ferr }, secret_of(call))
        end
        item.embedding = floats
        v = floats
      elseif type(v) ~= "table" then
        return nil, errors.new({ kind = "protocol", message = "embeddings: data[" .. i .. "] has no embedding" }, secret_of(call))
      end
      local idx = tonumber(item.index)
      idx = idx and idx + 1 or i
      if vectors[idx] ~= nil then
        return nil, errors.new({ kind = "protocol", message = "embeddings: index " .. (idx - 1) .. " twice" }, secret_of(call))
      end
      vectors[idx] = v
    end
    for i = 1, #data do
      if vectors[i] == nil then
        return nil, errors.new({ kind = "protocol", message = "embeddings: index " .. (i - 1) .. " missing" }, secret_of(call))
      end
    end
    decoded.vectors = vectors
    decoded.vector = vectors[1]
    return decoded
  end,
}

---------------------------------------------------------------------------
-- models, and any JSON endpoint (files, batches ...)

local function json_result(decoded) return decoded end

M.models = {
  name = "models", method = "GET",
  error_under_2xx = function(d) return d.data == nil end,
  path = function() return "/models" end,
  result = json_result,
}

--- A JSON endpoint at `path` with `method`: the answer decoded, as it is.
function M.json(method, path)
  return { name = path, method = method, path = function() return path end,
    error_under_2xx = function(d) return d.object == nil and d.id == nil and d.data == nil end,
    -- a batch's or a file's own `status` stays; the HTTP status is res.http_status
    result = json_result, consumer = "events", status_field = true }
end

--- An endpoint whose answer is returned undecoded (res.body): file contents.
function M.raw(method, path)
  return { name = path, method = method, path = function() return path end, raw = true }
end

return M
