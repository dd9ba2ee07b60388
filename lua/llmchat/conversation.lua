--- llmchat.conversation: a chat history, the tool-calling loop, persistence,
-- usage and cost, and a context budget. All policy, all Lua: each model call
-- is an ordinary client:chat.
--
--   local conv = llmchat.conversation{ client = client, system = "You are terse." }
--   conv:tool{ name = "roll", description = "Roll dice",
--     parameters = { type = "object", properties = { n = { type = "integer" } } },
--     handler = function(args) return { total = 7 } end }
--   local res, err = conv:say("Roll two dice")
--
-- Rules (see docs/conversation.md):
-- * A turn is atomic. say() builds the new messages of the turn (user message,
--   assistant tool-call messages, tool results, the answer) on the side and
--   appends them to the history only when the turn succeeds. A failed turn
--   leaves the history exactly as it was.
-- * Usage counts what the provider billed: every call that returned a result,
--   tool rounds included, even if a later round of the same turn failed.
-- * Tool trouble (bad JSON arguments, an unknown tool, a handler that raises, a
--   vetoed call) is told to the model as the tool's result ("error: ..."), and
--   the loop goes on. Only the caller's own hooks (on_tool_call) may raise.
local json = require("llmchat.json")
local errors = require("llmchat.errors")
local content = require("llmchat.content")
local client_mod = require("llmchat.client")

local M = {}

local null = json.null
local floor, ceil = math.floor, math.ceil

-- Lua 5.2+ and LuaJIT can yield across pcall; plain Lua 5.1 cannot.
local PCALL_YIELDS = _VERSION ~= "Lua 5.1" or rawget(_G, "jit") ~= nil

M.FORMAT_VERSION = 1
M.DEFAULT_MAX_TOOL_ROUNDS = 10

---------------------------------------------------------------------------
-- small helpers

local function deep_copy(v)
  if type(v) ~= "table" or v == null then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  -- keep json.array / json.object marks, so an empty array stays an array
  local mt = getmetatable(v)
  if mt and mt.__jsontype then setmetatable(t, mt) end
  return t
end
M.deep_copy = deep_copy

local function copy_list(list)
  local out = json.array()
  for i, m in ipairs(list) do out[i] = deep_copy(m) end
  return out
end

local function strip_position(msg)
  -- "file.lua:12: boom" -> "boom": the model needs the reason, not our file names
  return (msg:gsub("^[^\n]-:%d+: ", ""))
end

local function error_text(e)
  if type(e) == "string" then return strip_position(e) end
  if type(e) == "table" and type(e.message) == "string" then return e.message end
  return tostring(e)
end

---------------------------------------------------------------------------
-- messages in the shape the API takes back

-- The assistant message of a result, as it must go back into a history:
-- content (JSON null when the model only called tools), refusal, tool_calls
-- with id / type / function.name / function.arguments kept verbatim, and the
-- few other fields the API accepts on input (name, audio id). Fields a
-- response carries but a request rejects (annotations, reasoning) are left out.
local id_seq = 0
local function history_assistant(msg)
  local m = { role = "assistant" }
  local c = msg.content
  if type(c) == "table" and c ~= null then c = deep_copy(c) end
  if type(c) ~= "string" and type(c) ~= "table" then c = nil end
  local calls = msg.tool_calls
  if type(calls) == "table" and #calls > 0 then
    local out = json.array()
    for i, tc in ipairs(calls) do
      local fn = type(tc["function"]) == "table" and tc["function"] or {}
      local id = tc.id
      if type(id) ~= "string" or id == "" then
        -- some local servers send no ids; the results must still name their call
        id_seq = id_seq + 1
        id = ("call_llmchat_%d_%d"):format(id_seq, i)
      end
      out[i] = { id = id, type = tc.type or "function",
        ["function"] = { name = fn.name, arguments = type(fn.arguments) == "string" and fn.arguments or "" } }
    end
    m.tool_calls = out
    -- a streamed tool-call turn assembles content "" where the plain response
    -- says null: store null either way, so both modes give the same history
    if c == "" then c = nil end
  end
  if c == nil then
    -- null goes with tool calls or a refusal (what OpenAI itself returns); an
    -- answer with nothing at all is kept as "" (Mistral and others reject an
    -- assistant message with neither content nor tool calls)
    if m.tool_calls or type(msg.refusal) == "string" then c = null else c = "" end
  end
  m.content = c
  if type(msg.refusal) == "string" then m.refusal = msg.refusal end
  if type(msg.name) == "string" then m.name = msg.name end
  if type(msg.audio) == "table" and msg.audio.id then m.audio = { id = msg.audio.id } end
  return m
