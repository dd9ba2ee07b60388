--- llmchat.conversation: the turn loop. A conversation holds a history, a
-- tool registry and usage totals; say() asks the model, runs the tools it
-- calls, and asks again until it answers. Each model call is an ordinary
-- client:chat (or client:respond with api = "responses").
--
--   local conv = llmchat.conversation{ client = client, system = "You are terse." }
--   conv:tool{ name = "roll", description = "Roll dice",
--     parameters = { type = "object", properties = { n = { type = "integer" } } },
--     handler = function(args) return { total = 7 } end }
--   local res, err = conv:say("Roll two dice")
--
-- The concepts live beside it: conversation/history.lua (the stored
-- history), tools.lua (registry, running calls), budget.lua (the token
-- estimate, what a request carries), usage.lua (totals, cost), persist.lua
-- (the JSON file), api.lua (chat completions or the Responses API);
-- llmchat.message shapes the assistant message, llmchat.schema structured
-- output. Rules (see docs/conversation.md):
-- * A turn is atomic: its entries (user message, tool calls, tool results,
--   the answer) are built on the side and committed only when it succeeds.
-- * Usage counts what the provider billed: every call that returned a result,
--   tool rounds included, even if a later round of the same turn failed.
-- * Tool trouble is told to the model as the tool's result and the loop goes
--   on; only the caller's own hooks may raise.
local errors = require("llmchat.errors")
local message = require("llmchat.message")
local schema = require("llmchat.schema")
local history = require("llmchat.conversation.history")
local tools = require("llmchat.conversation.tools")
local budget = require("llmchat.conversation.budget")
local usage = require("llmchat.conversation.usage")
local persist = require("llmchat.conversation.persist")
local loop = require("llmchat.loop")
local apis = require("llmchat.conversation.api")

local M = {}

local deep_copy = message.deep_copy

M.FORMAT_VERSION = persist.FORMAT_VERSION
M.DEFAULT_MAX_TOOL_ROUNDS = 10

-- the estimate, as documented (docs/conversation.md)
M.message_tokens = budget.message_tokens
M.estimate_tokens = budget.estimate_tokens
M.deep_copy = deep_copy
M.history_assistant = message.assistant

local Conversation = {}
Conversation.__index = Conversation
Conversation.__name = "llmchat.conversation"
M.Conversation = Conversation

function Conversation.__tostring(c)
  return ("llmchat.conversation (%d messages)"):format(c._history:len())
end

-- Fields of new{} / say() that belong to the conversation and are never sent.
local OWN = {
  client = true, system = true, system_role = true, tools = true, messages = true,
  max_tool_rounds = true, max_context_tokens = true, on_tool_call = true,
  on_tool_result = true, schema = true, schema_name = true, stream_usage = true,
  usage = true, on_request = true, api = true,
}
M.OWN = OWN

local function check_client(c, api, where, level)
  if type(c) ~= "table" or type(c.chat) ~= "function" then
    error(where .. ": 'client' must be an llmchat client", level)
  end
  if type(c[api.method]) ~= "function" then
    error(("%s: api = \"%s\" needs a client with %s()"):format(where, api.name, api.method), level)
  end
end

