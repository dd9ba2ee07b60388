---@meta llmchat.json
-- LuaCATS annotations: llmchat.json (docs/reference/json.md).

---@class llmchat.json
---@field null lightuserdata the JSON null sentinel (cjson.null)
---@field cjson table a private lua-cjson instance
---@field features { array_mt: boolean, empty_array: boolean, integers: boolean }
local json = {}

---JSON text, or nil and a message for data that cannot be sent (invalid UTF-8).
---@param v any
---@return string? text
---@return string? err
function json.encode(v) end

---The value, or nil and "... at character N"; raw keeps nulls and floats as they are.
---@param s string
---@param raw? boolean
---@return any value
---@return string? err
function json.decode(s, raw) end

---Marks t (default {}) to be sent as a JSON array.
---@generic T: table
---@param t? T
---@return T
function json.array(t) end

---Marks t (default {}) to be sent as a JSON object.
---@generic T: table
---@param t? T
---@return T
function json.object(t) end

---The decoding's normalisation applied to a value decoded elsewhere.
---@param v any
---@return any
function json.normalize(v) end

return json