end
M.history_assistant = history_assistant

-- A loaded message back into its in-memory form: json.decode drops object
-- nulls, so an assistant message that only called tools gets its null back.
local function restore_message(m)
  if type(m) ~= "table" then return m end
  if m.role == "assistant" and m.content == nil then m.content = null end
  if type(m.tool_calls) == "table" then setmetatable(m.tool_calls, getmetatable(json.array())) end
  return m
end

-- say()'s input -> a user message
local function user_message(input)
  local t = type(input)
  if t == "string" then return { role = "user", content = input } end
  if t == "table" then
    if input.role then return deep_copy(input) end            -- a whole message
    if input.type then return { role = "user", content = json.array{ deep_copy(input) } } end  -- one part
    local parts = json.array()
    for i, p in ipairs(input) do
      if type(p) == "string" then p = content.text(p) end
      if type(p) ~= "table" then
        error(("conversation:say: content part %d is a %s"):format(i, type(p)), 3)
      end
      parts[i] = deep_copy(p)
    end
    if #parts == 0 then error("conversation:say: empty list of content parts", 3) end
    return { role = "user", content = parts }
  end
  error("conversation:say: expected a string, content parts or a message, got " .. t, 3)
end

---------------------------------------------------------------------------
-- the token estimate (documented in docs/conversation.md)
--
-- No tokenizer ships with llmchat, so the budget uses the rule of thumb the
-- OpenAI docs give for English, about 4 bytes of UTF-8 per token, plus the
-- per-message framing the chat format adds:
--   message  = 4 + ceil(bytes / 4)   bytes: text content, refusal, name,
--                                    tool_call_id, each tool call's id, name
--                                    and arguments
--   image    = 85 tokens with detail "low", else 765 (one 1024x1024 tile set)
--   other part (audio, file) = ceil(bytes of its JSON / 4)
--   request  = 3 + sum(messages) + ceil(bytes of the tools' JSON / 4)
-- It errs a little high for English, low for dense scripts: set the budget
-- with a margin under the model's real context window.

local function part_tokens(p)
  if type(p) ~= "table" then return 0 end
  if p.type == "text" then return 0, #(type(p.text) == "string" and p.text or "") end
  if p.type == "image_url" then
    local iu = type(p.image_url) == "table" and p.image_url or {}
    return iu.detail == "low" and 85 or 765, 0
  end
  local s = json.encode(p) or ""
  return ceil(#s / 4), 0
end

local function message_tokens(m)
  local bytes, extra = 0, 0
  local c = m.content
  if type(c) == "string" then bytes = bytes + #c
  elseif type(c) == "table" and c ~= null then
    for _, p in ipairs(c) do
      local t, b = part_tokens(p)
      extra, bytes = extra + t, bytes + b
    end
  end
  if type(m.refusal) == "string" then bytes = bytes + #m.refusal end
  if type(m.name) == "string" then bytes = bytes + #m.name end
  if type(m.tool_call_id) == "string" then bytes = bytes + #m.tool_call_id end
  if type(m.tool_calls) == "table" then
    for _, tc in ipairs(m.tool_calls) do
      local fn = type(tc["function"]) == "table" and tc["function"] or {}
      bytes = bytes + #tostring(tc.id or "") + #tostring(fn.name or "") + #tostring(fn.arguments or "")
    end
  end
  return 4 + ceil(bytes / 4) + extra
end
M.message_tokens = message_tokens

--- Estimated prompt tokens of a request: messages (array), tools (API shape, optional).
function M.estimate_tokens(messages, tools)
  local n = 3
  for _, m in ipairs(messages or {}) do n = n + message_tokens(m) end
  if tools and #tools > 0 then n = n + ceil(#(json.encode(tools) or "") / 4) end
  return n
end

-- The history cut into units that can be dropped: one message each, except
-- that an assistant message with tool_calls and the tool results after it
-- form one unit (a tool result without its call is rejected by the API).
local function drop_units(history)
  local units, i, n = {}, 1, #history
  while i <= n do
    local j = i
    local m = history[i]
    if m.role == "assistant" and type(m.tool_calls) == "table" and #m.tool_calls > 0 then
      while j + 1 <= n and history[j + 1].role == "tool" do j = j + 1 end
    end
    units[#units + 1] = { first = i, last = j }
    i = j + 1
  end
  return units
end

-- The messages to send: system + as much recent history as fits the budget +
-- the whole current turn (never trimmed). Returns the list and the number of
-- history messages left out.
local function request_messages(self, pending, budget, tools)
  local head = {}
  if self.system ~= nil then head[1] = { role = self.system_role, content = self.system } end
  local history = self._messages
  local start = 1
  if budget then
    local fixed = M.estimate_tokens(head, tools)
    for _, m in ipairs(pending) do fixed = fixed + message_tokens(m) end
    local total = fixed
    for _, m in ipairs(history) do total = total + message_tokens(m) end
    if total > budget then
      for _, u in ipairs(drop_units(history)) do
        if total <= budget then break end
        for k = u.first, u.last do total = total - message_tokens(history[k]) end
        start = u.last + 1
      end
    end
  end
  local out = json.array()
  for _, m in ipairs(head) do out[#out + 1] = m end
  for k = start, #history do out[#out + 1] = history[k] end
  for _, m in ipairs(pending) do out[#out + 1] = m end
  return out, start - 1
end

---------------------------------------------------------------------------
-- usage

local function new_usage()
  return { prompt_tokens = 0, completion_tokens = 0, total_tokens = 0, cached_tokens = 0,
    reasoning_tokens = 0, calls = 0 }
end

local function num(v) return type(v) == "number" and v or 0 end

local function add_usage(total, u)
  total.calls = total.calls + 1
  if type(u) ~= "table" then return end
  local p, c = num(u.prompt_tokens), num(u.completion_tokens)
  total.prompt_tokens = total.prompt_tokens + p
  total.completion_tokens = total.completion_tokens + c
  total.total_tokens = total.total_tokens + (type(u.total_tokens) == "number" and u.total_tokens or p + c)
  local pd, cd = u.prompt_tokens_details, u.completion_tokens_details
  if type(pd) == "table" then total.cached_tokens = total.cached_tokens + num(pd.cached_tokens)
  elseif type(u.prompt_cache_hit_tokens) == "number" then  -- DeepSeek's name
    total.cached_tokens = total.cached_tokens + u.prompt_cache_hit_tokens
  end
  if type(cd) == "table" then total.reasoning_tokens = total.reasoning_tokens + num(cd.reasoning_tokens) end
  -- OpenRouter reports what the call cost, in dollars (credits)
  if type(u.cost) == "number" then total.cost = (total.cost or 0) + u.cost end
end

---------------------------------------------------------------------------
-- the conversation object

local Conversation = {}
Conversation.__index = Conversation
Conversation.__name = "llmchat.conversation"
M.Conversation = Conversation

function Conversation.__tostring(c)
  return ("llmchat.conversation (%d messages)"):format(#c._messages)
end

-- Fields of new{} / say() that belong to the conversation and are never sent.
local OWN = {
  client = true, system = true, system_role = true, tools = true, messages = true,
  max_tool_rounds = true, max_context_tokens = true, on_tool_call = true,
  on_tool_result = true, schema = true, schema_name = true, stream_usage = true,
  usage = true, on_request = true,
}
M.OWN = OWN

local function check_client(c, where)
  if type(c) ~= "table" or type(c.chat) ~= "function" then
    error(where .. ": 'client' must be an llmchat client", 3)
  end
end

local function normalize_tool(spec, where)
  if type(spec) ~= "table" then error(where .. ": expected a table", 3) end
  -- also accept the API's own shape { type = "function", ["function"] = {...} }
  local fn = spec.type == "function" and type(spec["function"]) == "table" and spec["function"] or spec
  local name = fn.name
  if type(name) ~= "string" or not name:find("^[%w_%-]+$") or #name > 64 then
    error(where .. ": tool name must be 1-64 letters, digits, _ or -", 3)
  end
  local handler = spec.handler or fn.handler
  if handler ~= nil and type(handler) ~= "function" then
    error(where .. ": handler of tool '" .. name .. "' must be a function", 3)
  end
  if fn.description ~= nil and type(fn.description) ~= "string" then
    error(where .. ": description of tool '" .. name .. "' must be a string", 3)
  end
  if fn.parameters ~= nil and type(fn.parameters) ~= "table" then
    error(where .. ": parameters of tool '" .. name .. "' must be a table (a JSON schema)", 3)
  end
  return { name = name, description = fn.description, parameters = fn.parameters,
    strict = fn.strict, handler = handler }
end

--- llmchat.conversation{ client =, model =, system =, tools =, messages =,
--   max_tool_rounds =, max_context_tokens =, on_tool_call =, on_tool_result =,
--   ...request fields sent with every call (temperature, tool_choice, ...) }
function M.new(opts)
  if type(opts) ~= "table" then error("llmchat.conversation: expected a table of options", 2) end
  check_client(opts.client, "llmchat.conversation")
  if opts.system ~= nil and type(opts.system) ~= "string" and type(opts.system) ~= "table" then
    error("llmchat.conversation: 'system' must be a string", 2)
  end
  for _, k in ipairs{ "max_tool_rounds", "max_context_tokens" } do
    if opts[k] ~= nil and (type(opts[k]) ~= "number" or opts[k] < 0) then
      error("llmchat.conversation: '" .. k .. "' must be a number >= 0", 2)
    end
  end
  for _, k in ipairs{ "on_tool_call", "on_tool_result", "on_request" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error("llmchat.conversation: '" .. k .. "' must be a function", 2)
    end
  end
  local self = setmetatable({
    client = opts.client, model = opts.model, system = opts.system,
    system_role = opts.system_role or "system",
    max_tool_rounds = opts.max_tool_rounds or M.DEFAULT_MAX_TOOL_ROUNDS,
    max_context_tokens = opts.max_context_tokens,
    on_tool_call = opts.on_tool_call, on_tool_result = opts.on_tool_result,
    on_request = opts.on_request, stream_usage = opts.stream_usage ~= false,
    params = {}, _messages = {}, _tools = {}, _tool_index = {}, _usage = new_usage(),
  }, Conversation)
  for k, v in pairs(opts) do
    if not OWN[k] and k ~= "model" then self.params[k] = v end
  end
  if opts.messages ~= nil then
    if type(opts.messages) ~= "table" then error("llmchat.conversation: 'messages' must be an array", 2) end
    for _, m in ipairs(opts.messages) do
      if type(m) ~= "table" or type(m.role) ~= "string" then
        error("llmchat.conversation: each message must be a table with a role", 2)
      end
      if m.role == "system" and self.system == nil and #self._messages == 0 then
        self.system = m.content
      else
        self._messages[#self._messages + 1] = restore_message(deep_copy(m))
      end
    end
  end
  for _, t in ipairs(opts.tools or {}) do self:tool(t) end
  return self
end

--- conv:tool{ name =, description =, parameters = <JSON schema>, handler = function(args, call) }
-- Adds a tool, or replaces the one of that name. A spec with only name and
-- handler re-attaches a handler to a tool definition restored by load().
function Conversation:tool(spec)
  local t = normalize_tool(spec, "conversation:tool")
  local old = self._tool_index[t.name]
  if old then
    if t.description == nil then t.description = old.description end
    if t.parameters == nil then t.parameters = old.parameters end
    if t.strict == nil then t.strict = old.strict end
    for i, x in ipairs(self._tools) do
      if x == old then self._tools[i] = t end
    end
  else
    self._tools[#self._tools + 1] = t
  end
  self._tool_index[t.name] = t
  return self
end

--- Removes a tool by name; true if there was one.
function Conversation:remove_tool(name)
  local old = self._tool_index[name]
  if not old then return false end
  self._tool_index[name] = nil
  for i, x in ipairs(self._tools) do
    if x == old then table.remove(self._tools, i) break end
  end
  return true
end

--- The names of the tools, in the order they are sent.
function Conversation:tools()
  local out = {}
  for i, t in ipairs(self._tools) do out[i] = t.name end
  return out
end

-- The tools as the API takes them.
local function api_tools(self)
  if #self._tools == 0 then return nil end
  local out = json.array()
  for i, t in ipairs(self._tools) do
    out[i] = { type = "function", ["function"] = { name = t.name, description = t.description,
      parameters = t.parameters, strict = t.strict } }
  end
  return out
end

---------------------------------------------------------------------------
-- running tool calls

-- The content of one tool message, for one tool call of the model.
local function run_tool_call(self, tc, hook, on_result)
  local fn = type(tc["function"]) == "table" and tc["function"] or {}
  local name, raw = fn.name, fn.arguments
  local call = { id = tc.id, name = name, arguments = raw or "", conversation = self }
  local text
  local tool = type(name) == "string" and self._tool_index[name] or nil
  local args, derr
  if raw == nil or raw == "" then raw, args = nil, {}  -- some providers send "" for no arguments
  else args, derr = json.decode(raw) end
  call.args = args

  if not tool then
    text = ("error: unknown tool '%s'"):format(tostring(name))
  elseif derr or type(args) ~= "table" or (raw and not raw:find("^%s*{")) then
    text = "error: the arguments are not a valid JSON object: "
      .. tostring(derr or (raw and raw:find("^%s*%[") and "got an array") or ("got a JSON " .. type(args)))
    call.args = nil
  elseif not tool.handler then
    text = ("error: tool '%s' has no handler attached"):format(name)
  else
    local approved, reason = true, nil
    if hook then
      local ok, a, r = pcall(hook, call)
      if not ok then return nil, a end   -- the caller's bug: say() raises it
      approved, reason = a, r
    end
    -- only an explicit true runs the tool: a hook that forgets to answer refuses
    if approved ~= true then
      if reason == nil and approved == nil then reason = "on_tool_call gave no answer" end
      text = "error: the call was refused" .. (reason ~= nil and (": " .. tostring(reason)) or "")
    else
      local ok, r, rerr = pcall(tool.handler, args, call)
      if not ok then
        text = "error: " .. error_text(r)
      elseif r == nil and rerr ~= nil then          -- the Lua idiom: nil, message
        text = "error: " .. error_text(rerr)
      elseif type(r) == "string" then
        text = r
      elseif type(r) == "table" then
        local eok, s, eerr = pcall(json.encode, r)
        if eok and s then text = s
        else text = "error: the tool's result could not be encoded as JSON: " .. error_text(eok and eerr or s) end
      elseif r == nil then
        text = "null"
      else
        text = tostring(r)                          -- numbers and booleans are JSON already
      end
    end
  end
  if on_result then
    local ok, e = pcall(on_result, call, text)
    if not ok then return nil, e end
  end
  return { role = "tool", tool_call_id = tc.id, content = text }
end

---------------------------------------------------------------------------
-- say

local function schema_format(schema, name)
  return { type = "json_schema", json_schema = { name = name or "response", schema = schema, strict = true } }
end

-- One turn: res, nil, pending | nil, err | nil, nil, nil, raised (an error
-- from the caller's own hook, which say() raises once the turn is abandoned).
local function run_turn(self, input, opts)
  local pending = {}
  if input ~= nil then pending[1] = user_message(input) end

  local max_rounds = opts.max_tool_rounds or self.max_tool_rounds
  local budget = opts.max_context_tokens or self.max_context_tokens
  local hook = opts.on_tool_call or self.on_tool_call
  local on_result = opts.on_tool_result or self.on_tool_result
  local on_request = opts.on_request or self.on_request
  local schema = opts.schema

  local params = {}
  for k, v in pairs(self.params) do params[k] = v end
  for k, v in pairs(opts) do
    if not OWN[k] then params[k] = v end
  end
  if params.model == nil then params.model = self.model end
  params.tools = api_tools(self)
  if schema ~= nil and params.response_format == nil then
    -- the schema is decoded here, not by client:chat, because a tool round's
    -- reply has no content to decode
    params.response_format = schema_format(schema, opts.schema_name)
  end
  local streaming = params.stream == true or params.on_delta ~= nil
  if streaming and self.stream_usage and params.stream_options == nil then
    params.stream_options = { include_usage = true }  -- usage totals need it
  end

  local rounds = 0
  while true do
    local msgs, dropped = request_messages(self, pending, budget, params.tools)
    params.messages = msgs
    if on_request then on_request(params) end  -- inspection / logging of every request
    local res, err = self.client:chat(params)
    if not res then
      err.messages = pending  -- what the turn had built before it failed
      return nil, err
    end
    add_usage(self._usage, res.usage)
    res.trimmed = dropped
    if type(res.message) ~= "table" then
      return nil, errors.new({ kind = "protocol", status = res.status, headers = res.headers,
        message = "the response has no choices (no assistant message)", partial = res,
        messages = pending })
    end
    local msg = history_assistant(res.message)
    pending[#pending + 1] = msg
    local calls = msg.tool_calls
    if not calls then
      res.tool_rounds = rounds
      if schema ~= nil then
        local data, derr = json.decode(type(res.content) == "string" and res.content or "")
        if data == nil then
          return nil, errors.new({ kind = "protocol", status = res.status, headers = res.headers,
            message = "the answer is not the JSON the schema asks for: " .. tostring(derr),
            body = res.content, raw = res.content, refusal = res.refusal, partial = res,
            messages = pending })
        end
        res.data = data
      elseif type(params.response_format) == "table" and type(res.content) == "string"
          and (params.response_format.type == "json_object" or params.response_format.type == "json_schema") then
        res.data = json.decode(res.content)
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
      local tool_msg, raised = run_tool_call(self, tc, hook, on_result)
      if not tool_msg then return nil, nil, nil, raised end
      pending[#pending + 1] = tool_msg
    end
  end
end

--- conv:say(text | content parts | message | nil, opts) -> res, or nil and err
-- opts: request fields for this call (temperature, ...), stream, on_delta,
-- schema, schema_name, max_tool_rounds, max_context_tokens, on_tool_call,
-- on_tool_result. nil input asks the model again without a new user message.
function Conversation:say(input, opts)
  if opts ~= nil and type(opts) ~= "table" then error("conversation:say: opts must be a table", 2) end
  if self._busy then error("conversation:say: this conversation is already waiting for an answer", 2) end
  opts = opts or {}
  -- misuse raises here, before anything starts
  if input ~= nil then user_message(input) end
  if opts.schema ~= nil and type(opts.schema) ~= "table" then
    error("conversation:say: 'schema' must be a table (a JSON schema)", 2)
  end
  for _, k in ipairs{ "on_tool_call", "on_tool_result", "on_request", "on_delta" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error("conversation:say: '" .. k .. "' must be a function", 2)
    end
  end
  if opts.messages ~= nil or opts.tools ~= nil then
    error("conversation:say: the conversation owns 'messages' and 'tools' (use conv:append, conv:tool)", 2)
  end
  self._busy = true
  -- client:chat may yield (inside llmchat.run): the turn runs under pcall (so a
  -- misuse error cannot leave the conversation busy) except in a plain Lua 5.1
  -- coroutine, which cannot yield across pcall. Hook errors come back as
  -- `raised` either way.
  local res, err, pending, raised
  if PCALL_YIELDS or not coroutine.running() then   -- 5.1's main thread never yields
    local ok, r, e, p, x = pcall(run_turn, self, input, opts)
    if ok then res, err, pending, raised = r, e, p, x else raised = r end
  else
    res, err, pending, raised = run_turn(self, input, opts)
  end
  self._busy = false
  if raised ~= nil then error(raised, 0) end
  if not res then return nil, err end
  for _, m in ipairs(pending) do self._messages[#self._messages + 1] = m end
  self._last = res
  return res
end

---------------------------------------------------------------------------
-- history helpers

--- The messages as the API sees them (system first), copied.
function Conversation:messages()
  local out = json.array()
  if self.system ~= nil then out[1] = { role = self.system_role, content = deep_copy(self.system) } end
  for _, m in ipairs(self._messages) do out[#out + 1] = deep_copy(m) end
  return out
end

--- The last message of the history (a copy), usually the assistant's answer, or nil.
-- Second value: the result of the last successful say(), if any.
function Conversation:last()
  local m = self._messages[#self._messages]
  return m and deep_copy(m), self._last
end

--- Appends messages to the history as they are (no call is made).
function Conversation:append(...)
  for i = 1, select("#", ...) do
    local m = select(i, ...)
    if type(m) ~= "table" or type(m.role) ~= "string" then
      error("conversation:append: expected messages with a role", 2)
    end
    self._messages[#self._messages + 1] = restore_message(deep_copy(m))
  end
  return self
end

--- Drops the last exchange: the last user message and everything after it
-- (tool rounds, the answer). Returns the dropped messages, or nil.
function Conversation:undo()
  local msgs = self._messages
  for i = #msgs, 1, -1 do
    if msgs[i].role == "user" then
      local dropped = {}
      for k = i, #msgs do dropped[#dropped + 1] = msgs[k] end
      for k = #msgs, i, -1 do msgs[k] = nil end
      self._last = nil
      return dropped
    end
  end
  return nil
end

--- An independent copy: its own history and usage totals, the same client,
-- tools and options. Changing one never changes the other.
function Conversation:fork()
  local c = setmetatable({}, Conversation)
  for k, v in pairs(self) do c[k] = v end
  c._busy = nil
  c._messages = copy_list(self._messages)
  c.params = deep_copy(self.params)
  c._usage = deep_copy(self._usage)
  c._tools, c._tool_index = {}, {}
  for i, t in ipairs(self._tools) do
    local nt = deep_copy(t)
    c._tools[i] = nt
    c._tool_index[nt.name] = nt
  end
  return c
end

--- Forgets the messages, keeps the system prompt, the tools and the usage totals.
function Conversation:clear()
  self._messages = {}
  self._last = nil
  return self
end

--- Estimated prompt tokens of the next request (see the token estimate above).
function Conversation:estimate_tokens()
  return M.estimate_tokens(self:messages(), api_tools(self))
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
-- reported (OpenRouter's usage.cost), or nil and a message.
function Conversation:cost(prices)
  local u = self._usage
  if prices == nil then
    if u.cost then return u.cost end
    return nil, "the provider reported no cost: pass prices, e.g. conv:cost{ input = 2.5, output = 10 }"
  end
  if type(prices) ~= "table" or type(prices.input) ~= "number" or type(prices.output) ~= "number" then
    error("conversation:cost: expected { input = <$ per 1M tokens>, output = <$ per 1M tokens> }", 2)
  end
  local cached_price = prices.cached_input
  if cached_price == nil then
    return (u.prompt_tokens * prices.input + u.completion_tokens * prices.output) / 1e6
  end
  if type(cached_price) ~= "number" then error("conversation:cost: cached_input must be a number", 2) end
  local cached = math.min(u.cached_tokens, u.prompt_tokens)
  return ((u.prompt_tokens - cached) * prices.input + cached * cached_price
    + u.completion_tokens * prices.output) / 1e6
end

---------------------------------------------------------------------------
-- persistence

local function random_suffix()
  local addr = tostring({}):match("0x(%x+)") or tostring({}):match("(%x+)$") or "0"
  return ("%d-%s-%d"):format(os.time(), addr, floor(math.random() * 1e9))
end

--- The conversation as a JSON-ready table (what save() writes).
function Conversation:to_table()
  local tools = json.array()
  for i, t in ipairs(self._tools) do
    tools[i] = { name = t.name, description = t.description, parameters = t.parameters, strict = t.strict }
  end
  -- only request body fields are saved: not callbacks, and not llmchat's own
  -- per-call options (headers may carry credentials)
  local params
  for k, v in pairs(self.params) do
    if not client_mod.OWN[k] and type(v) ~= "function" then
      params = params or {}
      params[k] = v
    end
  end
  return {
    version = M.FORMAT_VERSION, model = self.model, system = self.system,
    system_role = self.system_role ~= "system" and self.system_role or nil,
    messages = copy_list(self._messages), tools = tools, usage = self._usage,
    max_tool_rounds = self.max_tool_rounds ~= M.DEFAULT_MAX_TOOL_ROUNDS and self.max_tool_rounds or nil,
    max_context_tokens = self.max_context_tokens, params = params,
  }
end

--- Writes the conversation as JSON to path, atomically: a temporary file in
-- the same directory, then a rename over path, so a crash leaves either the
-- old file or the new one, never half of one. Returns true, or nil and a message.
function Conversation:save(path)
  if type(path) ~= "string" or path == "" then error("conversation:save: expected a file path", 2) end
  local ok, text, eerr = pcall(json.encode, self:to_table())
  if not ok then return nil, "cannot encode the conversation: " .. error_text(text) end
  if not text then return nil, "cannot encode the conversation: " .. tostring(eerr) end
  local tmp = path .. ".tmp-" .. random_suffix()
  local f, oerr = io.open(tmp, "wb")
  if not f then return nil, "cannot save: " .. tostring(oerr) end
  local wok, werr = f:write(text, "\n")
  if wok then wok, werr = f:flush() end
  local cok, cerr = f:close()
  if not wok or not cok then
    os.remove(tmp)
    return nil, "cannot save " .. path .. ": " .. tostring(werr or cerr)
  end
  local rok = os.rename(tmp, path)
  if not rok then
    local rerr
    -- Windows will not rename over an existing file: replace it (not atomic there)
    os.remove(path)
    rok, rerr = os.rename(tmp, path)
    if not rok then
      os.remove(tmp)
      return nil, "cannot save " .. path .. ": " .. tostring(rerr)
    end
  end
  return true
end

--- Builds a conversation from a table written by to_table().
-- client: the client to talk through; opts.tools: handlers to re-attach,
-- either { name = handler } or a list of tool specs (which replace the saved
-- definitions of the same name).
function M.from_table(data, client, opts)
  if type(data) ~= "table" then return nil, "not a saved conversation (expected a JSON object)" end
  if data.version ~= M.FORMAT_VERSION then
    return nil, "unsupported conversation file version " .. tostring(data.version)
  end
  if type(data.messages) ~= "table" then return nil, "not a saved conversation (no messages array)" end
  opts = opts or {}
  local conv = M.new({ client = client, model = data.model, system = data.system,
    system_role = data.system_role, max_tool_rounds = data.max_tool_rounds,
    max_context_tokens = data.max_context_tokens,
    on_tool_call = opts.on_tool_call, on_tool_result = opts.on_tool_result })
  for k, v in pairs(type(data.params) == "table" and data.params or {}) do conv.params[k] = v end
  for _, m in ipairs(data.messages) do conv._messages[#conv._messages + 1] = restore_message(m) end
  for _, t in ipairs(type(data.tools) == "table" and data.tools or {}) do
    if type(t) == "table" and type(t.name) == "string" then
      conv:tool({ name = t.name, description = t.description, parameters = t.parameters, strict = t.strict })
    end
  end
  local handlers = opts.tools or {}
  if #handlers > 0 then
    for _, spec in ipairs(handlers) do conv:tool(spec) end
  else
    for name, fn in pairs(handlers) do conv:tool({ name = name, handler = fn }) end
  end
  if type(data.usage) == "table" then
    for k, v in pairs(data.usage) do
      if type(v) == "number" then conv._usage[k] = v end
    end
  end
  return conv
end

--- llmchat.conversation.load(path, client[, opts]) -> conv, or nil and a message.
-- Also load(path, { client = c, tools = {...} }).
function M.load(path, client, opts)
  if type(path) ~= "string" then error("conversation.load: expected a file path", 2) end
  if type(client) == "table" and type(client.chat) ~= "function" and client.client then
    opts, client = client, client.client
  end
  check_client(client, "conversation.load")
  local f, oerr = io.open(path, "rb")
  if not f then return nil, "cannot open conversation: " .. tostring(oerr) end
  local text = f:read("*a")
  f:close()
  local data, derr = json.decode(text or "")
  if data == nil then return nil, "cannot load " .. path .. ": " .. tostring(derr) end
  return M.from_table(data, client, opts)
end

setmetatable(M, { __call = function(_, opts) return M.new(opts) end })

return M
