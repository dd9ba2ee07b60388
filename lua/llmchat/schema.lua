--- llmchat.schema: structured output, the one helper for every caller.
--
-- `schema = <JSON schema>` (and `schema_name`) on a request asks the model for
-- JSON that follows the schema; the answer is decoded into `res.data`.
--   chat:      response_format = { type = "json_schema", json_schema = { name =, schema =, strict = true } }
--   responses: text = { format = { type = "json_schema", name =, schema =, strict = true } }
-- A plain `response_format` (chat) or `text.format` (responses) of type
-- json_object / json_schema is sent as given; its answer is decoded into
-- `res.data` when it decodes, and no error is made when it does not.
local json = require("llmchat.json")
local errors = require("llmchat.errors")

local M = {}

local DEFAULT_NAME = "response"

-- Misuse raises at `level` as error() counts it from check's own caller's
-- caller: 1 blames the function that called response_format / text_format.
local function check(params, level)
  local s = params.schema
  if s ~= nil and type(s) ~= "table" then
    error("llmchat: 'schema' must be a table (a JSON schema)", level + 2)
  end
  local name = params.schema_name
  if name ~= nil and type(name) ~= "string" then
    error("llmchat: 'schema_name' must be a string", level + 2)
  end
  return s
end

--- The chat `response_format` for params.schema, or nil when there is no
-- schema or params.response_format is set (it wins). A schema that is not a
-- table raises; `level` is error()'s level as seen from the caller (default
-- 1: the caller is blamed, 2: the caller's caller).
function M.response_format(params, level)
  local s = check(params, level or 1)
  if s == nil or params.response_format ~= nil then return nil end
  return { type = "json_schema", json_schema = {
    name = params.schema_name or DEFAULT_NAME, schema = s, strict = true } }
end

--- The Responses API `text` field for params.schema, or nil when there is no
-- schema or params.text already has a format (it wins). Other keys of
-- params.text (verbosity, ...) are kept.
function M.text_format(params, level)
  local s = check(params, level or 1)
  if s == nil then return nil end
  local text = params.text
  if type(text) == "table" and text.format ~= nil then return nil end
  local out = {}
  if type(text) == "table" then for k, v in pairs(text) do out[k] = v end end
  out.format = { type = "json_schema", name = params.schema_name or DEFAULT_NAME, schema = s, strict = true }
  return out
end

--- The HTTP status of a result: res.http_status, or res.status when it is a
-- number (a Responses API result's status is its own "completed" ...).
function M.http_status(res)
  if type(res.http_status) == "number" then return res.http_status end
  if type(res.status) == "number" then return res.status end
  return nil
end

local JSON_TYPES = { json_object = true, json_schema = true }

-- Did the request ask for JSON without a schema of ours?
local function asked_for_json(params)
  local rf = params.response_format
  if type(rf) == "table" and JSON_TYPES[rf.type] then return true end
  local text = params.text
  return type(text) == "table" and type(text.format) == "table" and JSON_TYPES[text.format.type] or false
end

--- Decodes the answer of a request made with `params` into res.data.
-- With params.schema, an answer that is not JSON is an error: nil and an
-- error of kind "protocol" (err.raw: the text; err.refusal; err.partial: res).
-- With only a JSON response_format / text.format, res.data is set when the
-- answer decodes. Returns res (or nil, err). `secret` is scrubbed from the error.
function M.decode(res, params, secret)
  local text = type(res.content) == "string" and res.content or nil
  if params.schema ~= nil then
    local data, derr = json.decode(text or "")
    if data == nil then
      return nil, errors.new({ kind = "protocol", status = M.http_status(res), headers = res.headers,
        message = "the answer is not the JSON the schema asks for: " .. tostring(derr),
        body = res.content, raw = res.content, refusal = res.refusal, partial = res }, secret)
    end
    res.data = data
  elseif text and asked_for_json(params) then
    res.data = json.decode(text)
  end
  return res
end

return M
