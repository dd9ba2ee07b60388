---@meta llmchat.schema
-- LuaCATS annotations: llmchat.schema, structured output (docs/reference/conversation.md).

---@class llmchat.schema
local schema = {}

---The chat response_format for params.schema; nil without one.
---@param params table
---@return table?
function schema.response_format(params) end

---The Responses API text field for params.schema; nil without one.
---@param params table
---@return table?
function schema.text_format(params) end

---res.data from res.content (nil, err when a schema was asked and the answer is not JSON).
---@param res llmchat.Result
---@param params table
---@return llmchat.Result? res
---@return llmchat.Error? err
function schema.decode(res, params) end

---The HTTP status of a result.
---@param res table
---@return integer?
function schema.http_status(res) end

return schema
