--- llmchat.testing.json: the test server's own JSON writer (and a safe decoder).
--
-- lua-cjson 2.1.0 writes integers >= 1e14 imprecisely and cannot write an empty array, so
-- the server encodes its own output: integers with %d, arrays marked with array(), keys in
-- the order the provider uses (a rank table per wire format), unknown keys after them, sorted.
local cjson = require("cjson")

local sformat, sbyte, concat = string.format, string.byte, table.concat
local floor, huge = math.floor, math.huge

local M = {}

local json = cjson.new()
-- decode [] as a marked array where the cjson build supports it (openresty fork)
pcall(function() json.decode_array_with_array_mt(true) end)

M.null = cjson.null

local ARRAY_MT = { __jsontype = "array" }
function M.array(t) return setmetatable(t or {}, ARRAY_MT) end

--- A key order: a list of names, earliest first; then base's names (another rank), if given.
function M.rank(names, base)
  local r = {}
  for k, v in pairs(base or {}) do r[k] = #names + v end
  for i, k in ipairs(names) do r[k] = i end
  return r
end

-- Chat completions: the order OpenAI uses.
M.CHAT_RANK = M.rank{ "error", "id", "object", "created", "model", "choices", "data", "index",
  "message", "delta", "role", "content", "refusal", "reasoning_content", "reasoning",
  "tool_calls", "type", "function", "name", "arguments", "annotations", "logprobs",
  "finish_reason", "usage", "prompt_tokens", "completion_tokens", "total_tokens",
  "prompt_tokens_details", "cached_tokens", "audio_tokens", "completion_tokens_details",
  "reasoning_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens",
  "service_tier", "system_fingerprint", "x_groq", "owned_by", "param", "code" }

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function escape_char(c) return ESCAPES[c] or sformat("\\u%04x", sbyte(c)) end
local function encode_string(s) return '"' .. s:gsub('[%c"\\]', escape_char) .. '"' end

function M.number(x)
  if x ~= x or x == huge or x == -huge then return "null" end
  if math.type and math.type(x) == "integer" then return sformat("%d", x) end
  if x == floor(x) and x > -2^53 and x < 2^53 then return sformat("%d", x) end
  for digits = 14, 16 do
    local s = sformat("%." .. digits .. "g", x)
    if tonumber(s) == x then return s end
  end
  return sformat("%.17g", x)
end

function M.is_array(t)
  local mt = getmetatable(t)
  if mt and mt.__jsontype then return mt.__jsontype == "array" end
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" then return false end
    n = n + 1
  end
  return n > 0 and t[n] ~= nil
end
local is_array = M.is_array

local function encode_into(out, v, rank)
  local tv = type(v)
  if tv == "string" then out[#out + 1] = encode_string(v)
  elseif tv == "number" then out[#out + 1] = M.number(v)
  elseif tv == "boolean" then out[#out + 1] = v and "true" or "false"
  elseif tv == "table" then
    if is_array(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode_into(out, v[i], rank)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys, function(a, b)
        local ra, rb = rank[a] or huge, rank[b] or huge
        if ra ~= rb then return ra < rb end
        return a < b
      end)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        local item = v[k]
        if item == nil then item = v[tonumber(k)] end
        out[#out + 1] = (i > 1 and "," or "") .. encode_string(k) .. ":"
        encode_into(out, item, rank)
      end
      out[#out + 1] = "}"
    end
  else
    out[#out + 1] = "null" -- nil, cjson.null, functions
  end
end

--- JSON text of v; rank: the key order (default: chat completions').
function M.encode(v, rank)
  local out = {}
  encode_into(out, v, rank or M.CHAT_RANK)
  return concat(out)
end

--- The decoded value, or nil and a message.
function M.decode(s)
  local ok, v = pcall(json.decode, s)
  if ok then return v end
  return nil, tostring(v)
end

return M
