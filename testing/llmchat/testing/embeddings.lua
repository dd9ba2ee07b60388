--- llmchat.testing.embeddings: POST /v1/embeddings with deterministic vectors (the formula is
-- model.embedding, documented in docs/server.md). Adds the handler to the Exchange.
local json = require("llmchat.testing.json")
local util = require("llmchat.testing.util")
local model = require("llmchat.testing.model")
local Exchange = require("llmchat.testing.writers")

local floor = math.floor
local is_str, is_tab, num, status_of, tokens = util.is_str, util.is_tab, util.num,
  util.status_of, util.tokens
local array = json.array

local M = {}

M.RANK = json.rank{ "error", "object", "data", "index", "embedding", "model", "usage",
  "prompt_tokens", "total_tokens", "message", "type", "param", "code" }

M.DEFAULT_DIMENSIONS = 8
M.MAX_DIMENSIONS = 4096

local function invalid(message, param, code)
  return nil, { message = message, param = param or "input", code = code or "invalid_value" }
end

local function is_token_array(v)
  if not is_tab(v) or next(v) == nil then return false end
  for _, t in ipairs(v) do if type(t) ~= "number" then return false end end
  return json.is_array(v)
end

-- The texts to embed and the prompt token count, or nil and an error.
local function inputs(input)
  if input == nil then return invalid("Missing required parameter: 'input'.", "input",
    "missing_required_parameter") end
  if is_str(input) then
    if input == "" then return invalid("'input' cannot be an empty string.") end
    return { input }, tokens(#input)
  end
  if not is_tab(input) or next(input) == nil then
    return invalid("'input' must be a non-empty string, array of strings or array of tokens.")
  end
  if is_token_array(input) then return { model.token_text(input) }, #input end
  local texts, count = {}, 0
  for i, v in ipairs(input) do
    if is_str(v) and v ~= "" then
      texts[i], count = v, count + tokens(#v)
    elseif is_token_array(v) then
      texts[i], count = model.token_text(v), count + #v
    else
      return invalid("'input[" .. (i - 1) .. "]' must be a non-empty string or array of tokens.",
        "input[" .. (i - 1) .. "]")
    end
  end
  if #texts ~= #input then return invalid("'input' must be an array.") end
  return texts, count
end

--- The embeddings answer for a request body (no I/O), or nil, status, error.
function M.answer(body, model_name)
  local texts, count = inputs(body.input)
  if not texts then return nil, 400, count end
  local dims = M.DEFAULT_DIMENSIONS
  if body.dimensions ~= nil then
    dims = num(body.dimensions)
    if not dims or dims ~= floor(dims) or dims < 1 or dims > M.MAX_DIMENSIONS then
      return nil, 400, { message = "'dimensions' must be an integer from 1 to "
        .. M.MAX_DIMENSIONS .. ".", param = "dimensions", code = "invalid_value" }
    end
  end
  local format = body.encoding_format
  if format ~= nil and format ~= "float" and format ~= "base64" then
    return nil, 400, { message = "'encoding_format' must be 'float' or 'base64'.",
      param = "encoding_format", code = "invalid_value" }
  end
  local data = array()
  for i, text in ipairs(texts) do
    local v = model.embedding(text, dims)
    data[i] = { object = "embedding", index = i - 1,
      embedding = format == "base64" and model.float32_base64(v) or v }
  end
  return { object = "list", data = data, model = model_name,
    usage = { prompt_tokens = count, total_tokens = count } }
end

function Exchange:embeddings()
  local body = self:json_body()
  if not body then return end
  local mock = self:resolve_mock(body)
  self.model = is_str(mock.model) and mock.model or (is_str(body.model) and body.model)
    or "llmchat-embed"
  if self:before_response() then return end
  local obj, status, err = M.answer(body, self.model)
  if not obj then
    return self:send_error(status, err.message, "invalid_request_error", err.code, err.param)
  end
  return self:send_json(status_of(self.mock.status) or 200, obj, M.RANK)
end

return M
