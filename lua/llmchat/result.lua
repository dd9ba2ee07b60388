--- Shapes responses into the public result, and failed responses into errors.
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local messages = require("llmchat.message")

local M = {}

local function first_reasoning(msg)
  local r = msg.reasoning_content
  if r == nil then r = msg.reasoning end
  if type(r) ~= "string" then r = nil end
  return r
end

-- A choice's message without its reasoning text: that is kept on the choice
-- (choice.reasoning, res.reasoning), not in the message.
local function without_reasoning(msg)
  local m = {}
  for k, v in pairs(msg) do
    if k ~= "reasoning_content" and k ~= "reasoning" then m[k] = v end
  end
  m.role = m.role or "assistant"
  return m
end

--- Fills the top-level convenience fields from choice 1. res.message is the
-- assistant message as a history takes it back (llmchat.message.assistant,
-- the same shaping a conversation stores); res.choices[i].message keeps
-- everything the provider sent (annotations, audio data, extensions).
local function finish_result(res)
  local c1 = res.choices and res.choices[1]
  if c1 then
    local msg = c1.message
    res.message = msg and messages.assistant(msg)
    res.content = msg and msg.content
    if type(res.content) ~= "string" and type(res.content) ~= "table" then res.content = nil end
    res.reasoning = c1.reasoning
    res.refusal = msg and msg.refusal
    res.finish_reason = c1.finish_reason
    res.tool_calls = res.message and res.message.tool_calls
  end
  return res
end

--- From a decoded chat.completion body (freshly decoded, so it is reshaped in
-- place: provider extensions such as OpenRouter's provider or Perplexity's
-- citations stay where they are).
function M.from_completion(body)
  local choices, out = body.choices, {}
  if type(choices) == "table" then
    for i, ch in ipairs(choices) do
      if type(ch) == "table" then
        local msg = ch.message
        if type(msg) ~= "table" then msg = {} end
        local reasoning = first_reasoning(msg)
        if msg.reasoning_content ~= nil or msg.reasoning ~= nil then
          msg = without_reasoning(msg)
        elseif msg.role == nil then
          msg.role = "assistant"
        end
        out[i] = { index = ch.index or (i - 1), finish_reason = ch.finish_reason,
          logprobs = ch.logprobs, reasoning = reasoning, message = msg }
      end
    end
  end
  body.choices = out
  return finish_result(body)
end

--- From the C assembler's table (a streamed completion).
function M.from_assembled(a)
  local res = {
    id = a.id, model = a.model, created = a.created, object = "chat.completion",
    system_fingerprint = a.system_fingerprint, choices = {},
  }
  if a.usage_json then res.usage = json.decode(a.usage_json) end
  for i, ch in ipairs(a.choices or {}) do
    local msg = { role = ch.role or "assistant", content = ch.content, refusal = ch.refusal }
    if ch.tool_calls and #ch.tool_calls > 0 then
      local calls = {}
      for j, tc in ipairs(ch.tool_calls) do
        calls[j] = { id = tc.id, type = tc.type or "function",
          ["function"] = { name = tc.name, arguments = tc.arguments or "" } }
      end
      msg.tool_calls = calls
    end
    -- the role chunk's content "" is not an answer: a refusal or a tool-call
    -- turn has content nil, as the non-streamed response has null
    if msg.content == "" and (msg.refusal or msg.tool_calls) then msg.content = nil end
    res.choices[i] = { index = ch.index or (i - 1), finish_reason = ch.finish_reason,
      reasoning = ch.reasoning, message = msg }
  end
  return finish_result(res)
end

--- The <title> of an HTML page, whitespace folded; nil when it has none.
local function html_title(body)
  local t = body:match("<[Tt][Ii][Tt][Ll][Ee][^>]*>(.-)</[Tt][Ii][Tt][Ll][Ee]>")
  if t then t = t:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "") end
  return t
end

M.html_title = html_title

local function snippet(body)
  local s = body:sub(1, 200):gsub("%s+", " ")
  if #body > 200 then s = s .. "..." end
  return s
end

--- Seconds to wait from retry-after-ms / Retry-After (seconds or HTTP date).
function M.retry_after(headers)
  if not headers then return nil end
  -- finite and sane only: "inf" or "nan" from a server must not stall a batch
  local ms = tonumber(headers["retry-after-ms"])
  if ms and ms >= 0 and ms < 1e12 then return ms / 1000 end
  local ra = headers["retry-after"]
  if not ra then return nil end
  local secs = tonumber(ra)
  if secs then return (secs >= 0 and secs < 1e9) and secs or nil end
  -- IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
  local d, mon, y, h, mi, s = ra:match("%a+,%s+(%d+)%s+(%a+)%s+(%d+)%s+(%d+):(%d+):(%d+)")
  if not d then return nil end
  local months = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
    Sep = 9, Oct = 10, Nov = 11, Dec = 12 }
  local m = months[mon]
  if not m then return nil end
  -- days from civil (UTC), no reliance on the local time zone
  y, m, d = tonumber(y), m, tonumber(d)
  local yy = m <= 2 and y - 1 or y
  local floor = math.floor
  local era = floor((yy >= 0 and yy or yy - 399) / 400)
  local yoe = yy - era * 400
  local doy = floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  local t = days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
  local delta = t - os.time()
  return delta > 0 and delta or 0
end

--- An error from a non-2xx response (or a 2xx that carries only an error).
function M.http_error(status, headers, body, secret)
  local kind = errors.kind_for_status(status)
  local message, code, etype, param
  local ct = headers and headers["content-type"] or ""
  local decoded = body ~= "" and json.decode(body) or nil
  if type(decoded) == "table" then
    local e = decoded.error
    if type(e) == "table" then
      message = e.message
      code = e.code
      etype = e.type
      param = e.param
      if type(e.metadata) == "table" and type(e.metadata.raw) == "string" and not message then
        message = e.metadata.raw
      end
    elseif type(e) == "string" then
      message = e
    elseif type(decoded.message) == "string" then
      message = decoded.message
    elseif type(decoded.detail) == "string" then
      message = decoded.detail
    end
  elseif body ~= "" and (ct:find("html", 1, true) or body:find("^%s*<")) then
    local t = html_title(body)
    message = "HTML page" .. (t and (": " .. t) or "") .. " (content-type " .. (ct ~= "" and ct or "none") .. ")"
  elseif body ~= "" then
    message = snippet(body)
  end
  if type(message) ~= "string" or message == "" then
    message = "HTTP " .. tostring(status)
  end
  if code ~= nil and type(code) ~= "string" and type(code) ~= "number" then code = nil end
  return errors.new({
    kind = kind, status = status, message = message, code = code, type = etype, param = param,
    retry_after = M.retry_after(headers), body = body, headers = headers,
    request_id = headers and (headers["x-request-id"] or headers["request-id"]),
  }, secret)
end

return M
