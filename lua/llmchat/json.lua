--- JSON for llmchat: the C core for decoding and encoding, lua-cjson as a fallback.
--
-- Responses are decoded by the C core in one pass (core.json_decode, src/jdecode.c):
-- it accepts what lua-cjson's strict decoder accepts (the two deliberate differences
-- are in src/jscan.h) and builds the value already normalised: JSON null never
-- reaches a user where nil is expected (object members that are null are absent; in
-- arrays and at the top level null is `json.null`, i.e. cjson.null, so lengths hold),
-- integer literals are exact Lua integers and whole floats within 2^53 become
-- integers on Lua 5.3+ (token counts, `created`, indexes). With `raw`, nulls stay
-- `json.null` everywhere and numbers with a fraction or exponent stay floats.
-- No metatables are set on decoded tables. Should a core without json_decode be
-- loaded, decoding falls back to cjson.decode plus json_normalize (the same values,
-- except integer literals beyond 2^53, which cjson rounds, and a top-level number,
-- which json_normalize leaves as cjson gives it).
--
-- Requests are always encoded by the C core (exact integers, `[]` for empty arrays
-- where the API expects arrays, UTF-8 untouched). Debian's lua-cjson 2.1.0 decodes
-- every number as a float and keeps 14 significant digits when encoding; the fork
-- LuaRocks serves decodes integers and has array_mt. Its features are detected at
-- run time; `M.cjson` is a private instance for callers that want it.
local core = require("llmchat.core")
local cjson_mod = require("cjson")

local M = {}

-- A private instance: the caller's cjson settings are theirs.
local cjson = cjson_mod.new and cjson_mod.new() or cjson_mod
if cjson.decode_invalid_numbers then pcall(cjson.decode_invalid_numbers, false) end
if cjson.decode_max_depth then pcall(cjson.decode_max_depth, 1000) end

M.null = cjson_mod.null
M.cjson = cjson
M.features = {
  array_mt = cjson_mod.array_mt ~= nil,
  empty_array = cjson_mod.empty_array ~= nil,
  integers = math.type ~= nil and math.type(cjson.decode("[1]")[1]) == "integer",
}

local array_mt = { __jsontype = "array" }
local object_mt = { __jsontype = "object" }

--- Marks a table as a JSON array (so `{}` is sent as `[]`).
function M.array(t) return setmetatable(t or {}, array_mt) end
--- Marks a table as a JSON object (so `{}` is sent as `{}` even under an array key).
function M.object(t) return setmetatable(t or {}, object_mt) end

-- Keys whose empty table the OpenAI API expects as an array.
local array_keys = {
  messages = true, tools = true, tool_calls = true, stop = true, content = true,
  required = true, enum = true, anyOf = true, oneOf = true, allOf = true,
  prefixItems = true, annotations = true, modalities = true, functions = true,
  models = true, order = true, ignore = true, only = true, transforms = true,
  input = true, include = true, ["type"] = false, examples = true,
}
local array_mts = { [array_mt] = true }
if cjson_mod.array_mt then array_mts[cjson_mod.array_mt] = true end
if cjson_mod.empty_array_mt then array_mts[cjson_mod.empty_array_mt] = true end
local config = { array_keys = array_keys, array_mts = array_mts }

--- Encodes a Lua value as JSON. Returns the string, or nil and a message for
-- data that cannot be sent (invalid UTF-8). Misuse (functions, NaN, cycles)
-- raises.
function M.encode(v)
  if v == cjson_mod.empty_array then return "[]" end
  return core.json_encode(v, config)
end

-- Drops nulls from objects (nil is what a Lua user expects), keeps them in
-- arrays as json.null (a hole would change the length), and turns integral
-- floats into integers on Lua 5.3+. Done in C (src/jencode.c).
local normalize = core.json_normalize
M.normalize = normalize

--- Decodes JSON text. Returns the value, or nil and a message ("... at
-- character N"). Normalised (see above) unless `raw` is true.
if core.json_decode then
  M.decode = core.json_decode
else
  function M.decode(s, raw)
    if type(s) ~= "string" then return nil, "expected a JSON string, got " .. type(s) end
    local ok, v = pcall(cjson.decode, s)
    if not ok then return nil, (tostring(v):gsub("^.-:%d+: ", "")) end
    if raw then return v end
    return normalize(v)
  end
end

return M
