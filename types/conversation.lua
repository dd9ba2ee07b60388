---@meta llmchat.conversation
-- LuaCATS annotations: llmchat.conversation (docs/reference/conversation.md), and the
-- helper modules llmchat.schema and llmchat.message.

---@class llmchat.ToolSpec
---@field name string
---@field description? string
---@field parameters? table a JSON schema
---@field strict? boolean
---@field handler? fun(args: table, call: table): any

---@class llmchat.ConversationOptions
---@field client llmchat.Client
---@field model? string
---@field system? string
---@field system_role? string default "system"
---@field tools? llmchat.ToolSpec[]
---@field messages? llmchat.Message[]
---@field max_tool_rounds? integer default 10
---@field max_context_tokens? integer
---@field on_tool_call? fun(call: table): boolean?
---@field on_tool_result? fun(call: table, text: string)
---@field on_request? fun(params: table)
---@field stream_usage? boolean default true
---@field schema? table
---@field schema_name? string
---@field api? llmchat.Api
---@field usage? table
---@field [string] any request fields sent with every call

---@class llmchat.SayOptions: llmchat.Request
---@field max_tool_rounds? integer
---@field max_context_tokens? integer
---@field on_tool_call? fun(call: table): boolean?
---@field on_tool_result? fun(call: table, text: string)
---@field on_request? fun(params: table)

---@class llmchat.ConversationUsage
---@field prompt_tokens integer
---@field completion_tokens integer
---@field total_tokens integer
---@field cached_tokens integer
---@field reasoning_tokens integer
---@field calls integer
---@field cost? number when the provider reported one

---@class llmchat.Conversation
---@field client llmchat.Client
---@field api llmchat.Api
---@field model? string
---@field system? string
---@field system_role string
---@field max_tool_rounds integer
---@field max_context_tokens? integer
---@field on_tool_call? fun(call: table): boolean?
---@field on_tool_result? fun(call: table, text: string)
---@field on_request? fun(params: table)
---@field stream_usage boolean
---@field params table request fields sent with every call
local Conversation = {}

---One turn: runs tools until the model answers. The history is unchanged on failure.
---@param input? string|table
---@param opts? llmchat.SayOptions
---@return llmchat.Result? res
---@return llmchat.Error? err
function Conversation:say(input, opts) end

---Adds (or replaces) a tool.
---@param spec llmchat.ToolSpec|table
---@return llmchat.Conversation
function Conversation:tool(spec) end

---Removes a tool; true when there was one.
---@param name string
---@return boolean
function Conversation:remove_tool(name) end

---The tools as the API sees them.
---@return table[]
function Conversation:tools() end

---The history as sent (system first), a copy.
---@return llmchat.Message[]
function Conversation:messages() end

---The last message (a copy) and the last result.
---@return llmchat.Message?
---@return llmchat.Result?
function Conversation:last() end

---Appends messages as they are.
---@param ... llmchat.Message
---@return llmchat.Conversation
function Conversation:append(...) end

---Drops the last exchange; returns the dropped messages.
---@return llmchat.Message[]?
function Conversation:undo() end

---An independent copy.
---@return llmchat.Conversation
function Conversation:fork() end

---Forgets the messages (keeps system prompt, tools, usage).
---@return llmchat.Conversation
function Conversation:clear() end

---Estimated prompt tokens of the next request.
---@return integer
function Conversation:estimate_tokens() end

---Totals across every call, tool rounds included.
---@return llmchat.ConversationUsage
function Conversation:usage() end

---Dollars, from prices per million tokens (or the provider-reported cost).
---@param prices? { input: number, output: number, cached_input: number? }
---@return number? dollars
---@return llmchat.Error? err
function Conversation:cost(prices) end

---The saved form.
---@return table
function Conversation:to_table() end

---Writes the conversation as JSON.
---@param path string
---@return boolean? ok
---@return llmchat.Error? err
function Conversation:save(path) end

---@class llmchat.conversation
---@field FORMAT_VERSION integer
---@field DEFAULT_MAX_TOOL_ROUNDS integer
---@field OWN table<string, boolean> option names that are not request fields
---@field Conversation table the class of conversations
---@overload fun(opts: llmchat.ConversationOptions): llmchat.Conversation
local conversation = {}

---A conversation.
---@param opts llmchat.ConversationOptions
---@return llmchat.Conversation
function conversation.new(opts) end

---A conversation saved by conv:save.
---@param path string
---@param client llmchat.Client
---@param opts? table
---@return llmchat.Conversation? conv
---@return llmchat.Error? err
function conversation.load(path, client, opts) end

---The same from conv:to_table()'s table.
---@param data table
---@param client llmchat.Client
---@param opts? table
---@return llmchat.Conversation? conv
---@return llmchat.Error? err
function conversation.from_table(data, client, opts) end

---A rough prompt-token estimate.
---@param messages llmchat.Message[]
---@param tools? table[]
---@return integer
function conversation.estimate_tokens(messages, tools) end

---The estimate for one message.
---@param m llmchat.Message
---@return integer
function conversation.message_tokens(m) end

---An assistant message shaped as the API takes it back.
---@param msg table
---@return llmchat.Message
function conversation.history_assistant(msg) end

---A deep copy of plain data.
---@generic T
---@param v T
---@return T
function conversation.deep_copy(v) end

return conversation
