---@meta llmchat.message
-- LuaCATS annotations: llmchat.message, the assistant-message shaper (docs/reference/conversation.md).

---@class llmchat.message
local message = {}

---The assistant message as the API takes it back in a history.
---@param msg table
---@return llmchat.Message
function message.assistant(msg) end

---A user message from a string, parts or a message.
---@param input any
---@return llmchat.Message
function message.user(input) end

---A saved message restored.
---@param m table
---@return llmchat.Message
function message.restore(m) end

---A copy of a list.
---@param list table
---@return table
function message.copy_list(list) end

---A deep copy of plain data.
---@generic T
---@param v T
---@return T
function message.deep_copy(v) end

return message