--- llmchat.conversation{ client =, api =, model =, system =, tools =, messages =,
--   max_tool_rounds =, max_context_tokens =, on_tool_call =, on_tool_result =,
--   on_request =, ...request fields sent with every call (temperature, tool_choice, ...) }
-- `level`: error()'s level of the caller to blame, as seen from construct's caller.
local function construct(opts, level)
  level = level + 1
  if type(opts) ~= "table" then error("llmchat.conversation: expected a table of options", level) end
  local api = apis.get(opts.api)
  if not api then
    error("llmchat.conversation: 'api' must be \"chat\" or \"responses\", got " .. tostring(opts.api), level)
  end
  check_client(opts.client, api, "llmchat.conversation", level + 1)
  if opts.system ~= nil and type(opts.system) ~= "string" and type(opts.system) ~= "table" then
    error("llmchat.conversation: 'system' must be a string", level)
  end
  for _, k in ipairs{ "max_tool_rounds", "max_context_tokens" } do
    if opts[k] ~= nil and (type(opts[k]) ~= "number" or opts[k] < 0) then
      error("llmchat.conversation: '" .. k .. "' must be a number >= 0", level)
    end
  end
  for _, k in ipairs{ "on_tool_call", "on_tool_result", "on_request" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error("llmchat.conversation: '" .. k .. "' must be a function", level)
    end
  end
  local self = setmetatable({
    client = opts.client, api = api.name, model = opts.model, system = opts.system,
    system_role = opts.system_role or "system",
    max_tool_rounds = opts.max_tool_rounds or M.DEFAULT_MAX_TOOL_ROUNDS,
    max_context_tokens = opts.max_context_tokens,
    on_tool_call = opts.on_tool_call, on_tool_result = opts.on_tool_result,
    on_request = opts.on_request, stream_usage = opts.stream_usage ~= false,
    params = {}, _api = api, _history = history.new(api.restore), _tools = tools.new(), _usage = usage.new(),
  }, Conversation)
  for k, v in pairs(opts) do
    if not OWN[k] and k ~= "model" then self.params[k] = v end
  end
  if opts.messages ~= nil then
    if type(opts.messages) ~= "table" then error("llmchat.conversation: 'messages' must be an array", level) end
    for _, m in ipairs(opts.messages) do
      if not api.is_entry(m) then
        error("llmchat.conversation: each message must be a table with a role", level)
      end
      if m.role == "system" and self.system == nil and self._history:len() == 0 then
        self.system = m.content
      else
        self._history:add(m)
      end
    end
  end
  for _, t in ipairs(opts.tools or {}) do self._tools:add(t, "llmchat.conversation", level) end
  return self
end

function M.new(opts)
  local conv = construct(opts, 2)
  return conv   -- not a tail call: error levels count this frame
end

---------------------------------------------------------------------------
-- tools

--- conv:tool{ name =, description =, parameters = <JSON schema>, strict =,
-- handler = function(args, call) }. Adds a tool, or replaces the one of that
-- name; a spec with only name and handler keeps the old definition.
function Conversation:tool(spec)
  self._tools:add(spec, "conversation:tool", 2)
  return self
end

--- Removes a tool by name; true if there was one.
function Conversation:remove_tool(name)
  return self._tools:remove(name)
end

--- The names of the tools, in the order they are sent.
function Conversation:tools()
  return self._tools:names()
end

---------------------------------------------------------------------------
-- the turn

-- One turn: res, nil, pending | nil, err | nil, nil, nil, raised (an error
-- from the caller's own hook, which say() raises once the turn is abandoned).
local function run_turn(self, input, opts)
  local api = self._api
  local pending = {}
  if input ~= nil then pending[1] = api.user(input) end

  local max_rounds = opts.max_tool_rounds or self.max_tool_rounds
  local limit = opts.max_context_tokens or self.max_context_tokens
  local hooks = { on_tool_call = opts.on_tool_call or self.on_tool_call,
    on_tool_result = opts.on_tool_result or self.on_tool_result }
  local on_request = opts.on_request or self.on_request

  local params = {}
  for k, v in pairs(self.params) do params[k] = v end
  for k, v in pairs(opts) do
    if not OWN[k] then params[k] = v end
  end
  if params.model == nil then params.model = self.model end
  params.tools = api.tools(self._tools)
  -- the answer is decoded here, not by the client, because a tool round's
  -- reply has no content to decode
  local want = { schema = opts.schema, schema_name = opts.schema_name }
  api.structured(params, want)
  want.response_format, want.text = params.response_format, params.text
  local streaming = params.stream == true or params.on_delta ~= nil or params.on_event ~= nil
  if streaming and api.stream_usage and self.stream_usage and params.stream_options == nil then
    params.stream_options = { include_usage = true }  -- usage totals need it
  end

  local head = api.head(self)
  local items = self._history.items
  local rounds = 0
  while true do
    local first = budget.first_kept(head, items, pending, limit, params.tools, api.units)
    api.request(params, self, items, first, pending)
    if on_request then on_request(params) end  -- inspection / logging of every request
    local res, err = self.client[api.method](self.client, params)
    if not res then
      err.messages = pending  -- what the turn had built before it failed
      return nil, err
    end
    usage.add(self._usage, res.usage)
    res.trimmed = first - 1
    local entries, calls = api.answer(res)   -- or nil, err
    if not entries then
      local perr = calls
      perr.messages = pending
      return nil, perr
    end
    for _, e in ipairs(entries) do pending[#pending + 1] = e end
    if not calls then
      res.tool_rounds = rounds
      local ok, derr = schema.decode(res, want)
      if not ok then
        derr.messages = pending
        return nil, derr
      end
      return res, nil, pending
    end
    if rounds >= max_rounds then
      return nil, errors.new({ kind = "max_tool_rounds", partial = res, messages = pending,
        message = ("the model still asked for tools after %d tool rounds (max_tool_rounds = %d)"):format(
          rounds, max_rounds) })
    end
    rounds = rounds + 1
    for _, tc in ipairs(calls) do
      local text, raised = tools.run(self._tools, tc, hooks, self)
      if not text then return nil, nil, nil, raised end
      pending[#pending + 1] = api.tool_result(tc, text)
    end
  end
end

--- conv:say(text | content parts | message | nil, opts) -> res, or nil and err
-- opts: request fields for this call (temperature, ...), stream, on_delta,
-- schema, schema_name, max_tool_rounds, max_context_tokens, on_tool_call,
-- on_tool_result, on_request. nil input asks the model again without a new
-- user message.
function Conversation:say(input, opts)
  if opts ~= nil and type(opts) ~= "table" then error("conversation:say: opts must be a table", 2) end
  -- a turn whose coroutine was killed (llmchat.run cancelled it) never came back
  if self._busy and loop.gone(self._busy) then self._busy = false end
  if self._busy then error("conversation:say: this conversation is already waiting for an answer", 2) end
  opts = opts or {}
  -- misuse raises here, before anything starts
  if input ~= nil then self._api.user(input, 2) end
  if opts.schema ~= nil and type(opts.schema) ~= "table" then
    error("conversation:say: 'schema' must be a table (a JSON schema)", 2)
  end
  if opts.schema_name ~= nil and type(opts.schema_name) ~= "string" then
    error("conversation:say: 'schema_name' must be a string", 2)
  end
  for _, k in ipairs{ "on_tool_call", "on_tool_result", "on_request", "on_delta", "on_event" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error("conversation:say: '" .. k .. "' must be a function", 2)
    end
  end
  if opts.messages ~= nil or opts.tools ~= nil or opts.input ~= nil then
    error("conversation:say: the conversation owns 'messages', 'input' and 'tools' (use conv:append, conv:tool)", 2)
  end
  self._busy = coroutine.running() or true
  -- client calls may yield (inside llmchat.run): the turn runs under loop.pcall, which a
  -- coroutine of ours can yield through on every Lua (5.1 included), so a misuse error
  -- cannot leave the conversation busy. Hook errors come back as `raised` either way.
  local res, err, pending, raised
  local ok, r, e, p, x = loop.pcall(run_turn, self, input, opts)
  if ok then res, err, pending, raised = r, e, p, x else raised = r end
  self._busy = false
  if raised ~= nil then error(raised, 0) end
  if not res then return nil, err end
  self._history:commit(pending)
  self._last = res
  return res
end

---------------------------------------------------------------------------
-- history

--- The messages as the API sees them, copied: system first (chat), or the
-- input items (responses: the system prompt goes as `instructions`).
function Conversation:messages()
  local out = self._history:copy_items()
  if self.system ~= nil and self._api.name == "chat" then
    table.insert(out, 1, { role = self.system_role, content = deep_copy(self.system) })
  end
  return out
end

--- The last message of the history (a copy), usually the assistant's answer, or nil.
-- Second value: the result of the last successful say(), if any.
function Conversation:last()
  return self._history:last(), self._last
end

--- Appends messages (input items with api = "responses") to the history as
-- they are (no call is made).
function Conversation:append(...)
  local api = self._api
  for i = 1, select("#", ...) do
    local m = select(i, ...)
    if not api.is_entry(m) then
      error("conversation:append: expected " .. api.entry_rule, 2)
    end
    self._history:add(m)
  end
  return self
end

--- Drops the last exchange: the last user message and everything after it
-- (tool rounds, the answer). Returns the dropped messages, or nil.
function Conversation:undo()
  local dropped = self._history:undo()
  if dropped then self._last = nil end
  return dropped
end

--- An independent copy: its own history and usage totals, the same client,
-- tools and options. Changing one never changes the other.
function Conversation:fork()
  local c = setmetatable({}, Conversation)
  for k, v in pairs(self) do c[k] = v end
  c._busy = nil
  c._history = self._history:copy()
  c.params = deep_copy(self.params)
  c._usage = deep_copy(self._usage)
  c._tools = self._tools:copy()
  return c
end

--- Forgets the messages, keeps the system prompt, the tools and the usage totals.
function Conversation:clear()
  self._history:clear()
  self._last = nil
  return self
end

--- Estimated prompt tokens of the next request (see llmchat.conversation.budget).
function Conversation:estimate_tokens()
  local list = self._api.head(self)
  for _, m in ipairs(self._history.items) do list[#list + 1] = m end
  return budget.estimate_tokens(list, self._api.tools(self._tools))
end

---------------------------------------------------------------------------
-- usage and cost

--- Totals across every call this conversation made (tool rounds included):
-- prompt_tokens, completion_tokens, total_tokens, cached_tokens,
-- reasoning_tokens, calls, and cost when the provider reported it.
function Conversation:usage()
  return deep_copy(self._usage)
end

--- Dollars spent. prices: dollars per million tokens, { input =, output =,
-- cached_input = (default: input) }. Without prices, the cost the provider
-- reported (OpenRouter's usage.cost), or nil and an error (kind "bad_request").
function Conversation:cost(prices)
  local dollars, err = usage.cost(self._usage, prices, "conversation:cost", 2)
  return dollars, err   -- not a tail call: the misuse error names our caller
end

---------------------------------------------------------------------------
-- persistence

--- The conversation as a JSON-ready table (what save() writes).
function Conversation:to_table()
  return persist.snapshot(self, { max_tool_rounds = M.DEFAULT_MAX_TOOL_ROUNDS })
end

--- Writes the conversation as JSON to path, atomically. Returns true, or nil
-- and an error (kind "io" or "bad_request").
function Conversation:save(path)
  if type(path) ~= "string" or path == "" then error("conversation:save: expected a file path", 2) end
  return persist.save(self:to_table(), path)
end

--- Builds a conversation from a table written by to_table(). client: the
-- client to talk through; opts.tools: handlers to re-attach, either
-- { name = handler } or a list of tool specs; opts.on_tool_call,
-- opts.on_tool_result. Returns the conversation, or nil and an error (kind "format").
function M.from_table(data, client, opts)
  return persist.restore(M.new, data, client, opts)
end

--- llmchat.conversation.load(path, client[, opts]) -> conv, or nil and an
-- error (kind "io" or "format"). Also load(path, { client = c, tools = {...} }).
function M.load(path, client, opts)
  if type(path) ~= "string" then error("conversation.load: expected a file path", 2) end
  if type(client) == "table" and type(client.chat) ~= "function" and client.client then
    opts, client = client, client.client
  end
  if type(client) ~= "table" or type(client.chat) ~= "function" then
    error("conversation.load: 'client' must be an llmchat client", 2)
  end
  local data, err = persist.read(path)
  if data == nil then return nil, err end
  return M.from_table(data, client, opts)
end

setmetatable(M, { __call = function(_, opts)
  local conv = construct(opts, 2)
  return conv
end })

return M
